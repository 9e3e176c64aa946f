"""Jittered exponential backoff that honours Retry-After, for every caller of the API.

Watchers reconnect forever and effects retry a few times; both must spread their retries
(N agents retrying in lock-step is a second outage) and must wait at least as long as the
server asked (429 from API Priority and Fairness carries Retry-After). What is retried is
decided by the error class: 5xx, 429 and no answer at all are transient; 409 is not retried
here, because the caller must re-read the object first.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from healer.kube import errors

log = structlog.get_logger(__name__)

T = TypeVar("T")

RETRYABLE: tuple[type[errors.ApiError], ...] = (
    errors.ServerError,
    errors.TooManyRequests,
    errors.Unreachable,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delay before retry number `attempt` (0-based): "equal jitter" between half and all of
    min(cap, base * 2**attempt), never shorter than the server's Retry-After (itself capped
    at `max_retry_after`, so a silly header cannot park a watcher for hours)."""

    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0

    def delay(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 32))
        delay = ceiling / 2 + rand() * ceiling / 2
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


DEFAULT_BACKOFF = Backoff()


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    backoff: Backoff = DEFAULT_BACKOFF,
    retry_on: tuple[type[errors.ApiError], ...] = RETRYABLE,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    what: str = "",
) -> T:
    """Call `fn` until it succeeds or `attempts` calls failed; re-raise the last error.

    Only errors in `retry_on` are retried; anything else (404, 409, 422...) goes straight to
    the caller. `fn` is called afresh each time, so it may re-read state (a 409 handler can
    wrap its own read-modify-write in a loop of its own).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(attempts):
        try:
            return await fn()
        except retry_on as e:
            if attempt == attempts - 1:
                raise
            delay = backoff.delay(attempt, retry_after=e.retry_after)
            log.info(
                "api retry",
                what=what,
                attempt=attempt + 1,
                status=e.status,
                error=str(e),
                delay=round(delay, 3),
            )
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
