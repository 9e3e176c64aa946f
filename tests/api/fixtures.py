"""The fake API server and a real `Kube` client on it, as fixtures for every test folder that needs them.

The client is built by `healer.kube.client.connect` from a kubeconfig file (token auth), so
tests using it also cover configuration loading and the kubernetes-asyncio transport. The
fake keeps the API server's semantics that matter (resourceVersion and UID preconditions,
the Eviction subresource and its PDB 429, watches, Events) and takes scripted faults.
Import the fixtures into a folder's conftest: `from tests.api.fixtures import fake, kube, kubeconfig`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from healer.kube import client
from tests.api.fakeapi import FakeApi

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
