"""Delivery: one background lane per target, so a slow or failing chat never slows healing.

`Dispatcher.submit` only puts a message on bounded per-target queues and returns; each
lane sends through apprise's `async_notify` (apprise runs its blocking plugins in its own
worker threads, so the event loop stays free), limits its rate with a token bucket,
retries failures with exponential backoff, and folds bursts (>= `digest_threshold`
alerts within `digest_window_s`) into one digest. Every message ends as exactly one of
the outcomes counted in `healer_notifications_total` and logged with the target's
redacted URL: nothing is lost silently. apprise is imported on the first send (its targets,
`healer.notify.targets`, import it when a URL is parsed), never by a daemon without URLs.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import prometheus_client
import structlog

from healer.model.actions import Severity, Stage
from healer.notify import messages
from healer.notify.messages import Message
from healer.notify.targets import Target

log = structlog.get_logger("healer.notify")


class Metrics:
    """`healer_notifications_total{outcome}`: sent, failed (after retries), retried, deduped,
    digested (folded into a digest), dropped (queue full or shutdown). On the daemon's registry."""

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry or prometheus_client.CollectorRegistry()
        self.notifications = prometheus_client.Counter(
            "healer_notifications", "Alerts by outcome", ["outcome"], registry=self.registry
        )

    def count(self, outcome: str, n: int = 1) -> None:
        self.notifications.labels(outcome=outcome).inc(n)

    def value(self, outcome: str) -> float:
        return self.registry.get_sample_value("healer_notifications_total", {"outcome": outcome}) or 0.0


_NOTIFY_TYPE = {Severity.INFO: "INFO", Severity.WARNING: "WARNING", Severity.CRITICAL: "FAILURE"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    retries: int = 3
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    rate_per_minute: float = 20.0
    burst: int = 5
    queue_size: int = 200
    digest_threshold: int = 10
    digest_window_s: float = 60.0
    send_timeout_s: float = 30.0


class TokenBucket:
    """`burst` sends at once, then `rate_per_s`; `take` reserves a token and says how long to wait."""

    def __init__(self, *, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._at = now

    def take(self, now: float) -> float:
        if self.rate_per_s <= 0:
            return 0.0
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """The result of one send to one target; `reason` is log-safe."""

    ok: bool
    reason: str = ""
    attempts: int = 1


async def send_once(target: Target, message: Message, *, timeout_s: float) -> Delivery:
    """One apprise call to one target; never raises."""
    import apprise

    markdown = target.takes_markdown
    try:
        sender = apprise.Apprise()
        sender.add(target.service)
        result = await sender.async_notify(
            body=(message.markdown() if markdown else message.text()) or message.title,
            title=message.title,
            notify_type=apprise.NotifyType.SUCCESS
            if message.stage is Stage.RESOLVED
            else apprise.NotifyType[_NOTIFY_TYPE[message.severity]],
            body_format=apprise.NotifyFormat.MARKDOWN if markdown else apprise.NotifyFormat.TEXT,
            timeout=timeout_s,
        )
    except Exception as e:  # apprise plugins may raise anything; the caller must not see it
        return Delivery(ok=False, reason=scrub(target, f"{type(e).__name__}: {e}"))
    if result:
        return Delivery(ok=True)
    return Delivery(ok=False, reason=scrub(target, _reason(result)))


def _reason(result: Any) -> str:
    status = getattr(getattr(result, "status", None), "name", "FAILURE")
    worst = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
    return f"{status}: {worst[-1]}" if worst else str(status)


def scrub(target: Target, text: str) -> str:
    """Masks every piece of the raw URL that apprise's privacy form hides."""
    try:
        raw = str(target.service.url(privacy=False))
    except Exception:
        return text
    shown = str(target.service.url(privacy=True))
    for token in sorted(set(re.split(r"[/:@?&=#,+]+", raw)), key=len, reverse=True):
        if len(token) >= 4 and token not in shown:
            text = text.replace(token, "****")
    return text


class _Lane:
    def __init__(self, target: Target, *, settings: Settings, metrics: Metrics) -> None:
        self.target = target
        self.settings = settings
        self.metrics = metrics
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=settings.queue_size)
        self.arrivals: deque[float] = deque()
        loop = asyncio.get_running_loop()
        self.bucket = TokenBucket(
            rate_per_s=settings.rate_per_minute / 60.0, burst=settings.burst, now=loop.time()
        )
        self.task = loop.create_task(self._run(), name=f"notify {target.label}")

    def put(self, message: Message) -> bool:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        self.arrivals.append(asyncio.get_running_loop().time())
        return True

    def _flooded(self, now: float) -> bool:
        while self.arrivals and now - self.arrivals[0] > self.settings.digest_window_s:
            self.arrivals.popleft()
        return len(self.arrivals) >= self.settings.digest_threshold

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            try:
                if self._flooded(loop.time()):
                    batch += await self._collect(loop.time() + self.settings.digest_window_s)
                    self.metrics.count("digested", len(batch))
                    log.warning("notify.digest", target=self.target.label, alerts=len(batch))
                    outgoing = messages.digest(batch, window_s=self.settings.digest_window_s)
                else:
                    outgoing = batch[0]
                wait = self.bucket.take(loop.time())
                if wait > 0:
                    log.info("notify.rate_limited", target=self.target.label, wait_s=round(wait, 2))
                    await asyncio.sleep(wait)
                await self._deliver(outgoing)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug here must not end the lane
                self.metrics.count("failed")
                log.error("notify.lane_error", target=self.target.label, error=scrub(self.target, repr(e)))
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _collect(self, until: float) -> list[Message]:
        loop = asyncio.get_running_loop()
        more: list[Message] = []
        while (left := until - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    more.append(await self.queue.get())
            except TimeoutError:
                break
        while not self.queue.empty():
            more.append(self.queue.get_nowait())
        return more

    async def _deliver(self, message: Message) -> Delivery:
        settings = self.settings
        attempt = 0
        while True:
            attempt += 1
            result = await send_once(self.target, message, timeout_s=settings.send_timeout_s)
            if result.ok:
                self.metrics.count("sent")
                log.info(
                    "notify.sent",
                    target=self.target.label,
                    incident=message.key,
                    stage=message.stage.value,
                    attempts=attempt,
                )
                return Delivery(ok=True, attempts=attempt)
            if attempt > settings.retries:
                self.metrics.count("failed")
                log.error(
                    "notify.failed",
                    target=self.target.label,
                    incident=message.key,
                    stage=message.stage.value,
                    title=message.title,
                    attempts=attempt,
                    reason=result.reason,
                )
                return Delivery(ok=False, reason=result.reason, attempts=attempt)
            self.metrics.count("retried")
            delay = min(settings.backoff_max_s, settings.backoff_s * 2 ** (attempt - 1))
            log.warning(
                "notify.retrying",
                target=self.target.label,
                incident=message.key,
                attempt=attempt,
                delay_s=delay,
                reason=result.reason,
            )
            await asyncio.sleep(delay)


class Dispatcher:
    """Routes messages to the targets that want them; lanes start on first use (needs a loop)."""

    def __init__(
        self, targets: Iterable[Target], *, settings: Settings | None = None, metrics: Metrics | None = None
    ) -> None:
        self.targets = tuple(targets)
        self.settings = settings or Settings()
        self.metrics = metrics or Metrics()
        self._lanes: list[_Lane] | None = None

    def _ensure(self) -> list[_Lane]:
        if self._lanes is None:
            self._lanes = [_Lane(t, settings=self.settings, metrics=self.metrics) for t in self.targets]
        return self._lanes

    def submit(self, message: Message) -> None:
        """Queues a message for every target it is routed to; never blocks, never raises."""
        try:
            for lane in self._ensure():
                if not lane.target.wants(message.route_tags):
                    continue
                if not lane.put(message):
                    self.metrics.count("dropped")
                    log.error(
                        "notify.dropped",
                        target=lane.target.label,
                        incident=message.key,
                        title=message.title,
                        why="queue full",
                    )
        except Exception as e:
            self.metrics.count("dropped")
            log.error("notify.submit_error", incident=message.key, error=repr(e))

    async def idle(self) -> None:
        """Returns once every queued message has been delivered or given up on."""
        for lane in self._lanes or ():
            await lane.queue.join()

    async def close(self, *, timeout_s: float = 10.0) -> None:
        """Drains what is queued (up to `timeout_s`), then stops the lanes."""
        lanes, self._lanes = self._lanes or [], None
        if not lanes:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(lane.queue.join() for lane in lanes))
        except TimeoutError:
            left = sum(lane.queue.qsize() for lane in lanes)
            self.metrics.count("dropped", left)
            log.error("notify.undelivered_at_shutdown", alerts=left)
        for lane in lanes:
            lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in lanes), return_exceptions=True)
