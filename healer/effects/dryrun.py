"""The dry-run executor: the whole daemon runs, decides and reports, but never writes.

`healer run --dry-run` swaps this in for the live executor, so what an operator sees in the
logs is exactly what the live daemon would have done, action for action. Nothing is
written, so the engine plans the same actions again on every tick; each one is logged at
info the first time and at debug after that, so the log stays readable.
"""

from __future__ import annotations

import structlog

from healer.model.actions import Action, Outcome, OutcomeStatus, as_row

log = structlog.get_logger(__name__)

DRY_RUN = "dry-run"


class DryRunExecutor:
    """Logs each action and returns SKIPPED with detail "dry-run"."""

    def __init__(self) -> None:
        self._told: set[tuple[str, ...]] = set()

    async def execute(self, action: Action) -> Outcome:
        row = as_row(action)
        key = tuple(row.values())
        emit = log.debug if key in self._told else log.info
        self._told.add(key)
        emit("would act", dry_run=True, incident=action.incident, **row)
        return Outcome(action=action, status=OutcomeStatus.SKIPPED, detail=DRY_RUN)
