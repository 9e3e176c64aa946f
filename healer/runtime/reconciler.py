"""One decide-and-act loop: events -> store -> engine -> executor -> engine state + notifier.

The daemon runs one of these per scope: every pod runs a `node` reconciler for its own node,
and the leader also runs a `cluster` reconciler. Both are the same loop, so what a test
proves about one (debounce, ticks, acting on nothing while the view is stale, draining) holds
for the other.

- Events are applied to the store as they come; a burst of them (a relist, a node going
  NotReady with a hundred pods) is folded into one evaluation by a short debounce.
- A periodic tick re-plans with no new event, so `for: 60s` conditions fire on time.
- Between ticks the planner is told which nodes the events touched (`Store.take_touched`)
  and may plan only those (the leader's 5,000-node plan is too slow per event); a tick, a
  relist, an outage, a storage event or `poke()` (new rules) plans everything. Held actions
  are reported (gauge, log) from full plans only, where the held list is complete.
- While the view is not synced (a watch lost the API or has not listed yet) the plan is
  still computed (held actions and alerts are visible) but no action reaches the executor.
- `stop()` lets the evaluation in flight finish its current action and returns; cancelling
  the task (leadership lost) stops at once.
- In dry-run an `overlay` (`healer.effects.dryrun.NodeWrites`) lays the Node writes healer
  would have made over the store's view, for planning, notifying and the GPU agent alike;
  a deleted Node's are forgotten. Live there is none, and `view()` is the store's view.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, Self

import structlog

from healer.model.actions import Action, Notify, Outcome, OutcomeStatus, Plan
from healer.model.events import Change, Disconnected, Event, Listed, NodeEvent
from healer.model.ports import Executor
from healer.model.view import ClusterView
from healer.runtime.metrics import Metrics
from healer.runtime.store import Store

log = structlog.get_logger(__name__)


class Notifier(Protocol):
    """`healer.notify`'s side of the contract: told about every executed plan, and ticked."""

    async def observe(
        self, *, plan: Plan, outcomes: Sequence[Outcome], view: ClusterView, now: datetime
    ) -> None: ...

    async def tick(self, *, view: ClusterView, now: datetime) -> None: ...


class Overlay(Protocol):
    """`healer.effects.dryrun.NodeWrites`: what dry-run would have written, laid over a view."""

    def apply(self, view: ClusterView, *, caller: str = "") -> ClusterView: ...

    def forget(self, node: str, *, uid: str = "") -> None: ...


class EngineState(Protocol):
    def after(self, *, outcomes: Sequence[Outcome], now: datetime) -> Self: ...


class Planner(Protocol):
    """`healer.engine.planning.plan`."""

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
    ) -> Plan: ...


class Reconciler:
    def __init__(
        self,
        *,
        scope: str,
        node: str | None,
        store: Store,
        rules: Callable[[], Any],
        planner: Planner,
        state: EngineState,
        executor: Executor,
        notifier: Notifier,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        debounce_s: float = 0.2,
        tick_s: float = 5.0,
        overlay: Overlay | None = None,
    ) -> None:
        self.scope = scope
        self.node = node
        self.store = store
        self._rules = rules
        self._planner = planner
        self.state = state
        self._executor = executor
        self._notifier = notifier
        self._metrics = metrics
        self._clock = clock
        self._debounce_s = debounce_s
        self._tick_s = tick_s
        self._dirty = asyncio.Event()
        self._stopping = asyncio.Event()
        self.evaluations = 0
        self._held: set[tuple[str, str, str]] = set()
        self._held_guards: set[str] = set()
        self.last_plan: Plan = Plan()
        self._plan_all = True
        self._overlay = overlay

    def view(self) -> ClusterView:
        """The view to plan from: the store's, with dry-run's Node writes on it when there are any."""
        view = self.store.view()
        if self._overlay is None:
            return view
        return self._overlay.apply(view, caller=self.scope)

    def poke(self) -> None:
        """Re-plan everything soon (e.g. the rules changed)."""
        self._plan_all = True
        self._dirty.set()

    def stop(self) -> None:
        """Drain: finish the action in flight, execute nothing more, return from `run`."""
        self._stopping.set()
        self._dirty.set()

    async def run(self, sources: Sequence[AsyncIterator[Event]]) -> None:
        """Consume `sources` and evaluate until `stop()` (or cancellation)."""
        async with asyncio.TaskGroup() as tg:
            consumers = [tg.create_task(self._consume(source)) for source in sources]
            try:
                await self._loop()
            finally:
                for task in consumers:
                    task.cancel()

    async def _consume(self, source: AsyncIterator[Event]) -> None:
        async for event in source:
            self._metrics.events.labels(kind=type(event).__name__).inc()
            if isinstance(event, Disconnected):
                log.warning(
                    "watch disconnected", scope=self.scope, resource=event.resource, error=event.error
                )
            elif isinstance(event, Listed):
                log.info("listed", scope=self.scope, resource=event.resource)
            if self._overlay is not None:
                self._forget_deleted(event)
            if self.store.apply(event):
                self._metrics.synced.labels(scope=self.scope).set(1 if self.store.synced else 0)
                self._dirty.set()

    def _forget_deleted(self, event: Event) -> None:
        """A deleted Node takes dry-run's writes on it along. A node role hears of deletion only
        for its own Node: the other GPU nodes' watch also says DELETED when a label goes."""
        assert self._overlay is not None
        if not isinstance(event, NodeEvent) or event.change is not Change.DELETED:
            return
        if self.scope != "node" or event.node.name == self.node:
            self._overlay.forget(event.node.name, uid=event.node.uid)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            ticked = False
            try:
                async with asyncio.timeout(self._tick_s):  # never wait_for (banned in pyproject.toml)
                    await self._dirty.wait()
            except TimeoutError:
                ticked = True
            if self._stopping.is_set():
                return
            if not ticked:
                await asyncio.sleep(self._debounce_s)  # fold a burst of events into one plan
            self._dirty.clear()
            try:
                await self.evaluate(tick=ticked)
            except Exception:  # a bug in one evaluation must not stop healing for good
                log.exception("evaluation failed", scope=self.scope)

    async def evaluate(self, *, tick: bool = False) -> Plan:
        """Plan once against the current view and carry the plan out."""
        view = self.view()
        touched = self.store.take_touched()  # with the snapshot: no await in between
        if tick or self._plan_all:
            touched = None
        self._plan_all = True  # until this plan is made: after a failed one the next plans everything
        now = self._clock()
        plan = self._planner(
            view=view,
            rules=self._rules(),
            state=self.state,
            now=now,
            scope=self.scope,
            node=self.node,
            touched=touched,
        )
        self._plan_all = False
        self.evaluations += 1
        self.last_plan = plan
        self._metrics.plans.labels(scope=self.scope).inc()
        if touched is None:
            self._report_held(plan)
        outcomes: list[Outcome] = []
        for action in plan.actions:
            if self._stopping.is_set():
                break
            outcome = await self._execute(action, synced=view.synced)
            outcomes.append(outcome)
            self._metrics.actions.labels(verb=action.verb, outcome=str(outcome.status)).inc()
        self.state = self.state.after(outcomes=outcomes, now=self._clock())
        if plan or outcomes:
            await self._notify(plan=plan, outcomes=outcomes, view=view, now=now)
        if tick:
            with contextlib.suppress(Exception):
                await self._notifier.tick(view=view, now=now)
        return plan

    def _report_held(self, plan: Plan) -> None:
        """Held actions as a gauge per guard; each newly held action logged once, not every tick."""
        by_guard: dict[str, int] = dict.fromkeys(self._held_guards, 0)
        now_held: set[tuple[str, str, str]] = set()
        for held in plan.held:
            by_guard[held.guard] = by_guard.get(held.guard, 0) + 1
            key = (held.action.verb, held.action.target.key, held.guard)
            now_held.add(key)
            if key not in self._held:
                log.info(
                    "held",
                    scope=self.scope,
                    guard=held.guard,
                    action=held.action.verb,
                    target=held.action.target.key,
                    rule=held.action.rule,
                    detail=held.detail,
                )
        for guard, count in by_guard.items():
            self._metrics.held.labels(guard=guard).set(count)
        self._held_guards = set(by_guard)
        self._held = now_held

    async def _execute(self, action: Action, *, synced: bool) -> Outcome:
        if not synced and not isinstance(action, Notify):
            log.info(
                "view not synced, not acting", scope=self.scope, action=action.verb, target=action.target.key
            )
            return Outcome(
                action=action, status=OutcomeStatus.SKIPPED, detail="view not synced", retryable=True
            )
        return await self._executor.execute(action)

    async def _notify(
        self, *, plan: Plan, outcomes: Sequence[Outcome], view: ClusterView, now: datetime
    ) -> None:
        try:
            await self._notifier.observe(plan=plan, outcomes=outcomes, view=view, now=now)
        except Exception:  # the notifier must never block healing
            log.exception("notifier failed", scope=self.scope)
