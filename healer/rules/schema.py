"""The shape of a rule file, checked when it is loaded rather than at 3 a.m.

Rules are data (`rules/*.yaml`): what to match on a Node or Pod, for how long, which actions
from a closed vocabulary to plan, how to tell people, and the guards that bound it all.
Every model forbids unknown keys, so a typo is an error naming the field instead of a rule
that silently never fires. Durations are written `30s`, `5m`, `1h` (or combined: `1h30m`).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BeforeValidator, Field, PlainSerializer

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """`30s`, `5m`, `1h`, `1h30m`, `2d` (an existing timedelta passes through)."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")
    text = value.strip()
    pos = 0
    seconds = 0.0
    for part in _DURATION_PART.finditer(text):
        if part.start() != pos:
            break
        seconds += int(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of `parse_duration`, shortest form: 90s -> `1m30s`."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            out += f"{total // size}{unit}"
            total %= size
    return out


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]

ConditionStatusName = Literal["True", "False", "Unknown"]


def _status_name(value: object) -> object:
    """YAML reads `False` as a boolean; condition statuses are strings."""
    return ("True" if value else "False") if isinstance(value, bool) else value


def _status_names(value: object) -> object:
    items = value if isinstance(value, list | tuple) else [value]
    return [_status_name(v) for v in items]


class Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- matching -----------------------------------------------------------------------------------


class ConditionMatch(Model):
    """A node condition: `type`, one of `status`, and optionally a `reason` glob (`Xid*`)."""

    type: str = Field(min_length=1)
    status: Annotated[tuple[ConditionStatusName, ...], BeforeValidator(_status_names)] = Field(min_length=1)
    reason: str | None = None


class Match(Model):
    """What a rule looks at. `for` is measured from the condition's lastTransitionTime."""

    kind: Literal["Node", "Pod"]
    condition: ConditionMatch | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")
    gpu_class: tuple[str, ...] | None = None
    phase: tuple[str, ...] | None = None
    reason: str | None = None
    finished_for: Duration | None = None

    @pydantic.model_validator(mode="after")
    def _fits_kind(self) -> Match:
        if self.kind == "Node":
            if self.condition is None:
                raise ValueError("a Node match needs `condition`")
            for key in ("phase", "reason", "finished_for"):
                if getattr(self, key) is not None:
                    raise ValueError(f"`{key}` applies to Pod matches, not Node")
            if self.gpu_class is not None and self.condition.type != "GPUHealthy":
                raise ValueError("`gpu_class` needs `condition.type: GPUHealthy`")
        else:
            if self.condition is not None or self.gpu_class is not None:
                raise ValueError("`condition` and `gpu_class` apply to Node matches, not Pod")
            if self.for_:
                raise ValueError("a Pod match uses `finished_for`, not `for`")
        return self


# --- actions ------------------------------------------------------------------------------------


class Empty(Model):
    pass


class UncordonSpec(Model):
    """Uncordon only nodes that healer cordoned, and only if one of these rules did it."""

    cordoned_by: tuple[str, ...] = ()


class TaintSpec(Model):
    key: str = Field(min_length=1)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"
    value: str = ""


class UntaintSpec(Model):
    key: str = Field(min_length=1)


class SetConditionSpec(Model):
    type: str = Field(min_length=1)
    status: Annotated[ConditionStatusName, BeforeValidator(_status_name)]
    reason: str = Field(min_length=1)
    message: str = ""


ACTION_NAMES = (
    "cordon",
    "uncordon",
    "taint",
    "untaint",
    "release-pods",
    "evict-gpu-pods",
    "delete",
    "set-condition",
)


def _action_shorthand(value: object) -> object:
    """`- cordon` is short for `- cordon: {}`; `- cordon:` (null) too."""
    if isinstance(value, str):
        return {value: {}}
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


class ActionSpec(Model):
    """Exactly one action from the vocabulary.

    - `cordon`: mark the node unschedulable (the executor records `healer.io/cordoned-by`).
    - `uncordon`: undo healer's own cordon.
    - `taint` / `untaint`: add or remove a taint on the node.
    - `release-pods`: force-delete the pods of a node that cannot finish them, within the
      eligibility rules (ReplicaSet/Job pods; StatefulSet and single-attach volume pods only
      once fenced; never node-local volumes, DaemonSet or mirror pods; bare pods reported).
    - `evict-gpu-pods`: evict the pods that request GPUs, through the Eviction API.
    - `delete`: delete the matched pod (e.g. an Evicted pod that already finished).
    - `set-condition`: set a condition on the node.
    """

    cordon: Empty | None = None
    uncordon: UncordonSpec | None = None
    taint: TaintSpec | None = None
    untaint: UntaintSpec | None = None
    release_pods: Empty | None = Field(default=None, alias="release-pods")
    evict_gpu_pods: Empty | None = Field(default=None, alias="evict-gpu-pods")
    delete: Empty | None = None
    set_condition: SetConditionSpec | None = Field(default=None, alias="set-condition")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return _action_shorthand(data)

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> ActionSpec:
        if len(self.names) != 1:
            raise ValueError(f"each action names exactly one of: {', '.join(ACTION_NAMES)}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name in ACTION_NAMES if getattr(self, name.replace("-", "_")) is not None)

    @property
    def name(self) -> str:
        return self.names[0]


# --- notifications, limits, the rule ----------------------------------------------------------


class NotifySpec(Model):
    """How to tell people. `title` may use `{node}`, `{rule}`; `stage: resolved` closes the incident."""

    title: str = Field(min_length=1)
    severity: Literal["info", "warning", "critical"] = "warning"
    tags: tuple[str, ...] = ()
    stage: Literal["opened", "resolved"] = "opened"


class Limits(Model):
    """At most `max_actions` mutating actions per plan from this rule; the rest are held (`limit`)."""

    max_actions: int | None = Field(default=None, ge=1)


RULE_NAME = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
REMEDIATING = frozenset({"cordon", "taint", "release-pods", "evict-gpu-pods"})


class Rule(Model):
    name: str = Field(pattern=RULE_NAME)
    description: str = ""
    scope: Literal["cluster", "node"]
    match: Match
    actions: tuple[ActionSpec, ...] = ()
    notify: NotifySpec | None = None
    incident: str = Field(default="{rule}/{node}", min_length=1)
    cooldown: Duration = timedelta(0)
    limits: Limits = Limits()

    @pydantic.model_validator(mode="after")
    def _coherent(self) -> Rule:
        if not self.actions and self.notify is None:
            raise ValueError("a rule needs `actions` or `notify`")
        names = [a.name for a in self.actions]
        node_only = set(ACTION_NAMES) - {"delete"}  # every action but delete acts on a Node
        if self.match.kind == "Pod" and (bad := sorted(node_only & set(names))):
            raise ValueError(f"actions {bad} act on nodes; this rule matches Pods")
        if self.match.kind == "Node" and "delete" in names:
            raise ValueError("`delete` deletes the matched Pod; this rule matches Nodes")
        try:
            self.incident.format(rule=self.name, node="n")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"incident: only {{rule}} and {{node}} may be used ({e})") from e
        return self

    @property
    def remediates(self) -> bool:
        """Counts against the per-node budget (it changes a node or moves its pods)."""
        return any(a.name in REMEDIATING for a in self.actions)


# --- guards and the GPU policy ------------------------------------------------------------------


def _fraction(value: object) -> object:
    """`1/3` reads better than 0.3333 and is exact."""
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            return int(num) / int(den)
        except (ValueError, ZeroDivisionError) as e:
            raise ValueError(f"expected a fraction such as 1/3 or 0.25, got {value!r}") from e
    return value


class StormGuard(Model):
    """No pod is deleted or evicted while more than max(min_unhealthy, fraction x nodes) are unhealthy."""

    fraction: Annotated[float, BeforeValidator(_fraction)] = Field(default=1 / 3, gt=0, le=1)
    min_unhealthy: int = Field(default=1, ge=0)

    def threshold(self, nodes: int) -> int:
        return max(self.min_unhealthy, int(nodes * self.fraction + 1e-9))


class BudgetGuard(Model):
    """At most `max` remediations per node per `window` (from `healer.io/remediations`)."""

    max: int = Field(default=3, ge=1)
    window: Duration = timedelta(hours=24)


class ProtectedGuard(Model):
    """Nodes matching any selector (`key` exists, or `key=value`) get alerts only."""

    selectors: tuple[str, ...] = (
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
        "healer.io/protected=true",
    )


class Guards(Model):
    storm: StormGuard = StormGuard()
    budget: BudgetGuard = BudgetGuard()
    protected: ProtectedGuard = ProtectedGuard()


GPU_CLASSES = ("application", "reset", "reboot", "rma", "ignore", "unknown")
GpuClass = Literal["application", "reset", "reboot", "rma", "ignore", "unknown"]


class GpuRepeat(Model):
    count: int = Field(default=3, ge=2)
    window: Duration = timedelta(minutes=10)
    escalate_to: GpuClass = "reset"


class GpuRecovery(Model):
    healthy_for: Duration = timedelta(minutes=5)


class GpuPolicy(Model):
    """XID and NVML signal classes; see docs/contracts.md. Unknown XIDs are class `unknown`."""

    xid_classes: dict[GpuClass, tuple[int, ...]] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "application": (13, 31, 43, 45, 68),
            "reset": (46, 48, 62, 64, 74, 95, 109, 119, 120, 140, 143),
            "reboot": (79,),
            "ignore": (63, 92, 94),
        }
    )
    signal_classes: dict[str, GpuClass] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "ecc-dbe": "reset",
            "row-remap-pending": "reset",
            "row-remap-failure": "rma",
            "retired-pages-pending": "reset",
            "gpu-lost": "reboot",
        }
    )
    repeat: GpuRepeat = GpuRepeat()
    recovery: GpuRecovery = GpuRecovery()
    last_gpu_node: Literal["keep", "evict"] = "keep"

    @pydantic.model_validator(mode="after")
    def _each_xid_once(self) -> GpuPolicy:
        seen: dict[int, str] = {}
        for cls, xids in self.xid_classes.items():
            for xid in xids:
                if xid in seen:
                    raise ValueError(f"XID {xid} is in both {seen[xid]} and {cls}")
                seen[xid] = cls
        return self

    def xid_class(self, xid: int) -> str:
        for cls, xids in self.xid_classes.items():
            if xid in xids:
                return cls
        return "unknown"


class RuleFile(Model):
    """One file: any of `rules`, `guards`, `gpu` (guards and gpu at most once across files)."""

    rules: tuple[Rule, ...] = ()
    guards: Guards | None = None
    gpu: GpuPolicy | None = None


class RuleSet(Model):
    """Everything loaded from a rules directory, in file then rule order."""

    rules: tuple[Rule, ...] = ()
    guards: Guards = Guards()
    gpu: GpuPolicy = GpuPolicy()
    sources: tuple[str, ...] = ()

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)
