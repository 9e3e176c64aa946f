"""Deadline-bound polling for tests against a live control plane.

Controllers converge asynchronously, so tests must wait for states, never sleep for a guessed
time: a fixed sleep is either too short (flaky) or too long (slow). ``wait_until`` polls until a
probe yields a value; ``holds_for`` checks that a state persists for a bounded window, which is
how a test asserts that something does *not* happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited state was not reached before the deadline."""


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.5,
) -> T:
    """Poll ``probe`` until it returns something other than None/False; return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = await probe()
        if result is not None and result is not False:
            return result
        if loop.time() >= deadline:
            raise WaitTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def holds_for(
    probe: Callable[[], Awaitable[bool]],
    *,
    duration_s: float,
    what: str,
    interval_s: float = 1.0,
) -> int:
    """Assert ``probe`` stays true on every poll for ``duration_s``; return the number of polls."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + duration_s
    polls = 0
    while True:
        polls += 1
        if not await probe():
            elapsed = loop.time() - started
            raise AssertionError(f"{what} stopped holding after {elapsed:.1f}s (poll {polls})")
        if loop.time() >= deadline:
            return polls
        await asyncio.sleep(interval_s)
