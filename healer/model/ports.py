"""The seams between deciding and doing, as Protocols.

Executors (live, dry-run, recording) carry out actions; every layer that needs one takes
it as a parameter typed by this Protocol, so the GPU agent, the daemon and the tests can
swap a live executor for a dry-run one without knowing which they hold.
"""

from __future__ import annotations

from typing import Protocol

from healer.model.actions import Action, Outcome


class Executor(Protocol):
    """Carries out one action and says what came of it; never raises for API errors."""

    async def execute(self, action: Action) -> Outcome: ...
