"""Fixtures for API tests: a real aiohttp fake API server and a real `Kube` client on it.

The client is built by `healer.kube.client.connect` from a kubeconfig file (token auth), so
these tests also cover configuration loading and the kubernetes-asyncio transport.
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

TOKEN = "s3cret-token"


def write_kubeconfig(path: Path, *, server: str, token: str = TOKEN) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "healer", "user": {"token": token}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "healer"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi(token=TOKEN)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
def kubeconfig(fake: FakeApi, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", server=fake.url)


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[client.Kube]:
    async with client.connect(kubeconfig=kubeconfig, qps=0, request_timeout=5, connect_timeout=2) as k:
        yield k
