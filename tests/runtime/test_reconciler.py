"""The decide-and-act loop: debounce, ticks, no action on a stale view, drain, state and notifier."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from healer.effects.dryrun import DryRunExecutor, NodeWrites
from healer.effects.recording import RecordingExecutor
from healer.model.actions import Cordon, Notify, Outcome, Plan
from healer.model.events import Change, Event, Listed, NodeEvent
from healer.model.view import ClusterView, ConditionStatus, Node
from healer.model.view import Condition as Cond
from healer.runtime.metrics import Metrics
from healer.runtime.reconciler import Reconciler
from healer.runtime.store import Store


@dataclass(frozen=True)
class State:
    seen: tuple[Outcome, ...] = ()

    def after(self, *, outcomes: Sequence[Outcome], now: datetime) -> State:
        return State(seen=(*self.seen, *outcomes))


@dataclass
class Planner:
    """Cordons every node whose Ready is not True; counts its calls."""

    calls: int = 0
    nows: list[datetime] = field(default_factory=list)
    touched: list[Collection[str] | None] = field(default_factory=list)
    fail_next: bool = False

    def __call__(
        self,
        *,
        view: ClusterView,
        rules: Any,
        state: Any,
        now: datetime,
        scope: str,
        node: str | None = None,
        touched: Collection[str] | None = None,
    ) -> Plan:
        self.calls += 1
        self.nows.append(now)
        self.touched.append(touched)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a bug in one evaluation")
        actions = []
        for n in view.nodes.values():
            if n.ready is not ConditionStatus.TRUE and not n.unschedulable:
                actions.append(Cordon(target=_ref(n.name), rule="node-not-ready", reason="NotReady"))
                actions.append(
                    Notify(target=_ref(n.name), rule="node-not-ready", reason="NotReady", title="down")
                )
        return Plan(actions=tuple(actions))


@dataclass
class Notifier:
    observed: list[tuple[Plan, tuple[Outcome, ...]]] = field(default_factory=list)
    ticks: int = 0

    async def observe(
        self, *, plan: Plan, outcomes: Sequence[Outcome], view: ClusterView, now: datetime
    ) -> None:
        self.observed.append((plan, tuple(outcomes)))

    async def tick(self, *, view: ClusterView, now: datetime) -> None:
        self.ticks += 1


def _ref(name: str) -> Any:
    from healer.model.view import ObjectRef

    return ObjectRef(kind="Node", name=name)


def _node(name: str, ready: ConditionStatus) -> Node:
    return Node(name=name, conditions=(Cond(type="Ready", status=ready),))


async def _events(*events: Event) -> AsyncIterator[Event]:
    for e in events:
        yield e
    await asyncio.Event().wait()  # a watch never ends by itself


def _reconciler(
    *, executor: RecordingExecutor, planner: Planner, notifier: Notifier, tick_s: float = 60.0
) -> Reconciler:
    return Reconciler(
        scope="cluster",
        node=None,
        store=Store(resources=["nodes"]),
        rules=lambda: None,
        planner=planner,
        state=State(),
        executor=executor,
        notifier=notifier,
        metrics=Metrics(),
        debounce_s=0.05,
        tick_s=tick_s,
    )


async def _until(cond: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:  # polling a plain predicate with a deadline; the loop under test sets no Event
            if cond():
                return
            await asyncio.sleep(0.01)


async def test_a_burst_of_events_is_one_plan_and_outcomes_reach_state_and_notifier() -> None:
    ex, planner, notifier = RecordingExecutor(), Planner(), Notifier()
    rec = _reconciler(executor=ex, planner=planner, notifier=notifier)
    burst = [NodeEvent(change=Change.ADDED, node=_node(f"n{i}", ConditionStatus.TRUE)) for i in range(50)]
    source = _events(*burst, NodeEvent(change=Change.MODIFIED, node=_node("styx", ConditionStatus.UNKNOWN)),
                     Listed(resource="nodes"))  # fmt: skip
    task = asyncio.create_task(rec.run([source]))
    await _until(lambda: notifier.observed)
    rec.stop()
    await task
    assert planner.calls == 1
    assert ex.verbs() == [("cordon", "styx"), ("notify", "styx")]
    assert [o.action.verb for o in rec.state.seen] == ["cordon", "notify"]  # type: ignore[attr-defined]
    plan, outcomes = notifier.observed[0]
    assert len(plan.actions) == 2
    assert len(outcomes) == 2
    assert rec._metrics.value("healer_actions_total", verb="cordon", outcome="applied") == 1


async def test_nothing_is_acted_on_before_the_view_is_synced() -> None:
    ex, planner, notifier = RecordingExecutor(), Planner(), Notifier()
    rec = _reconciler(executor=ex, planner=planner, notifier=notifier)
    source = _events(NodeEvent(change=Change.ADDED, node=_node("styx", ConditionStatus.UNKNOWN)))  # no Listed
    task = asyncio.create_task(rec.run([source]))
    await _until(lambda: planner.calls >= 1)
    rec.stop()
    await task
    assert ex.verbs() == [("notify", "styx")]  # alerts still flow; writes do not
    _, outcomes = notifier.observed[0]
    assert outcomes[0].detail == "view not synced"


async def test_ticks_replan_without_events() -> None:
    ex, planner, notifier = RecordingExecutor(), Planner(), Notifier()
    rec = _reconciler(executor=ex, planner=planner, notifier=notifier, tick_s=0.05)
    task = asyncio.create_task(rec.run([_events(Listed(resource="nodes"))]))
    await _until(lambda: planner.calls >= 4 and notifier.ticks >= 2)
    rec.stop()
    await task
    assert planner.nows == sorted(planner.nows)
    assert planner.nows[0] < planner.nows[-1]


async def test_stop_finishes_the_action_in_flight_and_executes_no_more() -> None:
    ex, planner, notifier = RecordingExecutor(delay_s=0.2), Planner(), Notifier()
    rec = _reconciler(executor=ex, planner=planner, notifier=notifier)
    down = [NodeEvent(change=Change.ADDED, node=_node(n, ConditionStatus.UNKNOWN)) for n in ("a", "b", "c")]
    task = asyncio.create_task(rec.run([_events(*down, Listed(resource="nodes"))]))
    await _until(lambda: planner.calls == 1)
    await asyncio.sleep(0.05)  # the first (slow) action is in flight
    rec.stop()
    await task
    assert ex.verbs() == [("cordon", "a")]
    assert [o.action.verb for o in rec.state.seen] == ["cordon"]  # type: ignore[attr-defined]


async def test_cancel_stops_at_once() -> None:
    ex, planner, notifier = RecordingExecutor(delay_s=10), Planner(), Notifier()
    rec = _reconciler(executor=ex, planner=planner, notifier=notifier)
    events = _events(
        NodeEvent(change=Change.ADDED, node=_node("a", ConditionStatus.UNKNOWN)), Listed(resource="nodes")
    )
    task = asyncio.create_task(rec.run([events]))
    await _until(lambda: planner.calls == 1)
    task.cancel()
    async with asyncio.timeout(1):
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert ex.actions == []


async def test_a_cancel_that_meets_a_wakeup_is_not_swallowed() -> None:
    """Losing the Lease cancels the cluster role; an event that wakes the loop in the same
    instant must not eat that cancel (Python 3.11's `asyncio.wait_for` returns the inner
    result instead of raising when both happen together: the role would act on, a second
    writer beside the new leader)."""
    ex, planner, notifier = RecordingExecutor(), Planner(), Notifier()
    rec = _reconciler(executor=ex, planner=planner, notifier=notifier)
    task = asyncio.create_task(rec.run([_events(Listed(resource="nodes"))]))
    await _until(lambda: planner.calls >= 1)  # idle in the loop, waiting for work or the tick
    rec.poke()  # the wakeup ...
    task.cancel()  # ... and the cancel, in one step of the event loop
    async with asyncio.timeout(2):
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_the_planner_is_told_the_touched_nodes_and_ticks_relists_and_pokes_plan_all() -> None:
    ex, planner, notifier = RecordingExecutor(), Planner(), Notifier()
    rec = _reconciler(executor=ex, planner=planner, notifier=notifier)
    for name in ("a", "b", "c"):
        rec.store.apply(NodeEvent(change=Change.ADDED, node=_node(name, ConditionStatus.TRUE)))
    rec.store.apply(Listed(resource="nodes"))
    await rec.evaluate()
    rec.store.apply(NodeEvent(change=Change.MODIFIED, node=_node("b", ConditionStatus.UNKNOWN)))
    await rec.evaluate()
    assert ex.verbs()[-2:] == [("cordon", "b"), ("notify", "b")]
    rec.store.apply(NodeEvent(change=Change.MODIFIED, node=_node("c", ConditionStatus.TRUE)))
    await rec.evaluate(tick=True)
    rec.poke()
    await rec.evaluate()
    rec.store.apply(NodeEvent(change=Change.MODIFIED, node=_node("a", ConditionStatus.TRUE)))
    await rec.evaluate()
    rec.store.apply(Listed(resource="nodes"))
    await rec.evaluate()
    assert planner.touched == [None, frozenset({"b"}), None, None, frozenset({"a"}), None]


async def test_after_a_failed_plan_the_next_plans_everything() -> None:
    """The failed plan took the touched nodes with it; the next one must not plan only newer ones."""
    ex, planner, notifier = RecordingExecutor(), Planner(), Notifier()
    rec = _reconciler(executor=ex, planner=planner, notifier=notifier)
    rec.store.apply(NodeEvent(change=Change.ADDED, node=_node("a", ConditionStatus.TRUE)))
    rec.store.apply(Listed(resource="nodes"))
    await rec.evaluate()
    rec.store.apply(NodeEvent(change=Change.MODIFIED, node=_node("a", ConditionStatus.UNKNOWN)))
    planner.fail_next = True
    with contextlib.suppress(RuntimeError):
        await rec.evaluate()
    rec.store.apply(NodeEvent(change=Change.ADDED, node=_node("b", ConditionStatus.TRUE)))
    await rec.evaluate()
    rec.store.apply(NodeEvent(change=Change.MODIFIED, node=_node("b", ConditionStatus.TRUE)))
    await rec.evaluate()
    assert planner.touched == [None, frozenset({"a"}), None, frozenset({"b"})]
    assert ("cordon", "a") in ex.verbs()


def _dry_run_reconciler(
    *, planner: Planner, notifier: Notifier, scope: str = "cluster", node: str | None = None
) -> tuple[Reconciler, NodeWrites]:
    writes = NodeWrites()
    rec = Reconciler(
        scope=scope,
        node=node,
        store=Store(resources=["nodes"]),
        rules=lambda: None,
        planner=planner,
        state=State(),
        executor=DryRunExecutor(writes=writes),
        notifier=notifier,
        metrics=Metrics(),
        debounce_s=0.05,
        tick_s=60.0,
        overlay=writes,
    )
    writes.subscribe(lambda _node: rec.poke())  # as the daemon wires it
    return rec, writes


def test_live_plans_from_the_stores_own_view() -> None:
    rec = _reconciler(executor=RecordingExecutor(), planner=Planner(), notifier=Notifier())
    rec.store.apply(NodeEvent(change=Change.ADDED, node=_node("styx", ConditionStatus.UNKNOWN)))
    assert rec.view() is rec.store.view()


async def test_dry_run_plans_from_what_it_would_have_written() -> None:
    """The dry-run cordon is laid over the view: planned once, not again after the Node changes."""
    planner, notifier = Planner(), Notifier()
    rec, writes = _dry_run_reconciler(planner=planner, notifier=notifier)
    down = Node(name="styx", uid="u1", conditions=(Cond(type="Ready", status=ConditionStatus.UNKNOWN),))
    changed = Node(name="styx", uid="u1", resource_version="2", conditions=down.conditions)
    events: asyncio.Queue[Event] = asyncio.Queue()

    async def source() -> AsyncIterator[Event]:
        while True:
            yield await events.get()

    task = asyncio.create_task(rec.run([source()]))
    try:
        for e in (NodeEvent(change=Change.ADDED, node=down), Listed(resource="nodes")):
            events.put_nowait(e)
        await _until(lambda: "styx" in writes)
        cordons = [p for p, _ in notifier.observed if any(isinstance(a, Cordon) for a in p.actions)]
        assert len(cordons) == 1
        assert rec.view().nodes["styx"].unschedulable
        assert not rec.store.view().nodes["styx"].unschedulable  # nothing was written
        calls = planner.calls
        await _until(lambda: planner.calls > calls)  # the write asked for a plan, as its watch event would
        events.put_nowait(NodeEvent(change=Change.MODIFIED, node=changed))
        await _until(lambda: rec.store.view().nodes["styx"].resource_version == "2")
        rec.poke()
        calls = planner.calls
        await _until(lambda: planner.calls > calls)
        assert rec.view().nodes["styx"].unschedulable
        assert len([p for p, _ in notifier.observed if any(isinstance(a, Cordon) for a in p.actions)]) == 1
        events.put_nowait(NodeEvent(change=Change.DELETED, node=changed))
        await _until(lambda: "styx" not in writes)
    finally:
        rec.stop()
        await asyncio.wait_for(task, 5)


async def test_a_node_role_forgets_only_its_own_nodes_deletion() -> None:
    """The other GPU nodes' watch says DELETED when a label goes: that Node still exists."""
    rec, writes = _dry_run_reconciler(planner=Planner(), notifier=Notifier(), scope="node", node="calypso")
    for name in ("calypso", "tethys"):
        writes.record(Cordon(target=_ref(name), rule="r", reason="x"), now=datetime.now(UTC))
    rec._forget_deleted(NodeEvent(change=Change.DELETED, node=Node(name="tethys")))
    rec._forget_deleted(NodeEvent(change=Change.MODIFIED, node=Node(name="calypso")))
    assert "tethys" in writes
    assert "calypso" in writes
    rec._forget_deleted(NodeEvent(change=Change.DELETED, node=Node(name="calypso")))
    assert "calypso" not in writes
