"""`healer.watch.resources.watch` against the fake API over real HTTP, with faults injected.

Each test states what a consumer can rely on: the events it applies end up equal to the
server's objects (nothing lost, nothing duplicated, no ghosts) whatever the API did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from healer.kube import client, retry
from healer.model import events
from healer.watch import resources
from tests.api import fakeapi
from tests.api.watching import Recorder, server_store

FAST = retry.Backoff(base=0.02, cap=0.1)


@pytest.fixture
async def start(kube: client.Kube) -> AsyncIterator[Callable[..., Recorder]]:
    recorders: list[Recorder] = []

    def _start(**kwargs: Any) -> Recorder:
        kwargs.setdefault("kind", "Node")
        kwargs.setdefault("backoff", FAST)
        recorder = Recorder.__new__(Recorder)
        source = resources.watch(kube, on_restart=lambda r, why: recorder.on_restart(r, why), **kwargs)
        Recorder.__init__(recorder, source)
        recorders.append(recorder)
        return recorder

    yield _start
    for recorder in recorders:
        await recorder.close()


def watches(fake: fakeapi.FakeApi) -> list[dict[str, str]]:
    return [r.query for r in fake.requests if r.method == "GET" and r.query.get("watch") == "true"]


def lists(fake: fakeapi.FakeApi) -> list[dict[str, str]]:
    return [r.query for r in fake.requests if r.method == "GET" and "watch" not in r.query]


def listed(rec: Recorder, n: int = 1) -> Callable[[], bool]:
    return lambda: rec.count(events.Listed) >= n


async def test_list_then_watch_delivers_every_change(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.put("nodes", fakeapi.node("tethys"))
    fake.put("nodes", fakeapi.node("styx"))
    rec = start(timeout_seconds=30)
    await rec.until(listed(rec), what="Listed")
    assert rec.changes() == [("ADDED", "styx"), ("ADDED", "tethys")]
    assert rec.events[2] == events.Listed(resource="nodes")
    assert lists(fake)[0]["resourceVersion"] == "0"  # start-up list from the watch cache

    fake.put("nodes", fakeapi.node("calypso"))
    fake.put("nodes", fakeapi.node("styx", ready="Unknown"))
    fake.remove("nodes", ("", "tethys"))
    await rec.until(lambda: len(rec.changes()) == 5, what="3 watch events")
    assert rec.changes()[2:] == [("ADDED", "calypso"), ("MODIFIED", "styx"), ("DELETED", "tethys")]
    modified = rec.events[4]
    assert isinstance(modified, events.NodeEvent)
    assert modified.node.conditions[0].status == "Unknown"
    deleted = rec.events[5]
    assert isinstance(deleted, events.NodeEvent)
    assert deleted.node.name == "tethys"
    watch = watches(fake)[0]
    assert watch["allowWatchBookmarks"] == "true"
    assert watch["timeoutSeconds"] == "30"
    assert watch["resourceVersion"] == "102"  # the list's resourceVersion
    assert rec.store() == server_store(fake, "nodes")
    assert rec.count(events.Disconnected) == 0


async def test_field_selectors_for_a_node_agent(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.put("nodes", fakeapi.node("calypso"))
    fake.put("nodes", fakeapi.node("styx"))
    fake.put("pods", fakeapi.pod("mine", namespace="apps", node_name="calypso"))
    fake.put("pods", fakeapi.pod("theirs", namespace="apps", node_name="styx"))
    node = start(kind="Node", field_selector=resources.node_selector("calypso"))
    pods = start(kind="Pod", field_selector=resources.pods_on_node_selector("calypso"))
    await node.until(listed(node), what="node Listed")
    await pods.until(listed(pods), what="pods Listed")
    assert node.changes() == [("ADDED", "calypso")]
    assert pods.changes() == [("ADDED", "apps/mine")]
    fake.put("pods", fakeapi.pod("late", namespace="apps", node_name="calypso"))
    fake.put("pods", fakeapi.pod("elsewhere", namespace="apps", node_name="styx"))
    await pods.until(lambda: ("ADDED", "apps/late") in pods.changes(), what="late pod")
    assert ("ADDED", "apps/elsewhere") not in pods.changes()
    selectors = {r.query.get("fieldSelector") for r in fake.requests}
    assert {"metadata.name=calypso", "spec.nodeName=calypso"} <= selectors
    assert all("fieldSelector" in r.query for r in fake.requests)  # never a cluster-wide request


async def test_dropped_watch_resumes_from_resource_version_losing_and_repeating_nothing(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.put("nodes", fakeapi.node("a"))
    rec = start()
    await rec.until(listed(rec), what="Listed")
    fake.put("nodes", fakeapi.node("b"))
    await rec.until(lambda: ("ADDED", "b") in rec.changes(), what="b")
    last_rv = fake.get("nodes", ("", "b"))["metadata"]["resourceVersion"]  # type: ignore[index]
    fake.cut_watches()
    fake.put("nodes", fakeapi.node("c"))  # while the client is reconnecting
    fake.put("nodes", fakeapi.node("a", ready="False"))
    await rec.until(lambda: len(rec.changes()) == 4, what="c and a's change")
    fake.put("nodes", fakeapi.node("d"))
    await rec.until(lambda: ("ADDED", "d") in rec.changes(), what="d")
    assert rec.changes() == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("MODIFIED", "a"),
        ("ADDED", "d"),
    ]
    assert len(lists(fake)) == 1  # resumed, never relisted
    assert watches(fake)[1]["resourceVersion"] == last_rv
    assert rec.count(events.Disconnected) == 0
    assert ("nodes", "dropped") in rec.restarts
    assert rec.store() == server_store(fake, "nodes")


@pytest.mark.parametrize("as_status", [False, True], ids=["error-event", "http-410"])
async def test_410_relists_and_vanished_objects_are_deleted(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder], as_status: bool
) -> None:
    fake.gone_as_status = as_status
    for name in ("a", "b", "c"):
        fake.put("nodes", fakeapi.node(name))
    rec = start()
    await rec.until(listed(rec), what="Listed")
    fake.put("nodes", fakeapi.node("x"))
    await rec.until(lambda: ("ADDED", "x") in rec.changes(), what="x")
    # History is lost while b vanishes, c changes and d appears (etcd compaction, say).
    store = fake.store("nodes")
    del store.objects[("", "b")]
    fake.rv += 1
    store.objects[("", "c")]["status"]["conditions"][0]["status"] = "False"
    store.objects[("", "c")]["metadata"]["resourceVersion"] = str(fake.rv)
    fake.rv += 1
    store.objects[("", "d")] = fakeapi.node("d")
    store.objects[("", "d")]["metadata"].update(uid="d-uid", resourceVersion=str(fake.rv))
    fake.compact()
    fake.cut_watches()
    await rec.until(listed(rec, 2), what="relist")
    assert rec.changes()[4:] == [("MODIFIED", "c"), ("ADDED", "d"), ("DELETED", "b")]  # a, x unchanged
    assert "resourceVersion" not in lists(fake)[1]  # consistent read after 410
    assert ("nodes", "gone") in rec.restarts
    assert rec.store() == server_store(fake, "nodes")
    fake.put("nodes", fakeapi.node("e"))  # and the watch goes on from the relist
    await rec.until(lambda: ("ADDED", "e") in rec.changes(), what="e")


async def test_a_relist_reports_a_changed_claim_as_modified_not_recreated(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    """Claims, volumes and budgets keep no uid in the view; a relist must still tell a change
    (MODIFIED) from a re-creation, and report no DELETED for an object that stayed."""

    def claim(name: str, phase: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": "db"},
            "spec": {"volumeName": f"pv-{name}", "storageClassName": "local-path"},
            "status": {"phase": phase},
        }

    fake.put("persistentvolumeclaims", claim("data", "Pending"))
    fake.put("persistentvolumeclaims", claim("logs", "Bound"))
    rec = start(kind="PersistentVolumeClaim")
    await rec.until(listed(rec), what="Listed")
    store = fake.store("persistentvolumeclaims")
    changed = store.objects[("db", "data")]
    fake.rv += 1
    changed["status"]["phase"] = "Bound"
    changed["metadata"]["resourceVersion"] = str(fake.rv)
    fake.compact()
    fake.cut_watches()
    await rec.until(listed(rec, 2), what="relist")
    assert rec.changes()[2:] == [("MODIFIED", "db/data")]


async def test_bookmarks_advance_the_resume_point(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.bookmark_interval = 0.05
    fake.put("nodes", fakeapi.node("mine"))
    rec = start(field_selector="metadata.name=mine")
    await rec.until(listed(rec), what="Listed")
    for i in range(5):
        fake.put("nodes", fakeapi.node(f"other-{i}"))  # invisible to this watch, but RV moves
    target = str(fake.rv)
    await _until_bookmark(fake, target)
    fake.cut_watches()
    await rec.until(lambda: len(watches(fake)) >= 2, what="re-watch")
    assert watches(fake)[1]["resourceVersion"] == target
    assert len(lists(fake)) == 1
    assert rec.changes() == [("ADDED", "mine")]


async def _until_bookmark(fake: fakeapi.FakeApi, rv: str) -> None:
    """Wait until a bookmark at `rv` has been written (the fake records what it sent)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while rv not in fake.bookmarks_sent:
        assert loop.time() < deadline, "no bookmark sent"
        await asyncio.sleep(0.01)


async def test_429_retry_after_is_honoured(fake: fakeapi.FakeApi, start: Callable[..., Recorder]) -> None:
    fake.put("nodes", fakeapi.node("a"))
    fake.fail(429, watch=True, retry_after=1, times=1)
    rec = start()
    await rec.until(listed(rec, 2), what="recovery after 429", timeout=10)
    refused = next(r for r in fake.requests if r.query.get("watch") == "true")
    following = fake.requests[fake.requests.index(refused) + 1]
    assert following.at - refused.at >= 0.99  # FAST backoff alone would retry after <0.1 s
    assert rec.count(events.Disconnected) == 1
    assert ("nodes", "throttled") in rec.restarts
    assert rec.store() == server_store(fake, "nodes")


async def test_5xx_back_off_exponentially_then_recover(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.put("nodes", fakeapi.node("a"))
    fake.fail(500, times=4)
    rec = start(backoff=retry.Backoff(base=0.05, cap=1.0))
    await rec.until(listed(rec), what="Listed after 500s")
    times = [r.at for r in fake.requests[:5]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for attempt, gap in enumerate(gaps):
        assert gap >= 0.05 * 2**attempt / 2 * 0.95  # equal jitter: at least half the ceiling
    assert rec.count(events.Disconnected) == 1  # once per outage, not per attempt
    assert [why for _, why in rec.restarts] == ["server-error"] * 4
    assert rec.changes() == [("ADDED", "a")]


async def test_api_outage_disconnects_then_resyncs(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    for name in ("a", "b", "c"):
        fake.put("nodes", fakeapi.node(name))
    rec = start()
    await rec.until(listed(rec), what="Listed")
    await fake.down()  # refused connections from here on
    await rec.until(lambda: rec.count(events.Disconnected) == 1, what="Disconnected")
    fake.remove("nodes", ("", "b"))  # the cluster moves on while we cannot see it
    fake.put("nodes", fakeapi.node("a", ready="False"))
    fake.put("nodes", fakeapi.node("d"))
    fake.compact()
    # A long outage, compressed: as many failed attempts as 10 minutes at the real 30 s cap give.
    await rec.until(
        lambda: sum(1 for _, why in rec.restarts if why == "unreachable") >= 20, what="retries", timeout=10
    )
    await fake.up()
    await rec.until(listed(rec, 2), what="resync", timeout=10)
    assert rec.store() == server_store(fake, "nodes")
    assert rec.count(events.Disconnected) == 1
    disconnected = next(e for e in rec.events if isinstance(e, events.Disconnected))
    assert disconnected.resource == "nodes"
    assert "unreachable" in disconnected.error
    fake.put("nodes", fakeapi.node("e"))
    await rec.until(lambda: ("ADDED", "e") in rec.changes(), what="watching again")


async def test_lists_are_paginated(fake: fakeapi.FakeApi, start: Callable[..., Recorder]) -> None:
    for i in range(5):
        fake.put("pods", fakeapi.pod(f"p{i}", namespace="apps"))
    rec = start(kind="Pod", page_size=2)
    await rec.until(listed(rec), what="Listed")
    assert len(rec.changes()) == 5
    pages = lists(fake)
    assert [p.get("limit") for p in pages] == ["2", "2", "2"]
    assert "continue" not in pages[0]
    assert all("continue" in p and "resourceVersion" not in p for p in pages[1:])


async def test_undecodable_objects_are_skipped_not_fatal(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.put("nodes", fakeapi.node("good"))
    bad = fakeapi.node("bad")
    bad["spec"]["taints"] = [{"effect": "NoSchedule"}]  # no key: not a taint
    fake.put("nodes", bad)
    rec = start()
    await rec.until(listed(rec), what="Listed")
    fake.put("nodes", dict(fakeapi.node("bad2"), spec={"taints": [{}]}))
    fake.put("nodes", fakeapi.node("after"))
    await rec.until(lambda: ("ADDED", "after") in rec.changes(), what="after")
    assert rec.changes() == [("ADDED", "good"), ("ADDED", "after")]
    assert rec.count(events.Disconnected) == 0


async def test_error_event_other_than_410_disconnects_and_resyncs(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.put("nodes", fakeapi.node("a"))
    rec = start()
    await rec.until(listed(rec), what="Listed")
    fake.error_event_next = fakeapi.status_body(500, "InternalError", "etcd is sad")
    fake.put("nodes", fakeapi.node("b"))
    await rec.until(listed(rec, 2), what="resync after ERROR event")
    assert rec.count(events.Disconnected) == 1
    assert rec.store() == server_store(fake, "nodes")


@pytest.mark.parametrize(
    ("kind", "resource", "make"),
    [
        ("PersistentVolume", "persistentvolumes", lambda: {"metadata": {"name": "pv1"}, "spec": {}}),
        (
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            lambda: {"metadata": {"name": "data", "namespace": "db"}, "spec": {"volumeName": "pv1"}},
        ),
        (
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            lambda: {"metadata": {"name": "web", "namespace": "apps"}, "status": {"disruptionsAllowed": 1}},
        ),
    ],
)
async def test_storage_kinds_are_storage_events(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder], kind: str, resource: str, make: Callable[[], Any]
) -> None:
    fake.put(resource, make())
    rec = start(kind=kind)
    await rec.until(listed(rec), what="Listed")
    event = rec.events[0]
    assert isinstance(event, events.StorageEvent)
    assert type(event.obj).__name__ == kind
    assert rec.events[1] == events.Listed(resource=resource)
    path = next(r.path for r in fake.requests)
    assert path == resources.RESOURCES[kind].path()


async def test_a_bug_in_decoding_is_an_outage_not_a_crash(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    calls = 0

    def flaky_decode(raw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug")
        return resources.NODES.decode(raw)

    buggy = dataclasses.replace(resources.NODES, decode=flaky_decode)
    fake.put("nodes", fakeapi.node("a"))
    fake.put("nodes", fakeapi.node("b"))
    rec = start(kind=buggy)
    await rec.until(listed(rec), what="Listed after the bug")
    assert rec.count(events.Disconnected) == 1
    assert ("nodes", "internal") in rec.restarts
    assert rec.store() == server_store(fake, "nodes")


async def test_list_items_without_metadata_are_skipped(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.put("nodes", fakeapi.node("a"))
    fake.store("nodes").objects[("", "broken")] = {"kind": "Node"}  # no metadata at all
    rec = start()
    await rec.until(listed(rec), what="Listed")
    assert rec.changes() == [("ADDED", "a")]


async def test_a_namespaced_watch_sees_only_its_namespace(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    fake.put("pods", fakeapi.pod("mine", namespace="apps"))
    fake.put("pods", fakeapi.pod("other", namespace="kube-system"))
    rec = start(kind="Pod", namespace="apps")
    await rec.until(listed(rec), what="Listed")
    fake.put("pods", fakeapi.pod("late", namespace="apps"))
    fake.put("pods", fakeapi.pod("late", namespace="kube-system"))
    await rec.until(lambda: ("ADDED", "apps/late") in rec.changes(), what="late pod")
    assert rec.changes() == [("ADDED", "apps/mine"), ("ADDED", "apps/late")]
    assert {r.path for r in fake.requests} == {"/api/v1/namespaces/apps/pods"}


async def test_a_silent_watch_is_abandoned_after_the_inactivity_timeout(
    fake: fakeapi.FakeApi, start: Callable[..., Recorder]
) -> None:
    """A half-open connection looks like a quiet cluster; the inactivity timeout tells them apart."""
    fake.put("nodes", fakeapi.node("a"))
    rec = start(timeout_seconds=300, inactivity_timeout=0.3)
    await rec.until(listed(rec), what="Listed")
    await rec.until(lambda: len(watches(fake)) >= 2, what="a new watch after 0.3 s of silence")
    await rec.until(listed(rec, 2), what="resynced")
    assert ("nodes", "unreachable") in rec.restarts
    assert rec.count(events.Disconnected) >= 1
    fake.put("nodes", fakeapi.node("b"))
    await rec.until(lambda: ("ADDED", "b") in rec.changes(), what="b")


@pytest.mark.parametrize(
    "metadata",
    [
        {"name": "a", "namespace": "ns", "resourceVersion": "7"},
        {"name": "b", "resourceVersion": "7"},  # no namespace: "default", as decode reads it
        {"name": "c", "namespace": None, "resourceVersion": "7"},
    ],
)
@pytest.mark.parametrize(
    "res",
    list({r.kind: r for r in resources.RESOURCES.values()}.values()),
    ids=lambda r: r.kind,
)
def test_the_relist_key_from_metadata_is_the_decoded_objects_key(
    res: resources.Resource, metadata: dict[str, Any]
) -> None:
    """A relist looks an object up by its metadata before decoding it, a watch event by the
    decoded object: the two keys must be one, or a relist would diff against nothing."""
    raw: dict[str, Any] = {"metadata": dict(metadata), "spec": {}, "status": {}}
    obj = res.decode(raw)
    assert res.meta_key(raw["metadata"]) == res.key(obj)
    assert obj.resource_version == "7"
