"""GPU health as a pure function: NVML signals + GPU policy + now -> per-GPU faults and actions.

The node agent feeds every `GpuSignal` its NVML source yields through `step`; this module
decides, without I/O, which GPUs are faulty, what the node's `GPUHealthy` condition must say,
and when a GPU has recovered. The remediation itself (taint, cordon, evicting GPU pods, the
last-GPU-node policy, alerts) belongs to the engine's node-scoped GPU rules, which react to
the condition this module publishes; so the condition message carries everything they and a
human need: GPU index, UUID, the fault's reason, its class and what to do about it.

Classes (from the policy): `application` faults are logged, and only a repeat of the same
one on one GPU (`repeat.count` within `repeat.window`) escalates to `repeat.escalate_to`;
`reset`, `reboot` and `rma` faults make the GPU unhealthy; `ignore` is dropped; an XID the
policy does not name is `unknown` and only alerts. Non-XID signals the policy does not name
(throttling, temperature, single-bit ECC unless mapped) are logged, except the driver's
recovery action, which classifies itself (1, 3, 4: reset; 2: reboot). An `unknown` XID sets
the condition False with `class=unknown` (the `gpu-unknown-fault` rule alerts, nothing is
quarantined) and clears after `healthy_for` without needing a reset.

Recovery, per GPU: a poll found it healthy at least `recovery.healthy_for` after its last bad
signal, and, for reset, reboot and rma faults, a reset was seen after the fault began. "A
reset was seen" means one of: the NVML source reported `GpuSignalKind.RESET` (the GPU
answered again after it was lost, its volatile ECC counters or its energy counter restarted,
a pending row remap or page retirement was applied, or the recovery action went back to 0),
or the node booted after the fault began (`boot_time`, which covers a fault inherited
from the node condition after the agent restarted), or an operator annotated the node
`healer.io/gpu-reset-at` with a time after the fault began (a reset done while healer was
stopped, which no counter can show to a fresh process). When the last fault clears the condition
goes back to True; if the node then offers fewer `nvidia.com/gpu` than it has, the NVIDIA
device plugin left the device unhealthy, so its pod on this node is deleted (its DaemonSet
recreates it and the new one re-registers the healthy device).

State is the frozen `GpuHealth` value: `start` makes it, `step` and `after` return the next.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from healer.model import names
from healer.model.actions import Action, Delete, Outcome, OutcomeStatus, SetCondition
from healer.model.events import GpuSignal, GpuSignalKind
from healer.model.view import ConditionStatus, Node, ObjectRef, Pod
from healer.rules import schema

RULE = "gpu-health"


class GpuClass(StrEnum):
    APPLICATION = "application"
    RESET = "reset"
    REBOOT = "reboot"
    RMA = "rma"
    IGNORE = "ignore"
    UNKNOWN = "unknown"
    LOG = "log"  # a non-XID signal the policy does not classify


# how bad a fault class is; the node condition names the worst fault first
_SEVERITY: Mapping[GpuClass, int] = MappingProxyType(
    {GpuClass.UNKNOWN: 0, GpuClass.RESET: 1, GpuClass.REBOOT: 2, GpuClass.RMA: 3}
)
FAULT_CLASSES = frozenset(_SEVERITY)  # classes that set GPUHealthy=False
NEEDS_RESET = frozenset({GpuClass.RESET, GpuClass.REBOOT, GpuClass.RMA})

ADVICE: Mapping[GpuClass, str] = MappingProxyType(
    {
        GpuClass.RESET: (
            "reset the GPU (drain it, stop what holds NVML, then nvidia-smi -r -i {index}) or reboot the"
            " node (a reset healer did not watch counts once the node is annotated"
            f" {names.GPU_RESET_AT}=<RFC 3339 time>)"
        ),
        GpuClass.REBOOT: "reboot (power-cycle) the node",
        GpuClass.RMA: "the GPU needs replacing (RMA): contact the vendor with nvidia-bug-report.sh output",
        GpuClass.UNKNOWN: "look the error up in NVIDIA's XID catalog; healer takes no action",
    }
)

# labels that mark the NVIDIA device plugin's pods (static manifest, Helm chart, GPU operator)
DEVICE_PLUGIN_LABELS: tuple[tuple[str, str], ...] = (
    ("name", "nvidia-device-plugin-ds"),
    ("app.kubernetes.io/name", "nvidia-device-plugin"),
    ("app", "nvidia-device-plugin-daemonset"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RepeatPolicy:
    count: int = 3
    window: timedelta = timedelta(minutes=10)
    escalate_to: GpuClass = GpuClass.RESET


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuPolicy:
    """The `gpu:` section of the rules (contract shape), as this module uses it."""

    xid_classes: Mapping[int, GpuClass] = field(default_factory=dict)
    signal_classes: Mapping[GpuSignalKind, GpuClass] = field(default_factory=dict)
    repeat: RepeatPolicy = field(default_factory=RepeatPolicy)
    healthy_for: timedelta = timedelta(minutes=5)
    last_gpu_node: str = "keep"
    device_plugin_labels: tuple[tuple[str, str], ...] = DEVICE_PLUGIN_LABELS


def from_rules(gpu: schema.GpuPolicy) -> GpuPolicy:
    """The rules' `gpu:` section as this module uses it; signal names it does not know are ignored."""
    kinds = {k.value: k for k in GpuSignalKind}
    return GpuPolicy(
        xid_classes=MappingProxyType(
            {xid: GpuClass(cls) for cls, xids in gpu.xid_classes.items() for xid in xids}
        ),
        signal_classes=MappingProxyType(
            {kinds[name]: GpuClass(cls) for name, cls in gpu.signal_classes.items() if name in kinds}
        ),
        repeat=RepeatPolicy(
            count=gpu.repeat.count, window=gpu.repeat.window, escalate_to=GpuClass(gpu.repeat.escalate_to)
        ),
        healthy_for=gpu.recovery.healthy_for,
        last_gpu_node=gpu.last_gpu_node,
    )


DEFAULT_POLICY = from_rules(schema.GpuPolicy())


@dataclass(frozen=True, slots=True, kw_only=True)
class Gpu:
    index: int
    uuid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """The worst unhealthy fault on one GPU since it was last healthy."""

    gpu: Gpu
    cls: GpuClass
    reason: str  # condition reason: Xid79, EccDbe, ...
    detail: str
    since: datetime
    last_seen: datetime  # last bad signal: the healthy_for clock starts here
    reset_seen: bool = False

    def describe(self) -> str:
        advice = ADVICE[self.cls].format(index=self.gpu.index)
        return (
            f"GPU {self.gpu.index} {self.gpu.uuid} {self.reason} class={self.cls}: {self.detail}; "
            f"to do: {advice}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    status: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuHealth:
    node: str
    gpus: tuple[Gpu, ...]
    events: bool = True  # False: NVML events unavailable, polling only (no XIDs)
    faults: tuple[Fault, ...] = ()  # at most one per GPU index
    recent: tuple[tuple[int, str, datetime], ...] = ()  # (gpu index, reason, at) of application faults
    published: Published | None = None  # what the node condition says (or was last asked to)
    boot_time: datetime | None = None

    def fault(self, index: int) -> Fault | None:
        return next((f for f in self.faults if f.gpu.index == index), None)

    @property
    def healthy(self) -> bool:
        return not self.faults


@dataclass(frozen=True, slots=True, kw_only=True)
class Note:
    """Something worth a log line; the agent logs it (this module does no I/O)."""

    level: str  # debug | info | warning
    event: str
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    state: GpuHealth
    actions: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()


def incident(node: str) -> str:
    return f"gpu/{node}"


def signal_reason(signal: GpuSignal) -> str:
    """`Xid79` for XIDs, the signal kind in CamelCase otherwise (`EccDbe`, `RowRemapPending`, `GpuLost`)."""
    if signal.kind is GpuSignalKind.XID:
        return f"Xid{signal.xid}"
    return "".join(part.capitalize() for part in signal.kind.value.split("-"))


# NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: what the driver says the GPU needs (1 reset, 2 node
# reboot, 3 drain peer-to-peer, 4 drain and reset). Used when the policy names no class for
# `recovery-action`: the driver's own verdict is the best classification there is.
RECOVERY_ACTION_CLASSES: Mapping[int, GpuClass] = MappingProxyType(
    {1: GpuClass.RESET, 2: GpuClass.REBOOT, 3: GpuClass.RESET, 4: GpuClass.RESET}
)
XID_RECOVERY_ACTION_CHANGED = 154  # announces the field above, which the source then polls


def classify(signal: GpuSignal, policy: GpuPolicy) -> GpuClass:
    if signal.kind is GpuSignalKind.XID:
        xid = signal.xid or 0
        if xid == XID_RECOVERY_ACTION_CHANGED and xid not in policy.xid_classes:
            return GpuClass.IGNORE  # the RECOVERY_ACTION signal from the poll it triggers decides
        return policy.xid_classes.get(xid, GpuClass.UNKNOWN)
    if signal.kind in (GpuSignalKind.HEALTHY, GpuSignalKind.RESET):
        return GpuClass.IGNORE
    if signal.kind is GpuSignalKind.RECOVERY_ACTION and signal.kind not in policy.signal_classes:
        return RECOVERY_ACTION_CLASSES.get(signal.value, GpuClass.UNKNOWN)
    return policy.signal_classes.get(signal.kind, GpuClass.LOG)


_FAULT_RE = re.compile(
    r"GPU (?P<index>-?\d+) (?P<uuid>\S+) (?P<reason>\w+) class=(?P<cls>[a-z]+): (?P<detail>[^;]*)"
)


def start(
    *,
    node: str,
    gpus: Sequence[Gpu],
    now: datetime,
    current: Node | None = None,
    events: bool = True,
    boot_time: datetime | None = None,
) -> GpuHealth:
    """The state for an agent that just started: faults inherited from the node's condition.

    A GPUHealthy=False condition written by an earlier run is parsed back into faults (their
    healthy_for clock restarts now; a reset counts as seen if the node booted after the fault).
    """
    state = GpuHealth(node=node, gpus=tuple(gpus), events=events, boot_time=boot_time)
    cond = current.condition(names.GPU_CONDITION) if current else None
    if cond is None:
        return state
    published = Published(status=cond.status.value, reason=cond.reason, message=cond.message)
    faults: list[Fault] = []
    if cond.status is ConditionStatus.FALSE:
        since = cond.last_transition or now
        by_index = {g.index: g for g in gpus}
        for m in _FAULT_RE.finditer(cond.message):
            try:
                cls = GpuClass(m["cls"])
            except ValueError:
                continue
            if cls not in FAULT_CLASSES:
                continue
            index = int(m["index"])
            gpu = by_index.get(index, Gpu(index=index, uuid=m["uuid"]))
            reset = gpu.uuid != m["uuid"] or (boot_time is not None and boot_time > since)
            reset = reset or cls not in NEEDS_RESET
            faults.append(
                Fault(
                    gpu=gpu,
                    cls=cls,
                    reason=m["reason"],
                    detail=m["detail"].strip(),
                    since=since,
                    last_seen=now,
                    reset_seen=reset,
                )
            )
    return replace(state, faults=tuple(faults), published=published)


def step(
    *,
    state: GpuHealth,
    signals: Iterable[GpuSignal],
    policy: GpuPolicy,
    now: datetime,
    node: Node | None = None,
    pods: Iterable[Pod] = (),
) -> Step:
    """Apply `signals` (in order), then decide the condition and any recovery action."""
    notes: list[Note] = []
    actions: list[Action] = []
    state = _operator_reset(state, node=node, notes=notes)
    for signal in signals:
        state = _apply(state, signal, policy=policy, notes=notes, actions=actions)
    window_start = now - policy.repeat.window
    state = replace(state, recent=tuple(r for r in state.recent if r[2] >= window_start))
    desired = desired_condition(state)
    if desired != state.published:
        actions.append(
            SetCondition(
                target=ObjectRef(kind="Node", name=state.node),
                rule=RULE,
                reason=desired.message,
                incident=incident(state.node),
                type=names.GPU_CONDITION,
                status=desired.status,
                cond_reason=desired.reason,
                message=desired.message,
            )
        )
        was_unhealthy = state.published is not None and state.published.status == ConditionStatus.FALSE.value
        if was_unhealthy and desired.status == ConditionStatus.TRUE.value:
            actions.extend(_restart_device_plugin(state, policy=policy, node=node, pods=pods, notes=notes))
        state = replace(state, published=desired)
    return Step(state=state, actions=tuple(actions), notes=tuple(notes))


def after(state: GpuHealth, *, outcomes: Iterable[Outcome]) -> GpuHealth:
    """Forget a condition write that failed, so the next `step` asks for it again."""
    for outcome in outcomes:
        if isinstance(outcome.action, SetCondition) and outcome.status is OutcomeStatus.FAILED:
            return replace(state, published=None)
    return state


def desired_condition(state: GpuHealth) -> Published:
    if state.faults:
        ordered = sorted(state.faults, key=lambda f: (-_SEVERITY[f.cls], f.gpu.index))  # worst first
        message = "; ".join(f.describe() for f in ordered)
        return Published(status=ConditionStatus.FALSE.value, reason=ordered[0].reason, message=message)
    listed = ", ".join(f"GPU {g.index} {g.uuid}" for g in state.gpus) or "no GPUs"
    message = f"healthy: {listed}"
    if not state.events:
        message += " (NVML events not permitted: polling only, XIDs not seen)"
    return Published(status=ConditionStatus.TRUE.value, reason="GpuHealthy", message=message)


def _gpu_of(state: GpuHealth, signal: GpuSignal) -> Gpu:
    for gpu in state.gpus:
        if gpu.index == signal.gpu_index:
            return gpu
    return Gpu(index=signal.gpu_index, uuid=signal.gpu_uuid)


def _fields(signal: GpuSignal, **extra: str) -> tuple[tuple[str, str], ...]:
    base = {"gpu": str(signal.gpu_index), "uuid": signal.gpu_uuid, "signal": signal_reason(signal)}
    if signal.detail:
        base["detail"] = signal.detail
    return tuple({**base, **extra}.items())


def _apply(
    state: GpuHealth,
    signal: GpuSignal,
    *,
    policy: GpuPolicy,
    notes: list[Note],
    actions: list[Action],
) -> GpuHealth:
    gpu = _gpu_of(state, signal)
    fault = state.fault(gpu.index)
    if signal.kind is GpuSignalKind.RESET:
        if fault and not fault.reset_seen and signal.at >= fault.since:
            notes.append(Note(level="info", event="gpu reset seen", fields=_fields(signal)))
            return _put(state, replace(fault, reset_seen=True))
        return state
    if signal.kind is GpuSignalKind.HEALTHY:
        if fault and _recovered(fault, at=signal.at, policy=policy):
            notes.append(Note(level="info", event="gpu recovered", fields=_fields(signal, was=fault.reason)))
            return replace(state, faults=tuple(f for f in state.faults if f.gpu.index != gpu.index))
        return state
    cls = classify(signal, policy)
    reason = signal_reason(signal)
    detail = signal.detail or reason
    if cls is GpuClass.IGNORE:
        notes.append(Note(level="debug", event="gpu signal ignored", fields=_fields(signal)))
        return state
    if cls is GpuClass.LOG:
        notes.append(Note(level="info", event="gpu signal", fields=_fields(signal, value=str(signal.value))))
        return state
    if cls is GpuClass.APPLICATION:
        recent = (*state.recent, (gpu.index, reason, signal.at))
        window_start = signal.at - policy.repeat.window
        recent = tuple(r for r in recent if r[2] >= window_start)
        count = sum(1 for r in recent if r[0] == gpu.index and r[1] == reason)
        if count < policy.repeat.count:
            notes.append(
                Note(level="info", event="gpu application fault", fields=_fields(signal, count=str(count)))
            )
            return replace(state, recent=recent)
        recent = tuple(r for r in recent if not (r[0] == gpu.index and r[1] == reason))
        state = replace(state, recent=recent)
        cls = policy.repeat.escalate_to
        detail = f"{detail} repeated {count} times within {_span(policy.repeat.window)}"
        if cls not in FAULT_CLASSES:
            notes.append(Note(level="warning", event="gpu fault repeating", fields=_fields(signal)))
            return state
    notes.append(Note(level="warning", event="gpu fault", fields=_fields(signal, cls=cls.value)))
    if fault is None:
        fault = Fault(gpu=gpu, cls=cls, reason=reason, detail=detail, since=signal.at, last_seen=signal.at)
    elif _SEVERITY[cls] > _SEVERITY[fault.cls]:
        fault = replace(fault, cls=cls, reason=reason, detail=detail)
    last_seen = max(fault.last_seen, signal.at)
    return _put(state, replace(fault, last_seen=last_seen, reset_seen=fault.cls not in NEEDS_RESET))


def _operator_reset(state: GpuHealth, *, node: Node | None, notes: list[Note]) -> GpuHealth:
    """`healer.io/gpu-reset-at` on the node: an operator says the GPUs were reset at that time."""
    raw = node.annotations.get(names.GPU_RESET_AT) if node is not None else None
    if not raw or all(f.reset_seen for f in state.faults):
        return state
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        notes.append(
            Note(level="warning", event="unreadable annotation", fields=((names.GPU_RESET_AT, raw),))
        )
        return state
    if at.tzinfo is None:
        notes.append(
            Note(level="warning", event="annotation needs a time zone", fields=((names.GPU_RESET_AT, raw),))
        )
        return state
    for fault in state.faults:
        if not fault.reset_seen and at >= fault.since:
            notes.append(
                Note(
                    level="info",
                    event="gpu reset reported by operator",
                    fields=(("gpu", str(fault.gpu.index)),),
                )
            )
            state = _put(state, replace(fault, reset_seen=True))
    return state


def _recovered(fault: Fault, *, at: datetime, policy: GpuPolicy) -> bool:
    return (fault.reset_seen or fault.cls not in NEEDS_RESET) and at - fault.last_seen >= policy.healthy_for


def _put(state: GpuHealth, fault: Fault) -> GpuHealth:
    others = tuple(f for f in state.faults if f.gpu.index != fault.gpu.index)
    return replace(state, faults=tuple(sorted((*others, fault), key=lambda f: f.gpu.index)))


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def is_device_plugin(pod: Pod, *, labels: Sequence[tuple[str, str]] = DEVICE_PLUGIN_LABELS) -> bool:
    return any(pod.labels.get(k) == v for k, v in labels)


def _restart_device_plugin(
    state: GpuHealth,
    *,
    policy: GpuPolicy,
    node: Node | None,
    pods: Iterable[Pod],
    notes: list[Note],
) -> list[Action]:
    if node is None or node.gpu_allocatable >= node.gpu_capacity:
        return []
    plugins = [
        p
        for p in pods
        if p.node_name == state.node
        and not p.terminating
        and is_device_plugin(p, labels=policy.device_plugin_labels)
    ]
    if not plugins:
        notes.append(
            Note(
                level="warning",
                event="gpu capacity not restored: no NVIDIA device plugin pod found on the node",
                fields=(("allocatable", str(node.gpu_allocatable)), ("capacity", str(node.gpu_capacity))),
            )
        )
        return []
    return [
        Delete(
            target=p.ref,
            rule=RULE,
            reason=(
                f"GPU recovered but {names.GPU_RESOURCE} allocatable {node.gpu_allocatable} < capacity "
                f"{node.gpu_capacity}: restart the device plugin so it re-registers the healthy device"
            ),
            incident=incident(state.node),
        )
        for p in plugins
    ]
