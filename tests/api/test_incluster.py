"""healer's own in-cluster configuration (`healer.kube.incluster`) over real https.

The fake API serves https with a scratch CA's certificate; the service-account folder holds
that CA and a token, as the kubelet mounts them. What is checked: client-go's host rule, one-line
errors naming the file, the token re-read when a minute old and after a 401, a CA that does not
sign the server's certificate refused, and that none of it imports kubernetes-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from healer.kube import client, errors, incluster
from healer.runtime.settings import SERVICE_ACCOUNT_DIR_ENV, Settings
from tests.api import fakeapi
from tests.api.conftest import TOKEN, write_kubeconfig
from tests.api.tls import ScratchCA
from tests.support.serviceaccount import in_cluster_env, write_service_account

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("10.43.0.1", "443", "https://10.43.0.1:443"),
        ("kubernetes.default.svc", "6443", "https://kubernetes.default.svc:6443"),
        ("fd00:10:43::1", "443", "https://[fd00:10:43::1]:443"),
        ("::1", "6443", "https://[::1]:6443"),
    ],
)
def test_host_is_https_with_ipv6_in_brackets(host: str, port: str, url: str) -> None:
    assert incluster.host_url(host, port) == url


@pytest.mark.parametrize(
    ("env", "unset"),
    [
        ({}, "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT not set"),
        ({"KUBERNETES_SERVICE_HOST": "10.43.0.1"}, "KUBERNETES_SERVICE_PORT not set"),
        ({incluster.HOST_ENV: "", incluster.PORT_ENV: "443"}, "KUBERNETES_SERVICE_HOST not set"),
    ],
)
def test_without_host_and_port_it_is_not_in_a_cluster(
    env: dict[str, str], unset: str, service_account: Path
) -> None:
    with pytest.raises(incluster.NotInCluster, match=f"^{unset}$"):
        incluster.load(service_account, env=env)


def test_a_missing_token_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(client.ConfigError) as caught:
        incluster.load(tmp_path, env=in_cluster_env(443))
    assert str(caught.value) == f"service account token {tmp_path / 'token'} does not exist"


def test_an_empty_token_is_an_error(tmp_path: Path, scratch_ca: ScratchCA) -> None:
    folder = write_service_account(tmp_path, token="\n", ca_pem=scratch_ca.pem)
    with pytest.raises(client.ConfigError) as caught:
        incluster.load(folder, env=in_cluster_env(443))
    assert str(caught.value) == f"service account token {folder / 'token'} is empty"


def test_a_missing_or_unusable_ca_names_its_path(tmp_path: Path) -> None:
    folder = write_service_account(tmp_path, token=TOKEN, ca_pem=b"")
    ca = folder / "ca.crt"
    with pytest.raises(client.ConfigError, match=r"^service account CA .*ca.crt: no usable PEM certificate"):
        incluster.load(folder, env=in_cluster_env(443))
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(client.ConfigError, match="no usable PEM certificate"):
        incluster.load(folder, env=in_cluster_env(443))
    ca.unlink()
    with pytest.raises(client.ConfigError, match=f"^service account CA {re.escape(str(ca))} does not exist$"):
        incluster.load(folder, env=in_cluster_env(443))


async def test_in_a_pod_a_broken_mount_is_an_error_not_a_kubeconfig(
    tmp_path: Path, fake: fakeapi.FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """client-go: with KUBERNETES_SERVICE_HOST set, a missing token is an error; silently using
    some kubeconfig found on the node's image instead would act as someone else."""
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", server=fake.url)))
    for name, value in in_cluster_env(fake.port).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(client.ConfigError, match=r"service account token .* does not exist"):
        async with client.connect(service_account_dir=tmp_path / "absent"):
            pass
    assert fake.requests == []


async def test_connect_in_cluster_over_https_with_the_token(
    fake_tls: fakeapi.FakeApi, service_account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in in_cluster_env(fake_tls.port).items():
        monkeypatch.setenv(name, value)
    fake_tls.put("nodes", fakeapi.node("styx"))
    async with client.connect(service_account_dir=service_account, qps=0) as kube:
        assert kube.host == f"https://127.0.0.1:{fake_tls.port}"
        listed = await kube.request("GET", "/api/v1/nodes")
        async with kube.stream("/api/v1/nodes", query={"watch": "1", "timeoutSeconds": "1"}) as lines:
            first = await anext(aiter(lines))
    assert [n["metadata"]["name"] for n in listed["items"]] == ["styx"]
    assert json.loads(first)["object"]["metadata"]["name"] == "styx"
    assert {r.authorization for r in fake_tls.requests} == {f"Bearer {TOKEN}"}


async def test_the_token_is_reread_once_a_minute_old(
    fake_tls: fakeapi.FakeApi, service_account: Path
) -> None:
    """Bound service-account tokens are rotated in place by the kubelet (client-go re-reads
    the file every minute); the old one stays valid for a while, so no 401 would tell us."""
    fake_tls.token = None  # accept any token: which one was sent is what is checked
    clock = Clock()
    config = incluster.load(service_account, env=in_cluster_env(fake_tls.port), clock=clock)
    kube = client.in_cluster(config, qps=0)
    try:
        await kube.request("GET", "/api/v1/nodes")
        (service_account / "token").write_text("rotated\n")
        clock.now += 59
        await kube.request("GET", "/api/v1/nodes")
        clock.now += 1
        await kube.request("GET", "/api/v1/nodes")
        (service_account / "token").unlink()  # a failed re-read keeps the token it has
        clock.now += 60
        await kube.request("GET", "/api/v1/nodes")
    finally:
        await kube.close()
    sent = [r.authorization for r in fake_tls.requests]
    assert sent == [f"Bearer {TOKEN}", f"Bearer {TOKEN}", "Bearer rotated", "Bearer rotated"]


async def test_a_401_rereads_the_token_at_once(
    fake_tls: fakeapi.FakeApi, service_account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token revoked before its minute is up (its pod or service account deleted and made
    again) is replaced on the first 401, as client-go's token source resets on one."""
    for name, value in in_cluster_env(fake_tls.port).items():
        monkeypatch.setenv(name, value)
    (service_account / "token").write_text("revoked")
    async with client.connect(service_account_dir=service_account, qps=0) as kube:
        (service_account / "token").write_text(TOKEN)
        assert (await kube.request("GET", "/api/v1/nodes"))["items"] == []
    assert [(r.status, r.authorization) for r in fake_tls.requests] == [
        (401, "Bearer revoked"),
        (200, f"Bearer {TOKEN}"),
    ]


async def test_a_ca_that_did_not_sign_the_server_is_refused(
    fake_tls: fakeapi.FakeApi, tmp_path: Path
) -> None:
    folder = write_service_account(tmp_path, token=TOKEN, ca_pem=ScratchCA().pem)
    kube = client.in_cluster(incluster.load(folder, env=in_cluster_env(fake_tls.port)), qps=0)
    try:
        with pytest.raises(errors.Unreachable, match="certificate is not trusted by the configured CA"):
            await kube.request("GET", "/api/v1/nodes")
    finally:
        await kube.close()
    assert fake_tls.requests == []  # nothing, the token included, went to an unverified server


CONNECT_AND_LIST = """
import asyncio, json, sys
from healer.kube import client

async def main():
    async with client.connect(service_account_dir=sys.argv[1], qps=0) as kube:
        nodes = await kube.request("GET", "/api/v1/nodes")
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"kubernetes_asyncio", "apprise"})
    print(json.dumps({"nodes": len(nodes["items"]), "heavy": heavy}))

asyncio.run(main())
"""


async def test_the_in_cluster_path_never_imports_kubernetes_asyncio(
    fake_tls: fakeapi.FakeApi, service_account: Path
) -> None:
    """The point of the module: ~35 MiB less per node agent (bench/memory.py)."""
    fake_tls.put("nodes", fakeapi.node("styx"))
    env = {**os.environ, **in_cluster_env(fake_tls.port), "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CONNECT_AND_LIST,
        str(service_account),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out.decode().splitlines()[-1]) == {"nodes": 1, "heavy": []}


def test_healer_run_imports_neither_kubernetes_asyncio_nor_apprise() -> None:
    """What `healer run` imports before it connects: the kubeconfig loader and apprise come
    only when a kubeconfig or notification URLs are given."""
    code = (
        "import sys, healer.cli, healer.runtime.daemon, healer.kube.client, healer.effects.live, "
        "healer.effects.dryrun, healer.runtime.leader, healer.gpu.agent, healer.notify.cli_test; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kubernetes_asyncio', 'apprise'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_healer_run_takes_the_service_account_dir_from_the_environment() -> None:
    folder = "/run/healer-test/sa"
    assert Settings.from_args(env={SERVICE_ACCOUNT_DIR_ENV: folder}).service_account_dir == Path(folder)
    assert Settings.from_args(env={}).service_account_dir is None  # connect's default: the pod's mount


async def test_healer_run_in_cluster_gets_ready(
    fake_tls: fakeapi.FakeApi, service_account: Path, tmp_path: Path
) -> None:
    """The DaemonSet's way in: no --kubeconfig, the pod's variables and mounted folder."""
    fake_tls.put("nodes", fakeapi.node("calypso"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **os.environ,
        **in_cluster_env(fake_tls.port),
        SERVICE_ACCOUNT_DIR_ENV: str(service_account),
        "KUBECONFIG": str(tmp_path / "absent"),
        "POD_NAMESPACE": "healer-system",
        "HEALER_NOTIFY_URLS_FILE": str(tmp_path / "none"),
        "HEALER_HTTP_PORT": str(port),
    }
    env.pop("HEALER_NOTIFY_URLS", None)
    log = tmp_path / "healer.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "healer", "run", "--node", "calypso", cwd=REPO, env=env,
            stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            while True:
                assert proc.returncode is None, f"healer run exited before it was ready:\n{log.read_text()}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert fake_tls.requests
    assert {r.authorization for r in fake_tls.requests} == {f"Bearer {TOKEN}"}
