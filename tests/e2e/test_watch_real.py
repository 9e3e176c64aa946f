"""Smoke tests of healer's own client, watcher and elector against the real kube-apiserver.

The fake API in tests/api proves behaviour under faults; these prove the same code speaks the
real server's dialect: kubeconfig auth and TLS through kubernetes-asyncio, list with
resourceVersion=0 and pagination, field selectors, bookmarks, watch expiry and resume, and
Lease writes with MicroTime and resourceVersion preconditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from healer.kube import api as kube_api
from healer.kube import client, errors
from healer.model import events
from healer.runtime import leader
from healer.watch import resources
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.e2e


@pytest.fixture
async def kube_api_client(control_plane: ControlPlane) -> AsyncIterator[client.Kube]:
    async with client.connect(kubeconfig=control_plane.kubeconfig, qps=50, burst=50) as kube:
        yield kube


async def wait_for(predicate: Callable[[], Any], *, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.05)


def node_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"healer.test/smoke": "1"}},
    }


async def test_watch_sees_a_node_created_modified_and_deleted(kube_api_client: client.Kube) -> None:
    kube = kube_api_client
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    seen: list[events.Event] = []
    restarts: list[str] = []
    mine: list[events.NodeEvent] = []

    async def consume(field_selector: str | None, sink: list[Any]) -> None:
        async for event in resources.watch(
            kube,
            kind="Node",
            field_selector=field_selector,
            timeout_seconds=3,  # expire quickly: the resume from resourceVersion is exercised too
            on_restart=lambda _resource, why: restarts.append(why),
        ):
            sink.append(event)

    everything = asyncio.create_task(consume(None, seen))
    selected = asyncio.create_task(consume(resources.node_selector(name), mine))
    try:
        await wait_for(lambda: any(isinstance(e, events.Listed) for e in seen), within=20, what="Listed")
        await wait_for(
            lambda: any(isinstance(e, events.Listed) for e in mine), within=20, what="Listed (selector)"
        )
        await kube.request("POST", "/api/v1/nodes", body=node_body(name))

        def changes(sink: list[Any]) -> list[str]:
            return [e.change.value for e in sink if isinstance(e, events.NodeEvent) and e.node.name == name]

        await wait_for(lambda: "ADDED" in changes(seen), within=20, what="ADDED")
        await asyncio.sleep(0)
        await wait_for(lambda: "expired" in restarts, within=20, what="a watch to expire and resume")
        await kube.request(
            "PATCH",
            f"/api/v1/nodes/{name}",
            body={"metadata": {"labels": {"healer.test/touched": "yes"}}},
            content_type=kube_api.MERGE_PATCH,
        )
        await wait_for(
            lambda: any(
                isinstance(e, events.NodeEvent)
                and e.node.name == name
                and e.node.labels.get("healer.test/touched") == "yes"
                for e in seen
            ),
            within=20,
            what="MODIFIED with the label",
        )
        await kube.request("DELETE", f"/api/v1/nodes/{name}")
        await wait_for(lambda: "DELETED" in changes(seen), within=20, what="DELETED")
        await wait_for(lambda: "DELETED" in changes(mine), within=20, what="DELETED (selector)")
        assert changes(seen)[0] == "ADDED"
        assert changes(seen)[-1] == "DELETED"
        assert "MODIFIED" in changes(seen)
        assert {e.node.name for e in mine if isinstance(e, events.NodeEvent)} == {name}
        assert not any(isinstance(e, events.Disconnected) for e in seen + mine)
        assert sum(isinstance(e, events.Listed) for e in seen) == 1  # resumed, never relisted
    finally:
        for task in (everything, selected):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(errors.NotFound):
            await kube.request("DELETE", f"/api/v1/nodes/{name}")


async def test_real_error_mapping(kube_api_client: client.Kube) -> None:
    kube = kube_api_client
    with pytest.raises(errors.NotFound) as missing:
        await kube.request("GET", "/api/v1/nodes/no-such-node-here")
    assert missing.value.reason == "NotFound"
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    created = await kube.request("POST", "/api/v1/nodes", body=node_body(name))
    try:
        with pytest.raises(errors.Conflict) as exists:
            await kube.request("POST", "/api/v1/nodes", body=node_body(name))
        assert exists.value.reason == "AlreadyExists"
        stale = dict(created, metadata=dict(created["metadata"], resourceVersion="1"))
        with pytest.raises(errors.Conflict):
            await kube.request("PUT", f"/api/v1/nodes/{name}", body=stale)
        with pytest.raises(errors.Conflict):  # uid precondition, as force-delete uses it
            await kube.request(
                "DELETE", f"/api/v1/nodes/{name}", body={"preconditions": {"uid": str(uuid.uuid4())}}
            )
        with pytest.raises(errors.Invalid):
            await kube.request(
                "POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node", "metadata": {}}
            )
    finally:
        await kube.request("DELETE", f"/api/v1/nodes/{name}")


async def test_leader_election_on_a_real_lease(control_plane: ControlPlane) -> None:
    timings = leader.Timings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)
    name = f"smoke-leader-{uuid.uuid4().hex[:6]}"
    async with (
        client.connect(kubeconfig=control_plane.kubeconfig) as one,
        client.connect(kubeconfig=control_plane.kubeconfig) as two,
    ):
        a = leader.LeaseElector(one, namespace="default", name=name, identity="tethys", timings=timings)
        b = leader.LeaseElector(two, namespace="default", name=name, identity="calypso", timings=timings)
        run_a = asyncio.create_task(a.run())
        await wait_for(a.is_leader.is_set, within=10, what="a leads")
        run_b = asyncio.create_task(b.run())
        await wait_for(lambda: b.holder == "tethys", within=10, what="b sees a")
        loop = asyncio.get_running_loop()
        end = loop.time() + timings.lease_duration + 1
        while loop.time() < end:  # b never takes a live lease
            assert a.is_leader.is_set()
            assert not b.is_leader.is_set()
            await asyncio.sleep(0.1)
        lease = await one.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}")
        assert lease["spec"]["holderIdentity"] == "tethys"
        assert lease["spec"]["renewTime"].endswith("Z")
        assert "." in lease["spec"]["renewTime"]
        run_a.cancel()  # shutdown: releases
        with contextlib.suppress(asyncio.CancelledError):
            await run_a
        assert not a.is_leader.is_set()
        await wait_for(b.is_leader.is_set, within=timings.retry_period * 3 + 1, what="b leads after release")
        lease = await two.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}")
        assert lease["spec"]["holderIdentity"] == "calypso"
        assert lease["spec"]["leaseTransitions"] == 1
        run_b.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run_b
        await one.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}")
