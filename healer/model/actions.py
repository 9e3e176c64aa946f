"""The typed actions a plan is made of, and the plan itself.

The engine decides; executors do. Each action names the rule that asked for it and a
human reason, so `healer plan`, the logs, the Kubernetes Events and the chat alerts all
tell the same story. `Held` is an action a guard stopped, with the guard's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from healer.model.view import ObjectRef


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Stage(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Action:
    """Fields every action has. `verb` is the name used in plans, logs and JSON output."""

    verb: ClassVar[str] = ""
    target: ObjectRef
    rule: str
    reason: str
    incident: str = ""  # groups the actions of one remediation into one story, e.g. "node-not-ready/styx"

    @property
    def kind(self) -> str:
        return self.target.kind

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @property
    def name(self) -> str:
        return self.target.name


@dataclass(frozen=True, slots=True, kw_only=True)
class Cordon(_Action):
    verb: ClassVar[str] = "cordon"


@dataclass(frozen=True, slots=True, kw_only=True)
class Uncordon(_Action):
    verb: ClassVar[str] = "uncordon"


@dataclass(frozen=True, slots=True, kw_only=True)
class AddTaint(_Action):
    verb: ClassVar[str] = "taint"
    key: str
    effect: str = "NoSchedule"
    value: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveTaint(_Action):
    verb: ClassVar[str] = "untaint"
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Evict(_Action):
    """Eviction API: PodDisruptionBudgets hold; a 429 is retried later, never forced."""

    verb: ClassVar[str] = "evict"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete(_Action):
    """An ordinary delete (e.g. an Evicted pod that already finished)."""

    verb: ClassVar[str] = "delete"


@dataclass(frozen=True, slots=True, kw_only=True)
class ForceDelete(_Action):
    """Grace period 0 with a UID precondition: only for pods on a node that cannot finish them."""

    verb: ClassVar[str] = "force-delete"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetCondition(_Action):
    verb: ClassVar[str] = "set-condition"
    type: str
    status: str
    cond_reason: str
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify(_Action):
    """A message for humans about `target` (the subject, e.g. the node).

    `incident` (set on every action of the remediation) lets the notifier tell one story
    per incident; `stage` says whether this opens, updates or resolves it; `facts` are
    (label, text) lines the notifier renders.
    """

    verb: ClassVar[str] = "notify"
    title: str
    stage: Stage = Stage.OPENED
    severity: Severity = Severity.WARNING
    tags: tuple[str, ...] = ()
    facts: tuple[tuple[str, str], ...] = ()
    # what this message reports (action and hold keys): the engine re-notifies an incident
    # only when something not yet covered appears (EngineState remembers what was told)
    covers: tuple[str, ...] = ()


Action = Cordon | Uncordon | AddTaint | RemoveTaint | Evict | Delete | ForceDelete | SetCondition | Notify

VERBS: tuple[str, ...] = (
    "cordon",
    "uncordon",
    "taint",
    "untaint",
    "evict",
    "delete",
    "force-delete",
    "notify",
    "set-condition",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """An action a guard stopped; `guard` names it (storm, protected, budget, cooldown, ...)."""

    action: Action
    guard: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    actions: tuple[Action, ...] = ()
    held: tuple[Held, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.actions or self.held)


def as_row(action: Action) -> dict[str, str]:
    """The JSON shape `healer plan --output json` prints for one action."""
    return {
        "action": action.verb,
        "kind": action.kind,
        "namespace": action.namespace,
        "name": action.name,
        "rule": action.rule,
        "reason": action.reason,
    }


def held_row(held: Held) -> dict[str, str]:
    return {**as_row(held.action), "guard": held.guard}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What an executor made of one action."""

    action: Action
    status: OutcomeStatus
    detail: str = ""
    retryable: bool = False
    extra: tuple[tuple[str, str], ...] = field(default=())


class OutcomeStatus(StrEnum):
    APPLIED = "applied"  # the write happened
    UNCHANGED = "unchanged"  # already so (idempotent no-op)
    SKIPPED = "skipped"  # dry-run, or the object is gone
    FAILED = "failed"
