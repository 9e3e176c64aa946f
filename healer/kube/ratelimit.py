"""A client-side token bucket, so a node agent never floods the API server.

Every healer pod runs the same code; a bug or a storm that makes each of them write in a
loop multiplies by the node count (the OpenAI DaemonSet outage). client-go's answer is a
token bucket of 5 QPS with a burst of 10; `Kube` takes one per request, watches included.
Waiters reserve their token up front (the count may go negative), so concurrent callers
queue fairly without a lock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

DEFAULT_QPS = 5.0
DEFAULT_BURST = 10


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `acquire()` waits for one."""

    def __init__(
        self,
        *,
        rate: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0 or math.isinf(self.rate)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        if self.unlimited:
            return
        self._refill()
        self._tokens -= 1.0
        if self._tokens >= 0:
            return
        try:
            await self._sleep(-self._tokens / self.rate)
        except asyncio.CancelledError:
            self._tokens += 1.0  # the reserved token was never used
            raise
