"""The dry-run executor: the whole daemon runs, decides and reports, but never writes.

`healer run --dry-run` swaps this in for the live executor, so what an operator sees in the
logs is exactly what the live daemon would have done, action for action.
"""

from __future__ import annotations

import structlog

from healer.model.actions import Action, Outcome, OutcomeStatus, as_row

log = structlog.get_logger(__name__)

DRY_RUN = "dry-run"


class DryRunExecutor:
    """Logs each action and returns SKIPPED with detail "dry-run"."""

    async def execute(self, action: Action) -> Outcome:
        log.info("would act", dry_run=True, incident=action.incident, **as_row(action))
        return Outcome(action=action, status=OutcomeStatus.SKIPPED, detail=DRY_RUN)
