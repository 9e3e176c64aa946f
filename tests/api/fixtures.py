"""The fake API server and a real `Kube` client on it, as fixtures for every test folder that needs them.

The client is built by `healer.kube.client.connect` from a kubeconfig file (token auth), so
tests using it also cover configuration loading and the kubernetes-asyncio transport. The
fake keeps the API server's semantics that matter (resourceVersion and UID preconditions,
the Eviction subresource and its PDB 429, watches, Events) and takes scripted faults.
Import the fixtures into a folder's conftest: `from tests.api.fixtures import fake, kube, kubeconfig`.

`fake_tls` is the same server over https with a scratch CA's certificate (`tests/api/tls.py`),
and `service_account` the folder a pod would have for it (`token`, `ca.crt`): the in-cluster
configuration's inputs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from healer.kube import client
from tests.api.fakeapi import FakeApi
from tests.api.tls import ScratchCA
from tests.support.serviceaccount import write_service_account

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
    async with FakeApi(token=TOKEN) as api:
        yield api


@pytest.fixture
def kubeconfig(fake: FakeApi, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", server=fake.url)


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[client.Kube]:
    async with client.connect(kubeconfig=kubeconfig, qps=0, request_timeout=5, connect_timeout=2) as k:
        yield k


@pytest.fixture
def scratch_ca() -> ScratchCA:
    return ScratchCA()


@pytest.fixture
async def fake_tls(scratch_ca: ScratchCA) -> AsyncIterator[FakeApi]:
    async with FakeApi(token=TOKEN, ssl_context=scratch_ca.server_context()) as api:
        yield api


@pytest.fixture
def service_account(scratch_ca: ScratchCA, tmp_path: Path) -> Path:
    return write_service_account(tmp_path / "serviceaccount", token=TOKEN, ca_pem=scratch_ca.pem)
