"""Runtime tests that need an API run over real HTTP: the fake API server and a real `Kube`.

The fake keeps the API server's semantics that matter here (resourceVersion preconditions on
PATCH, UID preconditions on DELETE, the Eviction subresource and its PDB 429, Events) and
takes scripted faults, so idempotency and error mapping are checked request by request.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `tests.api.fakeapi` importable however pytest is invoked
    sys.path.insert(0, str(REPO_ROOT))

from healer.kube import client  # noqa: E402
from tests.api.fakeapi import FakeApi  # noqa: E402


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def kube(fake: FakeApi, tmp_path: Path) -> AsyncIterator[client.Kube]:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "users": [{"name": "healer", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "healer"}}],
        "current-context": "fake",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    async with client.connect(kubeconfig=path, qps=0, request_timeout=5, connect_timeout=2) as k:
        yield k
