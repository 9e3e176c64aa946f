"""What the engine remembers between evaluations, as one frozen value.

Persistent progress (who cordoned a node, how many remediations it had) lives in node
annotations, so a new leader repeats nothing. What is only worth remembering while this
process lives sits here: when each action was last applied (cooldowns) and what each
incident's messages already told people (so an unchanged incident is not re-announced).
The runtime threads it through: `state = state.after(outcomes=..., now=...)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from healer.model import actions

# cooldowns longer than this are not remembered (budgets, in annotations, cover longer spans)
MEMORY = timedelta(days=7)

DoneKey = tuple[str, str, str]  # (rule, verb, "Kind/namespace/name")


def target_key(action: actions.Action) -> str:
    t = action.target
    return f"{t.kind}/{t.namespace}/{t.name}"


def done_key(action: actions.Action) -> DoneKey:
    return (action.rule, action.verb, target_key(action))


@dataclass(frozen=True, slots=True, kw_only=True)
class Told:
    """The last message of an incident: its stage and every action/hold key told so far."""

    stage: actions.Stage
    covers: frozenset[str] = frozenset()
    at: datetime | None = None  # when it was told


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineState:
    done: Mapping[DoneKey, datetime] = field(default_factory=lambda: MappingProxyType({}))
    told: Mapping[str, Told] = field(default_factory=lambda: MappingProxyType({}))

    def last_done(self, action: actions.Action) -> datetime | None:
        return self.done.get(done_key(action))

    def after(self, *, outcomes: Iterable[actions.Outcome], now: datetime) -> EngineState:
        """The state once `outcomes` happened at `now`.

        Applied and unchanged actions start their cooldown; a Notify that was not a failure
        counts as told (a resolved one closes the incident, so the next failure opens anew).
        """
        done = {k: t for k, t in self.done.items() if now - t <= MEMORY}
        told = {
            k: t
            for k, t in self.told.items()
            if not (t.stage is actions.Stage.RESOLVED and t.at is not None and now - t.at > MEMORY)
        }
        for outcome in outcomes:
            action = outcome.action
            if isinstance(action, actions.Notify):
                if outcome.status is actions.OutcomeStatus.FAILED:
                    continue
                before = told.get(action.incident)
                covers = frozenset(action.covers)
                if before is not None and _same_story(before.stage, action.stage):
                    covers |= before.covers
                told[action.incident] = Told(stage=action.stage, covers=covers, at=now)
            elif outcome.status in (actions.OutcomeStatus.APPLIED, actions.OutcomeStatus.UNCHANGED):
                done[done_key(action)] = now
        return EngineState(done=MappingProxyType(done), told=MappingProxyType(told))


def _same_story(a: actions.Stage, b: actions.Stage) -> bool:
    resolved = actions.Stage.RESOLVED
    return (a is resolved) == (b is resolved)
