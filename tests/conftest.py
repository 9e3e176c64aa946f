"""Shared fixtures: one real control plane per test session, always torn down.

It lives at the root so that tests/e2e and tests/deploy share one control plane per session
(a session-scoped fixture defined in two conftests would start two).

Starting etcd + kube-apiserver + controller-manager + scheduler takes seconds, building them
takes minutes (cached under ~/.cache/healer-cp), so the control plane is session-scoped and
tests isolate themselves by using their own nodes and namespaces, or call ``reset()``.
Timings are FAST_TIMINGS (20 s node grace, 10 s toleration) so a node failure plays out in
about half a minute instead of six. If the binaries cannot be built the fixture errors: an e2e
suite that silently skips proves nothing.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `tests.support` importable however pytest is invoked
    sys.path.insert(0, str(REPO_ROOT))

from kubernetes_asyncio import client, config  # noqa: E402

from tests.support.controlplane import FAST_TIMINGS, ControlPlane  # noqa: E402


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    cp = ControlPlane.isolated(timings=FAST_TIMINGS)
    cp.build()  # raises ControlPlaneError with the Go error: never a skip
    atexit.register(cp.down)  # in case the interpreter dies before pytest's teardown runs
    try:
        cp.up()
        yield cp
    finally:
        cp.down()
        atexit.unregister(cp.down)


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    """An API client for the session's control plane (admin token from its kubeconfig)."""
    api = await config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield api
    finally:
        await api.close()
