"""The image's non-negotiables, read from the Dockerfile (no container engine needed).

A Dockerfile is not executed by the test suite, so a careless edit (a HEALTHCHECK, running as
root, a compiler in the final stage, rules not baked in) would only show up in production.
This parses the instructions and checks each promise, and that the DaemonSet's security
context agrees with the image's USER.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and stages; continuation lines joined, comments dropped."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    logical = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


ARGS, STAGES = parse((ROOT / "Dockerfile").read_text())
FINAL = STAGES[-1]


def test_multi_stage_on_one_slim_python() -> None:
    assert len(STAGES) >= 2
    bases = {stage.base for stage in STAGES}
    assert len(bases) == 1, "the venv copied between stages needs the same interpreter"
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", bases.pop())


def test_final_stage_runs_healer_as_a_numeric_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert json.loads(FINAL.all("ENTRYPOINT")[-1]) == ["healer", "run"]
    assert not FINAL.all("CMD")


def test_no_healthcheck_anywhere() -> None:
    assert not any(stage.all("HEALTHCHECK") for stage in STAGES)


def test_final_stage_builds_nothing() -> None:
    builder = STAGES[0]
    copies_from_builder = [c for c in FINAL.all("COPY") if c.startswith(f"--from={builder.name} ")]
    assert copies_from_builder == [f"--from={builder.name} /opt/healer /opt/healer"]
    for run in FINAL.all("RUN"):
        # the only RUN removes the base image's pip; nothing is installed or compiled
        assert "install" not in run.split(), run
        assert not re.search(r"\b(gcc|make|build-essential)\b", run), run
    assert any("PATH=/opt/healer/bin" in env for env in FINAL.all("ENV"))


def test_builder_installs_the_wheel_without_caches() -> None:
    builder = STAGES[0]
    runs = " ".join(builder.all("RUN"))
    assert "pip wheel --no-deps" in runs
    assert "venv --without-pip /opt/healer" in runs
    assert any("PIP_NO_CACHE_DIR=1" in env for env in builder.all("ENV"))


def test_rules_are_baked_where_the_configmap_mounts() -> None:
    assert "rules /etc/healer/rules" in FINAL.all("COPY")
    daemonset = yaml.safe_load_all((ROOT / "deploy" / "daemonset.yaml").read_text())
    for ds in daemonset:
        mounts = ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "rules", "mountPath": "/etc/healer/rules", "readOnly": True} in mounts


def test_daemonset_runs_as_the_image_user() -> None:
    uid, _, gid = FINAL.all("USER")[-1].partition(":")
    for ds in yaml.safe_load_all((ROOT / "deploy" / "daemonset.yaml").read_text()):
        context = ds["spec"]["template"]["spec"]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid or uid))


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore is an allow-list: every COPY source must be on it (or the build fails)."""
    allowed = {
        line.strip().removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip().startswith("!")
    }
    for stage in STAGES:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _dest = copy.split()
            for source in sources:
                assert source in allowed, f"COPY {source} is excluded by .dockerignore"
                assert (ROOT / source).exists(), source
