"""Rule files: the shipped policy loads; a broken file is a RuleError naming file, rule and
field, one line per problem, never a traceback."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from healer.rules import RuleError, load_rules, loading, schema
from tests.unit.builders import REPO

GOOD_RULE = """
rules:
  - name: node-not-ready
    scope: cluster
    match:
      kind: Node
      condition: {type: Ready, status: [False, Unknown]}
      for: 30s
    actions: [cordon]
    notify: {title: "{node} is not ready"}
"""


def _write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_shipped_rules_load_with_the_contract_gpu_section() -> None:
    rules = load_rules(REPO / "rules")
    assert {r.name for r in rules.rules} >= {
        "node-not-ready",
        "node-not-ready-release",
        "node-ready-again",
        "evicted-cleanup",
        "gpu-hardware-fault",
        "gpu-unknown-fault",
        "gpu-recovered",
    }
    assert rules.gpu.xid_class(79) == "reboot"
    assert rules.gpu.xid_class(48) == "reset"
    assert rules.gpu.xid_class(13) == "application"
    assert rules.gpu.xid_class(12345) == "unknown"
    assert rules.gpu.signal_classes["row-remap-failure"] == "rma"
    assert rules.gpu.repeat == schema.GpuRepeat(count=3, window=timedelta(minutes=10), escalate_to="reset")
    assert rules.gpu.recovery.healthy_for == timedelta(minutes=5)
    assert rules.gpu.last_gpu_node == "keep"
    assert rules.guards.budget == schema.BudgetGuard(max=3, window=timedelta(hours=24))
    assert rules.guards.storm.threshold(3) == 1


def test_yaml_booleans_are_read_as_condition_statuses(tmp_path: Path) -> None:
    rule = load_rules(_write(tmp_path, GOOD_RULE)).rules[0]
    assert rule.match.condition is not None
    assert rule.match.condition.status == ("False", "Unknown")
    assert rule.match.for_ == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("text", "duration"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("0s", 0)],
)
def test_durations(text: str, duration: int) -> None:
    assert schema.parse_duration(text) == timedelta(seconds=duration)
    assert schema.parse_duration(schema.format_duration(timedelta(seconds=duration))) == timedelta(
        seconds=duration
    )


@pytest.mark.parametrize("bad", ["30", "5 m", "m5", "1.5h", "", "30s5", "forever"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        schema.parse_duration(bad)


BROKEN = [
    # (replace in GOOD_RULE, expected fragment of the one-line problem)
    ("for: 30s", "for: 30 seconds", "rule node-not-ready: match.for: expected a duration"),
    (
        "actions: [cordon]",
        "actions: [reboot]",
        "rule node-not-ready: actions.0.reboot: unknown action; one of cordon, uncordon",
    ),
    ("actions: [cordon]", "actions: [{cordon: {}, uncordon: {}}]", "each action names exactly one"),
    (
        "    scope: cluster",
        "    scope: galaxy",
        "rule node-not-ready: scope: Input should be 'cluster' or 'node'",
    ),
    (
        "      kind: Node",
        "      kind: Node\n      colour: red",
        "rule node-not-ready: match.colour: unknown field",
    ),
    ("    notify:", "    notfy:", "rule node-not-ready: notfy: unknown field"),
    (
        "- name: node-not-ready",
        "- name: Node Not Ready",
        "rule Node Not Ready: name: String should match pattern",
    ),
    ("      condition: {type: Ready, status: [False, Unknown]}\n", "", "a Node match needs `condition`"),
    ("actions: [cordon]", "actions: [delete]", "`delete` deletes the matched Pod"),
    ('"{node} is not ready"', '"{host} is not ready"', None),  # titles are free text: valid
]


@pytest.mark.parametrize(("old", "new", "problem"), BROKEN)
def test_broken_rules_name_file_rule_and_field(
    tmp_path: Path, old: str, new: str, problem: str | None
) -> None:
    assert old in GOOD_RULE
    directory = _write(tmp_path, GOOD_RULE.replace(old, new))
    if problem is None:
        load_rules(directory)
        return
    with pytest.raises(RuleError) as e:
        load_rules(directory)
    lines = str(e.value).splitlines()
    assert any(line.startswith(f"{directory / 'rules.yaml'}: ") and problem in line for line in lines), lines


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    _write(
        tmp_path, GOOD_RULE.replace("for: 30s", "for: soon").replace("actions: [cordon]", "actions: [zap]")
    )
    _write(tmp_path, "rules: [{name: x}]", name="second.yaml")
    with pytest.raises(RuleError) as e:
        load_rules(tmp_path)
    problems = e.value.problems
    assert any("match.for" in p for p in problems)
    assert any("actions.0.zap" in p for p in problems)
    assert any(p.startswith(f"{tmp_path / 'second.yaml'}: rule x: scope") for p in problems)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rules: [\n  - name: a\n   bad", "not valid YAML"),
        ("- just\n- a list", "expected a mapping"),
        ("colour: blue", "colour: unknown field"),
        ("guards: {storm: {fraction: 2}}", "guards: storm.fraction"),
        ("guards: {storm: {fraction: 1/0}}", "expected a fraction"),
        ("gpu: {xid_classes: {reset: [48], reboot: [48]}}", "XID 48 is in both"),
        ("gpu: {last_gpu_node: drop}", "gpu: last_gpu_node"),
    ],
)
def test_file_level_problems(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        load_rules(_write(tmp_path, text))


def test_duplicates_across_files_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, GOOD_RULE + "guards: {}\n", name="a.yaml")
    _write(tmp_path, GOOD_RULE + "guards: {}\n", name="b.yaml")
    with pytest.raises(RuleError) as e:
        load_rules(tmp_path)
    text = str(e.value)
    assert (
        f"{tmp_path / 'b.yaml'}: rule node-not-ready: name: already defined in {tmp_path / 'a.yaml'}" in text
    )
    assert f"{tmp_path / 'b.yaml'}: guards: already defined" in text


def test_uncordon_must_name_a_rule_that_cordons(tmp_path: Path) -> None:
    text = (
        GOOD_RULE
        + """
  - name: back
    scope: cluster
    match: {kind: Node, condition: {type: Ready, status: ["True"]}}
    actions: [{uncordon: {cordoned_by: [nobody]}}]
"""
    )
    with pytest.raises(
        RuleError, match=re.escape("rule back: actions.0.uncordon.cordoned_by: no rule named 'nobody'")
    ):
        load_rules(_write(tmp_path, text))


def test_missing_or_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no such rules directory"):
        load_rules(tmp_path / "absent")
    with pytest.raises(RuleError, match="no rule files"):
        load_rules(tmp_path)


def test_configmap_dotfiles_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path, GOOD_RULE)
    (tmp_path / "..2025_10_15").mkdir()
    _write(tmp_path, "not: [valid", name=".hidden.yaml")
    assert len(load_rules(tmp_path).rules) == 1


def test_default_directory_prefers_the_environment(tmp_path: Path) -> None:
    assert loading.default_directory({"HEALER_RULES_DIR": str(tmp_path)}) == tmp_path
    assert loading.packaged_directory().joinpath("nodes.yaml").is_file()
