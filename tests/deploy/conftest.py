"""Fixtures for the deploy tests: the rendered manifests, and the e2e control plane.

The control-plane fixtures live in tests/e2e/conftest.py; importing them here makes them
usable by tests/deploy without copying them. (Running tests/e2e and tests/deploy in one session
therefore starts the control plane once per directory; moving `control_plane`/`kube` to a
shared plugin would make it once per session.)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `tests.*` importable however pytest is invoked
    sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.conftest import control_plane, kube  # noqa: E402

__all__ = ["control_plane", "kube"]
