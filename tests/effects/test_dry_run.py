"""The dry-run executor answers for every verb and needs no API at all, so it cannot write."""

from __future__ import annotations

import inspect

from healer.effects.dryrun import DryRunExecutor
from healer.model.actions import Cordon, ForceDelete, OutcomeStatus
from healer.model.view import ObjectRef


async def test_dry_run_skips_every_action() -> None:
    ex = DryRunExecutor()
    for action in (
        Cordon(target=ObjectRef(kind="Node", name="styx"), rule="r", reason="x"),
        ForceDelete(target=ObjectRef(kind="Pod", namespace="apps", name="p", uid="u"), rule="r", reason="x"),
    ):
        out = await ex.execute(action)
        assert out.status is OutcomeStatus.SKIPPED
        assert out.detail == "dry-run"
    assert list(inspect.signature(DryRunExecutor).parameters) == []  # it holds no API client
