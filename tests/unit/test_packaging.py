"""The wheel carries the default rules (copied from the one source, top-level `rules/`), so a
non-editable install finds them without the checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from healer.rules import load_rules
from tests.unit.builders import REPO


def test_build_copies_the_rules_into_the_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    packaged = tmp_path / "healer" / "default_rules"
    sources = sorted(p.name for p in (REPO / "rules").glob("*.yaml"))
    assert sorted(p.name for p in packaged.glob("*.yaml")) == sources
    for name in sources:
        assert (packaged / name).read_bytes() == (REPO / "rules" / name).read_bytes()
    assert load_rules(packaged) == load_rules(REPO / "rules").model_copy(
        update={"sources": tuple(str(packaged / n) for n in sources)}
    )
