"""The image's install steps pass without a container engine (scripts/image-smoke).

The script builds the wheel from exactly what the Dockerfile's builder stage copies, installs it
with its runtime dependencies only into a fresh venv, and runs the image's command line. It
needs a package index for the dependencies on its first run (later runs use its wheelhouse) and
takes about a minute, mostly installing and byte-compiling the dependencies, so it runs with the
slow e2e suite rather than with the unit tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_image_install_steps_in_a_clean_venv(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "image-smoke"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "image-smoke: ok" in done.stderr
    venv = tmp_path / "opt" / "healer"
    installed = {p.name.split("-")[0].lower() for p in venv.glob("lib/python3*/site-packages/*.dist-info")}
    assert "healer" in installed
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis", "pip"}
    assert sorted(p.name for p in (tmp_path / "etc" / "healer" / "rules").glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "rules").glob("*.yaml")
    )
    plan = (tmp_path / "plan.txt").read_text()
    assert "healer plan for" in plan
    assert "ACTIONS" in plan
