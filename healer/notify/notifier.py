"""The notifier the runtime talks to: `observe` each executed plan, `tick` now and then.

Both calls only update the in-memory stories and queue what is ready; delivery runs in
background lanes (`delivery`), so healing never waits for a chat service. Without any
configured URL the runtime gets a `NullNotifier` and one log line saying alerts are off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

import prometheus_client
import structlog

from healer.model.actions import Notify, Outcome, Plan
from healer.model.view import ClusterView
from healer.notify import delivery, stories, targets
from healer.notify.messages import Message

log = structlog.get_logger("healer.notify")


class Notifier(Protocol):
    async def observe(
        self, *, plan: Plan, outcomes: Sequence[Outcome], view: ClusterView, now: datetime
    ) -> None: ...

    async def tick(self, *, view: ClusterView, now: datetime) -> None: ...

    async def close(self, *, timeout_s: float = 10.0) -> None: ...


class NullNotifier:
    """Alerts are off: what would have been said goes to the log only."""

    async def observe(
        self, *, plan: Plan, outcomes: Sequence[Outcome], view: ClusterView, now: datetime
    ) -> None:
        for action in plan.actions:
            if isinstance(action, Notify):
                log.warning("alert", title=action.title, stage=str(action.stage), incident=action.incident)

    async def tick(self, *, view: ClusterView, now: datetime) -> None:
        return None

    async def close(self, *, timeout_s: float = 10.0) -> None:
        return None


class AppriseNotifier:
    """Stories (`stories.Tracker`) feeding delivery lanes (`delivery.Dispatcher`)."""

    def __init__(
        self,
        to: Sequence[targets.Target],
        *,
        shadow: bool = False,
        timings: stories.Timings | None = None,
        settings: delivery.Settings | None = None,
        registry: prometheus_client.CollectorRegistry | None = None,
    ) -> None:
        self.metrics = delivery.Metrics(registry)
        self.tracker = stories.Tracker(timings=timings, shadow=shadow)
        self.dispatcher = delivery.Dispatcher(to, settings=settings, metrics=self.metrics)

    async def observe(
        self, *, plan: Plan, outcomes: Sequence[Outcome], view: ClusterView, now: datetime
    ) -> None:
        try:
            ready = self.tracker.observe(plan=plan, outcomes=tuple(outcomes), view=view, now=now)
        except Exception as e:  # a story bug must never reach the healing loop
            log.exception("notify.observe_error", error=repr(e))
            return
        self._submit(ready)

    async def tick(self, *, view: ClusterView, now: datetime) -> None:
        try:
            ready = self.tracker.tick(view=view, now=now)
        except Exception as e:
            log.exception("notify.tick_error", error=repr(e))
            return
        self._submit(ready)

    def _submit(self, ready: list[Message]) -> None:
        for message in ready:
            if message.deduped:
                self.metrics.count("deduped")
                log.info("notify.deduped", incident=message.key, stage=message.stage.value)
            else:
                self.dispatcher.submit(message)

    async def idle(self) -> None:
        """Waits until everything queued so far was delivered or given up on (for tests, shutdown)."""
        await self.dispatcher.idle()

    async def close(self, *, timeout_s: float = 10.0) -> None:
        await self.dispatcher.close(timeout_s=timeout_s)


def from_environment(
    env: Mapping[str, str] | None = None,
    *,
    shadow: bool = False,
    timings: stories.Timings | None = None,
    settings: delivery.Settings | None = None,
    registry: prometheus_client.CollectorRegistry | None = None,
) -> Notifier:
    """The notifier for `HEALER_NOTIFY_URLS_FILE` / `HEALER_NOTIFY_URLS`; NullNotifier without URLs.

    Bad lines are logged (redacted) and skipped: a typo in one URL must not silence the others,
    nor stop healing.
    """
    loaded = targets.from_environment(env)
    for error in loaded.errors:
        log.error("notify.bad_url", error=error)
    if not loaded.targets:
        log.warning(
            "notify.alerts_off",
            why="no notification URLs configured",
            hint=f"mount a Secret at {targets.DEFAULT_URLS_FILE} or set {targets.URLS_ENV}",
        )
        return NullNotifier()
    log.info(
        "notify.alerts_on",
        targets=[t.label for t in loaded.targets],
        tags=[sorted(t.tags) for t in loaded.targets],
        shadow=shadow,
    )
    return AppriseNotifier(
        loaded.targets, shadow=shadow, timings=timings, settings=settings, registry=registry
    )
