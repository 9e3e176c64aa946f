"""`python -m healer` as a user runs it: exit codes, the JSON contract, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.builders import REPO

EXAMPLE = str(REPO / "examples" / "oceanid.yaml")
NOW = "2025-10-15T12:00:00Z"


def healer(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("healer: ")
    assert fragment in lines[0]


def test_plan_json_on_the_oceanid_example() -> None:
    result = healer("plan", "--snapshot", EXAMPLE, "--now", NOW, "--output", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"actions", "held"}
    keys = {"action", "kind", "namespace", "name", "rule", "reason"}
    assert all(set(row) == keys for row in doc["actions"])
    assert all(set(row) == keys | {"guard"} for row in doc["held"])
    done = {(r["action"], r["namespace"], r["name"]) for r in doc["actions"]}
    assert ("cordon", "", "styx") in done
    assert ("force-delete", "apps", "csv-ingestion-worker-6d8f9c7b5d-x2x7q") in done
    assert ("force-delete", "apps", "project-bootstrapper-5b7c9d8f6-k4m2p") in done
    assert ("force-delete", "apps", "csv-backfill-29340120-7hx2c") in done
    assert ("delete", "apps", "csv-ingestion-worker-6d8f9c7b5d-4fz8s") in done
    assert ("delete", "flux-system", "source-controller-6ff87cb475-8wq2l") in done
    notify = [r for r in doc["actions"] if r["action"] == "notify"]
    assert {(r["kind"], r["name"]) for r in notify} == {("Node", "styx"), ("Node", "calypso")}
    held = {r["name"]: r["guard"] for r in doc["held"]}
    assert held == {
        "debug-shell": "eligibility",
        "label-studio-ls-app-7f6d5c4b3-q9w8e": "eligibility",
        "redis-0": "eligibility",
        "tailscale-worker-8kq2n": "eligibility",
    }
    # nothing on the control plane, nothing on the healthy GPU node but the clean-up
    assert not [r for r in doc["actions"] if r["name"] == "tethys"]
    assert healer("plan", "--snapshot", EXAMPLE, "--now", NOW, "--output", "json").stdout == result.stdout


def test_plan_table_tells_the_story() -> None:
    result = healer("plan", "--snapshot", EXAMPLE, "--now", NOW)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for fragment in (
        "ACTIONS",
        "HELD",
        "NOTIFICATIONS",
        "force-delete  Pod/apps/redis-0",
        "kubectl taint nodes styx node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
        "lives on styx",
        "nothing is changed",
    ):
        assert fragment in out, fragment


def test_plan_without_now_uses_the_current_time() -> None:
    result = healer("plan", "--snapshot", EXAMPLE, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["actions"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("plan", "--snapshot", "/nonexistent/snap.yaml"), "no such file"),
        (("plan", "--snapshot", EXAMPLE, "--now", "yesterday"), "not an RFC 3339 time"),
        (("plan", "--snapshot", EXAMPLE, "--now", "2025-10-15T12:00:00"), "give a time zone"),
        (("plan", "--snapshot", str(REPO / "pyproject.toml")), "not valid YAML"),
        (("plan", "--snapshot", str(REPO / "rules" / "nodes.yaml")), "expected a Kubernetes List"),
        (("plan", "--snapshot", EXAMPLE, "--rules", "/nonexistent"), "no such rules directory"),
        (("rules", "check", "/nonexistent"), "no such rules directory"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(args: tuple[str, ...], fragment: str) -> None:
    _one_line_error(healer(*args), fragment)


def test_rules_check(tmp_path: Path) -> None:
    ok = healer("rules", "check", "rules")
    assert ok.returncode == 0
    assert "valid" in ok.stdout
    (tmp_path / "bad.yaml").write_text(
        "rules:\n  - name: x\n    scope: node\n    match: {kind: Pod}\n    colour: 1\n"
    )
    bad = healer("rules", "check", str(tmp_path))
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert all(line.startswith(f"healer: {tmp_path / 'bad.yaml'}: rule x: ") for line in lines), lines
    assert any("colour: unknown field" in line for line in lines)


def test_rules_check_defaults_to_the_packaged_rules(tmp_path: Path) -> None:
    result = healer("rules", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_usage_errors_exit_2() -> None:
    assert healer().returncode == 2
    assert healer("frobnicate").returncode == 2
    assert healer("plan", "--output", "xml").returncode == 2


def test_a_snapshot_plans_as_of_when_it_was_taken() -> None:
    """Without --now, a saved snapshot is planned at its newest node heartbeat, not today."""
    implicit = healer("plan", "--snapshot", EXAMPLE)
    assert implicit.returncode == 0, implicit.stderr
    assert "at 2025-10-15T11:59:41Z" in implicit.stdout
    assert "Ready=Unknown for 2d 2h" in implicit.stdout
    explicit = healer("plan", "--snapshot", EXAMPLE, "--now", "2025-10-15T11:59:41Z")
    assert explicit.stdout == implicit.stdout
    later = healer("plan", "--snapshot", EXAMPLE, "--now", "2025-10-25T11:59:41Z")
    assert "Ready=Unknown for 12d 2h" in later.stdout
