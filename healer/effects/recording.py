"""An executor that remembers what it was asked to do, for tests of the runtime.

Tests of the daemon's wiring (debounce, ticks, leadership, drain) assert on *which* actions
reached the executor; this records them in order and answers with a fixed or scripted
status, without any API behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from healer.model.actions import Action, Outcome, OutcomeStatus


class RecordingExecutor:
    """Records every action; `respond` decides the outcome (APPLIED by default)."""

    def __init__(self, *, respond: Callable[[Action], Outcome] | None = None, delay_s: float = 0.0) -> None:
        self.actions: list[Action] = []
        self._respond = respond
        self._delay_s = delay_s
        self.changed = asyncio.Event()

    async def execute(self, action: Action) -> Outcome:
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        self.actions.append(action)
        self.changed.set()
        if self._respond is not None:
            return self._respond(action)
        return Outcome(action=action, status=OutcomeStatus.APPLIED)

    def verbs(self) -> list[tuple[str, str]]:
        """(verb, target key) pairs, in the order they were executed."""
        return [(a.verb, a.target.key) for a in self.actions]
