"""Does a rule's `match` hold for this node or pod at `now`, and what does it say about it?

`for` is measured from the condition's lastTransitionTime: a condition that only just
changed (a flapping node) has not held long enough and matches nothing.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from healer.model import names
from healer.model.view import Condition, Node, Pod
from healer.rules import schema

_XID = re.compile(r"^Xid(\d+)$")
_CLASS = re.compile(r"\bclass=([a-z-]+)")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFinding:
    """A node rule that holds: the condition and for how long."""

    condition: Condition
    held_for: timedelta
    gpu_class: str = ""


def ago(delta: timedelta) -> str:
    """A short human duration: `45s`, `5m 10s`, `3h 2m`, `2d 4h`."""
    s = max(0, int(delta.total_seconds()))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s" if s else f"{m}m"
    return f"{s}s"


def condition_age(cond: Condition, *, now: datetime) -> timedelta:
    """How long the condition has had its status; unknown transition time counts as just now."""
    since = cond.last_transition or cond.last_heartbeat
    return now - since if since else timedelta(0)


def gpu_class(cond: Condition, *, policy: schema.GpuPolicy) -> str:
    """The class of a GPUHealthy=False condition: the agent's `class=` in the message wins
    (it applies repeat escalation), else the reason through the policy's tables."""
    found = _CLASS.search(cond.message)
    if found and found.group(1) in schema.GPU_CLASSES:
        return found.group(1)
    xid = _XID.match(cond.reason)
    if xid:
        return policy.xid_class(int(xid.group(1)))
    signal = _CAMEL.sub("-", cond.reason).lower()
    return policy.signal_classes.get(signal, "unknown")


def node_finding(
    rule: schema.Rule, *, node: Node, now: datetime, gpu: schema.GpuPolicy, ignore_for: bool = False
) -> NodeFinding | None:
    """The rule's condition on this node, if it holds (and has held `for` long, unless `ignore_for`)."""
    match = rule.match
    want = match.condition
    if match.kind != "Node" or want is None:
        return None
    cond = node.condition(want.type)
    if cond is None:
        if want.type != "Ready":
            return None
        # a node that never reported Ready is Unknown since it was created
        cond = Condition(type="Ready", status=node.ready, last_transition=node.created)
    if cond.status.value not in want.status:
        return None
    if want.reason is not None and not fnmatch.fnmatchcase(cond.reason, want.reason):
        return None
    age = condition_age(cond, now=now)
    if age < match.for_ and not ignore_for:
        return None
    cls = ""
    if want.type == names.GPU_CONDITION and cond.status.value == "False":
        cls = gpu_class(cond, policy=gpu)
    if match.gpu_class is not None and cls not in match.gpu_class:
        return None
    return NodeFinding(condition=cond, held_for=age, gpu_class=cls)


def pod_finished_at(pod: Pod) -> datetime | None:
    """When the pod stopped: its last container's finish, else its start, else its creation."""
    return pod.finished or pod.started or pod.created


def pod_matches(rule: schema.Rule, *, pod: Pod, now: datetime) -> bool:
    match = rule.match
    if match.kind != "Pod":
        return False
    if match.phase is not None and pod.phase not in match.phase:
        return False
    if match.reason is not None and not fnmatch.fnmatchcase(pod.reason, match.reason):
        return False
    if match.finished_for is not None:
        at = pod_finished_at(pod)
        if at is None or now - at < match.finished_for:
            return False
    return True


def describe(node: Node, *, finding: NodeFinding) -> str:
    """`Ready=Unknown for 2d 4h (NodeStatusUnknown)`."""
    cond = finding.condition
    reason = f" ({cond.reason})" if cond.reason else ""
    return f"{cond.type}={cond.status.value} for {ago(finding.held_for)}{reason}"


def node_selected(node: Node, *, selectors: tuple[str, ...]) -> str:
    """The first selector (`key` or `key=value`) the node's labels satisfy, or ""."""
    for sel in selectors:
        key, eq, value = sel.partition("=")
        if key in node.labels and (not eq or node.labels[key] == value):
            return sel
    return ""
