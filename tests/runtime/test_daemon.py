"""The daemon end to end over HTTP: real watches, the real engine and rules, the live executor.

The fake API server stands in for the cluster so these run in a second; the same wiring is
proven against a real control plane in tests/e2e.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from healer.effects.dryrun import DryRunExecutor, NodeWrites
from healer.effects.live import LiveExecutor
from healer.kube import client
from healer.model import names
from healer.model.actions import Cordon
from healer.model.view import ObjectRef
from healer.notify.notifier import NullNotifier
from healer.runtime import daemon as daemon_mod
from healer.runtime import leader
from healer.runtime.metrics import Metrics
from healer.runtime.settings import Settings
from tests.api.fakeapi import FakeApi

RULES = Path(__file__).resolve().parents[2] / "rules"


def _ts(ago: timedelta) -> str:
    return (datetime.now(UTC) - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(
    name: str, *, ready: str = "True", since: timedelta = timedelta(hours=1), **labels: str
) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}, "annotations": {}},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": _ts(since)}]},
    }


def rs_pod(name: str, *, on: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "apps",
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "web-6d4f", "uid": "rs-1", "controller": True}
            ],
        },
        "spec": {"nodeName": on, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Running"},
    }


class AlwaysLead:
    """An elector that wins at once; `lose()` cancels the cluster role as losing the Lease does."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    async def run(self, lead: Callable[[], Any]) -> None:
        while True:
            self._task = asyncio.ensure_future(lead())
            self.started.set()
            try:
                await self._task
            except asyncio.CancelledError:
                if self._task.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    await asyncio.sleep(3600)  # lost: stay a follower
                raise

    def lose(self) -> None:
        assert self._task is not None
        self._task.cancel()


def _daemon(kube: client.Kube, *, node_name: str | None, elector: Any) -> daemon_mod.Daemon:
    settings = Settings(
        node=node_name,
        rules_dir=RULES,
        http_port=0,
        http_host="127.0.0.1",
        tick_s=0.2,
        debounce_s=0.02,
        gpu=False,
    )
    metrics = Metrics()
    return daemon_mod.Daemon(
        settings=settings,
        api=kube,
        executor=LiveExecutor(kube, instance="test"),
        notifier=NullNotifier(),
        rules=daemon_mod.load_rules_holder(settings, metrics),
        metrics=metrics,
        elector=elector,
    )


@contextlib.asynccontextmanager
async def running(d: daemon_mod.Daemon) -> AsyncIterator[asyncio.Task[int]]:
    """Runs the daemon; always drains it, so a failing test leaves no task behind."""
    task = asyncio.create_task(d.run())
    try:
        yield task
    finally:
        d.stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)


async def _until(probe: Callable[[], Any], *, timeout_s: float = 30.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            value = probe()
            if value:
                return value
            await asyncio.sleep(0.05)


async def test_leader_cordons_a_dead_node_and_releases_its_pods_then_drains(
    fake: FakeApi, kube: client.Kube
) -> None:
    fake.put("nodes", node("tethys", **{names.CONTROL_PLANE_LABEL: "true"}))
    fake.put("nodes", node("calypso"))
    fake.put("nodes", node("styx", ready="Unknown", since=timedelta(minutes=5)))
    fake.put("pods", rs_pod("web-1", on="styx"))
    elector = AlwaysLead()
    d = _daemon(kube, node_name="tethys", elector=elector)
    async with running(d) as run:
        await _until(
            lambda: fake.get("pods", ("apps", "web-1")) is None and len(fake.store("events").objects) >= 2
        )
        styx = fake.get("nodes", ("", "styx"))
        assert styx is not None
        assert styx["spec"]["unschedulable"] is True
        assert styx["metadata"]["annotations"][names.CORDONED_BY] == "node-not-ready"
        reasons = sorted(e["reason"] for e in fake.store("events").objects.values())
        assert reasons == ["HealerCordon", "HealerForceDelete"]
        assert d.metrics.value("healer_actions_total", verb="force-delete", outcome="applied") == 1
        assert d.metrics.value("healer_leader") == 1
        assert d.ready()

        d.stop()
        assert await asyncio.wait_for(run, 10) == 0
        assert d.metrics.value("healer_leader") == 0


async def test_a_follower_acts_on_nothing_cluster_wide(fake: FakeApi, kube: client.Kube) -> None:
    fake.put("nodes", node("calypso"))
    fake.put("nodes", node("styx", ready="Unknown", since=timedelta(minutes=5)))
    fake.put("pods", rs_pod("web-1", on="styx"))
    d = _daemon(kube, node_name="calypso", elector=None)  # never leads
    async with running(d) as run:
        await _until(lambda: d.node_reconciler is not None and d.node_reconciler.evaluations >= 3)
        assert d.ready()
        d.stop()
        assert await asyncio.wait_for(run, 10) == 0
        styx = fake.get("nodes", ("", "styx"))
        assert styx is not None
        assert "unschedulable" not in styx["spec"]
        assert fake.get("pods", ("apps", "web-1")) is not None
        assert not fake.store("events").objects
        # the node agent watched only its own node and pods
        watched = {(r.path, r.query.get("fieldSelector")) for r in fake.requests if r.method == "GET"}
        assert ("/api/v1/nodes", "metadata.name=calypso") in watched
        assert ("/api/v1/pods", "spec.nodeName=calypso") in watched
        assert all(sel for path, sel in watched if path in ("/api/v1/nodes", "/api/v1/pods"))


async def test_losing_leadership_stops_cluster_work_at_once(fake: FakeApi, kube: client.Kube) -> None:
    fake.put("nodes", node("tethys", **{names.CONTROL_PLANE_LABEL: "true"}))
    fake.put("nodes", node("calypso"))
    elector = AlwaysLead()
    d = _daemon(kube, node_name="tethys", elector=elector)
    async with running(d) as run:
        await _until(lambda: d.cluster_reconciler is not None and d.cluster_reconciler.store.synced)
        elector.lose()
        await _until(lambda: d.cluster_reconciler is None)
        assert d.metrics.value("healer_leader") == 0
        # styx dies after we lost the Lease: nothing cluster-wide happens any more
        fake.put("nodes", node("styx", ready="Unknown", since=timedelta(minutes=5)))
        fake.put("pods", rs_pod("web-1", on="styx"))
        assert d.node_reconciler is not None
        seen = d.node_reconciler.evaluations
        await _until(lambda: d.node_reconciler is not None and d.node_reconciler.evaluations >= seen + 3)
        assert fake.get("pods", ("apps", "web-1")) is not None
        assert not fake.store("events").objects
        d.stop()
        assert await asyncio.wait_for(run, 10) == 0


async def test_api_outage_acts_on_nothing_and_resyncs(fake: FakeApi, kube: client.Kube) -> None:
    fake.put("nodes", node("tethys", **{names.CONTROL_PLANE_LABEL: "true"}))
    fake.put("nodes", node("calypso"))
    d = _daemon(kube, node_name="tethys", elector=AlwaysLead())
    async with running(d) as run:
        await _until(lambda: d.cluster_reconciler is not None and d.cluster_reconciler.store.synced)
        await fake.down()
        await _until(lambda: d.cluster_reconciler is not None and not d.cluster_reconciler.store.synced)
        assert not d.ready()
        await fake.up()
        await _until(d.ready, timeout_s=40)  # both views resynced
        assert d.cluster_reconciler is not None
        assert d.metrics.value("healer_watch_restarts_total", resource="nodes", reason="unreachable") >= 1
        d.stop()
        assert await asyncio.wait_for(run, 10) == 0


async def test_two_daemons_one_leader_handover_repeats_nothing(fake: FakeApi, kube: client.Kube) -> None:
    """Two daemons with the real Lease elector (short timings): one acts; after it drains the
    other takes over at once (released Lease) and finds nothing left to do."""
    fake.put("nodes", node("tethys", **{names.CONTROL_PLANE_LABEL: "true"}))
    fake.put("nodes", node("calypso"))
    fake.put("nodes", node("styx", ready="Unknown", since=timedelta(minutes=5)))
    fake.put("pods", rs_pod("web-1", on="styx"))
    timings = leader.Timings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)

    def elector(identity: str) -> leader.LeaseElector:
        return leader.LeaseElector(
            kube, namespace="healer-system", name="healer-leader", identity=identity, timings=timings
        )

    a = _daemon(kube, node_name="tethys", elector=elector("a"))
    b = _daemon(kube, node_name="calypso", elector=elector("b"))
    async with running(a) as run_a, running(b):
        first = await _until(lambda: a if a.leading else b if b.leading else None)
        second = b if first is a else a
        await _until(
            lambda: fake.get("pods", ("apps", "web-1")) is None and len(fake.store("events").objects) >= 2
        )
        assert not second.leading
        if first is a:
            a.stop()
            assert await asyncio.wait_for(run_a, 15) == 0
        else:
            b.stop()
        await _until(lambda: second.leading and second.cluster_reconciler is not None)
        rec = second.cluster_reconciler
        assert rec is not None
        await _until(lambda: rec.evaluations >= 3)
    reasons = sorted(e["reason"] for e in fake.store("events").objects.values())
    assert reasons == ["HealerCordon", "HealerForceDelete"]
    assert second.metrics.value("healer_actions_total", verb="cordon", outcome="applied") == 0


async def test_rules_reload_while_running_keeps_the_last_good_rules(
    fake: FakeApi, kube: client.Kube, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES, rules_dir)
    fake.put("nodes", node("calypso"))
    settings = Settings(node="calypso", rules_dir=rules_dir, http_port=0, http_host="127.0.0.1", gpu=False)
    metrics = Metrics()
    d = daemon_mod.Daemon(
        settings=settings,
        api=kube,
        executor=LiveExecutor(kube, instance="test"),
        notifier=NullNotifier(),
        rules=daemon_mod.load_rules_holder(settings, metrics),
        metrics=metrics,
        elector=None,
    )
    good = d.rules.current
    nodes_yaml = rules_dir / "nodes.yaml"
    async with running(d):
        await _until(d.ready)
        nodes_yaml.write_text(nodes_yaml.read_text().replace("for: 30s", "for: thirty seconds"))
        await _until(lambda: metrics.value("healer_rule_reloads_total", result="error") >= 1)
        assert d.rules.current is good
        assert "nodes.yaml" in d.rules.last_error
        nodes_yaml.write_text(nodes_yaml.read_text().replace("for: thirty seconds", "for: 45s"))
        await _until(lambda: metrics.value("healer_rule_reloads_total", result="ok") >= 1)
        assert d.rules.current is not good
        rule = next(r for r in d.rules.current.rules if r.name == "node-not-ready")
        assert rule.match.for_.total_seconds() == 45


async def test_healer_run_lays_node_writes_over_its_views_in_dry_run_only(
    kubeconfig: Path, monkeypatch: Any
) -> None:
    """`run` gives the dry-run executor and the daemon one `NodeWrites`; live gets none at all."""
    built: dict[bool, dict[str, Any]] = {}

    class Captured:
        def __init__(self, **kw: Any) -> None:
            built[kw["settings"].dry_run] = kw

        async def run(self) -> int:
            return 0

    monkeypatch.setattr(daemon_mod, "Daemon", Captured)
    monkeypatch.setattr(daemon_mod, "install_signal_handlers", lambda _d: None)
    monkeypatch.setenv("HEALER_NOTIFY_URLS", "")
    monkeypatch.setenv("HEALER_NOTIFY_URLS_FILE", str(kubeconfig.parent / "none"))
    for dry_run in (False, True):
        settings = Settings(
            node="calypso", rules_dir=RULES, kubeconfig=kubeconfig, dry_run=dry_run, elect=False
        )
        assert await daemon_mod.run(settings) == 0
    assert built[False]["overlay"] is None
    assert isinstance(built[False]["executor"], LiveExecutor)
    writes = built[True]["overlay"]
    assert isinstance(writes, NodeWrites)
    executor = built[True]["executor"]
    assert isinstance(executor, DryRunExecutor)
    assert executor._writes is writes


async def test_daemon_roles_plan_from_the_overlay_and_live_from_the_store(
    fake: FakeApi, kube: client.Kube
) -> None:
    fake.put("nodes", node("calypso"))
    live = _daemon(kube, node_name="calypso", elector=None)
    assert live.overlay is None
    async with running(live):
        rec = await _until(lambda: live.node_reconciler)
        await _until(lambda: rec.store.synced)
        assert rec.view() is rec.store.view()

    writes = NodeWrites()
    settings = dataclasses.replace(live.settings, dry_run=True)
    metrics = Metrics()
    dry = daemon_mod.Daemon(
        settings=settings,
        api=kube,
        executor=DryRunExecutor(writes=writes),
        notifier=NullNotifier(),
        rules=daemon_mod.load_rules_holder(settings, metrics),
        metrics=metrics,
        elector=None,
        overlay=writes,
    )
    async with running(dry):
        rec = await _until(lambda: dry.node_reconciler)
        await _until(lambda: rec.store.synced)
        evaluations = rec.evaluations
        cordon = Cordon(target=ObjectRef(kind="Node", name="calypso"), rule="r", reason="x")
        await DryRunExecutor(writes=writes).execute(cordon)
        await _until(lambda: rec.evaluations > evaluations)
        assert rec.view().nodes["calypso"].cordoned_by_healer
        assert not rec.store.view().nodes["calypso"].unschedulable
    assert [r for r in fake.requests if r.method != "GET"] == []
