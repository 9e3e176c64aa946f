"""Test helpers: run a watch generator in a task, record what it yields, wait on conditions.

`Recorder.until` waits for a state with a deadline (woken by each new event), never for a
guessed time; `Recorder.store` applies the events the way a consumer would, so tests can
compare "what healer believes" with the fake server's objects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from healer.model import events
from tests.api.fakeapi import FakeApi


def name_of(event: events.Event) -> str:
    if isinstance(event, events.NodeEvent):
        return event.node.name
    if isinstance(event, events.PodEvent):
        return f"{event.pod.namespace}/{event.pod.name}"
    if isinstance(event, events.StorageEvent):
        obj = event.obj
        namespace = getattr(obj, "namespace", "")
        return f"{namespace}/{obj.name}" if namespace else obj.name
    raise TypeError(event)


class Recorder:
    def __init__(self, source: AsyncIterator[events.Event]) -> None:
        self.source = source
        self.events: list[events.Event] = []
        self.restarts: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    def on_restart(self, resource: str, reason: str) -> None:
        self.restarts.append((resource, reason))

    async def _run(self) -> None:
        async for event in self.source:
            self.events.append(event)
            self._wake.set()

    async def until(
        self,
        predicate: Callable[[], Any],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 (a deadline for the condition, not for one await)
        what: str = "",
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if self.task.done():
                self.task.result()  # re-raise what killed the watch
                raise AssertionError(f"watch ended while waiting for {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; events: {self.events}")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(remaining, 0.05))

    def count(self, cls: type, **attrs: Any) -> int:
        return sum(
            1 for e in self.events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in attrs.items())
        )

    def changes(self) -> list[tuple[str, str]]:
        """(change, name) of every object event, in order."""
        return [
            (e.change.value, name_of(e))
            for e in self.events
            if isinstance(e, events.NodeEvent | events.PodEvent | events.StorageEvent)
        ]

    def store(self) -> dict[str, str]:
        """name -> resource_version (or "" for kinds without one), as a consumer would hold it."""
        held: dict[str, str] = {}
        for e in self.events:
            if isinstance(e, events.NodeEvent | events.PodEvent | events.StorageEvent):
                obj: Any = e.node if isinstance(e, events.NodeEvent) else None
                obj = e.pod if isinstance(e, events.PodEvent) else obj
                obj = e.obj if isinstance(e, events.StorageEvent) else obj
                if e.change is events.Change.DELETED:
                    held.pop(name_of(e), None)
                else:
                    held[name_of(e)] = getattr(obj, "resource_version", "")
        return held

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        aclose = getattr(self.source, "aclose", None)
        if aclose is not None:
            await aclose()


def server_store(fake: FakeApi, resource: str, *, namespaced: bool = False) -> dict[str, str]:
    return {
        (f"{ns}/{name}" if namespaced else name): obj["metadata"]["resourceVersion"]
        for (ns, name), obj in fake.store(resource).objects.items()
    }
