"""Matching details: reason globs, set-condition, nodes that never reported, GPU classes,
and the human text of durations."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from healer.engine import matching
from healer.model import actions
from healer.model.view import Condition, ConditionStatus, Node
from healer.rules import schema
from tests.unit.builders import NOW, RULES, ago, node, plan, rows, view


def _rules(*rules: dict[str, object]) -> schema.RuleSet:
    return schema.RuleSet(rules=tuple(schema.Rule.model_validate(r) for r in rules))


KERNEL_DEADLOCK = {
    "name": "kernel-deadlock",
    "scope": "cluster",
    "match": {
        "kind": "Node",
        "condition": {"type": "KernelDeadlock", "status": ["True"], "reason": "Docker*"},
        "for": "1m",
    },
    "actions": [{"set-condition": {"type": "HealerQuarantine", "status": True, "reason": "KernelDeadlock"}}],
}


@pytest.mark.parametrize(
    ("reason", "for_s", "matches"),
    [("DockerHung", 120, True), ("DockerHung", 30, False), ("KubeletHung", 120, False)],
)
def test_reason_globs_and_set_condition(reason: str, for_s: float, matches: bool) -> None:
    n = node("a")
    n = replace(
        n,
        conditions=(
            *n.conditions,
            Condition(
                type="KernelDeadlock", status=ConditionStatus.TRUE, reason=reason, last_transition=ago(for_s)
            ),
        ),
    )
    p = plan(view(n), rules=_rules(KERNEL_DEADLOCK))
    assert (("set-condition", "a") in rows(p)) is matches
    if matches:
        (action,) = [a for a in p.actions if isinstance(a, actions.SetCondition)]
        assert (action.type, action.status, action.cond_reason) == (
            "HealerQuarantine",
            "True",
            "KernelDeadlock",
        )


def test_set_condition_is_not_repeated_once_set() -> None:
    n = node("a")
    n = replace(
        n,
        conditions=(
            *n.conditions,
            Condition(
                type="KernelDeadlock",
                status=ConditionStatus.TRUE,
                reason="DockerHung",
                last_transition=ago(600),
            ),
            Condition(type="HealerQuarantine", status=ConditionStatus.TRUE, reason="KernelDeadlock"),
        ),
    )
    assert plan(view(n), rules=_rules(KERNEL_DEADLOCK)).actions == ()


def test_a_node_that_never_reported_is_unknown_since_it_was_created() -> None:
    fresh = Node(name="new", created=NOW - timedelta(seconds=10))
    old = Node(name="lost", created=NOW - timedelta(hours=1))
    p = plan(view(fresh, old, node("b"), node("c")))
    assert rows(p) == {("cordon", "lost")}


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        ("Xid79", "", "reboot"),
        ("Xid48", "", "reset"),
        ("Xid13", "", "application"),
        ("Xid92", "", "ignore"),
        ("Xid4242", "", "unknown"),
        ("RowRemapPending", "", "reset"),
        ("RetiredPagesPending", "", "reset"),
        ("Thermal", "", "unknown"),
        ("Xid13", "GPU 0 (GPU-1) class=reset", "reset"),
        ("Xid79", "class=bogus", "reboot"),
    ],
)
def test_gpu_class_of_a_condition(reason: str, message: str, expected: str) -> None:
    cond = Condition(type="GPUHealthy", status=ConditionStatus.FALSE, reason=reason, message=message)
    assert matching.gpu_class(cond, policy=RULES.gpu) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m"), (310, "5m 10s"), (3720, "1h 2m"), (183600, "2d 3h")],
)
def test_ago(seconds: int, text: str) -> None:
    assert matching.ago(timedelta(seconds=seconds)) == text
