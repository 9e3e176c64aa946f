"""A real `healer run` process against a local fake API server, for the start-up and memory benches.

Why: start-up time and resident memory are properties of the process the DaemonSet runs, not of
a function: they include the interpreter, every import `healer run` makes, the HTTP server,
the watches and the store. So the benches start exactly that process (`python -m healer run
--node NAME`, the shipped rules, leader election on, as in production) against
`tests/api/fakeapi.FakeApi` serving one node and its realistic pods (`bench/synth.py`), wait
for `/readyz` to answer 200, and read the process's own /proc/<pid>/status.

Two ways in: `fake_cluster` (plain http, a kubeconfig: `healer run --kubeconfig`, the
kubernetes-asyncio path) and `fake_cluster_in_cluster` (https with a scratch CA, and the
variables and service-account folder a pod has: no --kubeconfig, the DaemonSet's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from bench import synth

if TYPE_CHECKING:
    from tests.api.fakeapi import FakeApi

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE = "node-00001"
# Packages the venv has only for development (import-linter pulls in rich, which structlog then
# imports for pretty tracebacks). The image installs none of them, so `prod_like` hides them.
DEV_ONLY = ("rich",)
_LAUNCH = (
    "import sys; sys.modules.update(dict.fromkeys({hidden!r})); from healer.cli import main; sys.exit(main())"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon... in KiB from /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "VmSize", "Threads"):
            out[key] = int(value.split()[0])
    return out


@dataclass(slots=True)
class Agent:
    pid: int
    port: int
    ready_s: float  # from spawn to the first /readyz 200


@contextlib.asynccontextmanager
async def _serving(*, pods: int, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[FakeApi]:
    """FakeApi with node `NODE` (Ready) and `pods` realistic pods on it."""
    from tests.api.fakeapi import FakeApi

    async with FakeApi(ssl_context=ssl_context) as api:
        api.put("nodes", synth.node(1))
        rng = random.Random(1)
        for i in range(pods):
            api.put("pods", synth.pod(i, node_name=NODE, rng=rng))
        yield api


@contextlib.asynccontextmanager
async def fake_cluster(*, pods: int) -> AsyncIterator[Path]:
    """The fake API over http with NODE and `pods` pods; yields a kubeconfig for it."""
    async with _serving(pods=pods) as api:
        folder = Path(tempfile.mkdtemp(prefix="healer-bench-"))
        kubeconfig = folder / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "f", "cluster": {"server": api.url}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [
                        {"name": "f", "context": {"cluster": "f", "user": "u", "namespace": "default"}}
                    ],
                    "current-context": "f",
                }
            )
        )
        yield kubeconfig


@contextlib.asynccontextmanager
async def fake_cluster_in_cluster(*, pods: int) -> AsyncIterator[dict[str, str]]:
    """The fake API over https (a scratch CA) with NODE and `pods` pods; yields the environment
    a pod would have for it: KUBERNETES_SERVICE_HOST/PORT and HEALER_SERVICE_ACCOUNT_DIR (a
    folder with `token` and the CA's `ca.crt`)."""
    from healer.runtime.settings import SERVICE_ACCOUNT_DIR_ENV
    from tests.api.tls import ScratchCA
    from tests.support.serviceaccount import in_cluster_env, write_service_account

    ca = ScratchCA()
    async with _serving(pods=pods, ssl_context=ca.server_context()) as api:
        folder = Path(tempfile.mkdtemp(prefix="healer-bench-")) / "serviceaccount"
        write_service_account(folder, token="t", ca_pem=ca.pem)
        yield {**in_cluster_env(api.port), SERVICE_ACCOUNT_DIR_ENV: str(folder)}


@contextlib.asynccontextmanager
async def healer_run(
    *,
    kubeconfig: Path | None = None,
    env: Mapping[str, str] | None = None,
    prod_like: bool = True,
    deadline_s: float = 60.0,
) -> AsyncIterator[Agent]:
    """Spawn `healer run --node NODE` and wait for /readyz 200 (polled every 10 ms).

    `kubeconfig`: pass `--kubeconfig`; None: in-cluster, from `env` (`fake_cluster_in_cluster`).
    `prod_like`: hide the venv's development-only packages (`DEV_ONLY`) as the image lacks them."""
    port = free_port()
    environment = {
        **os.environ,
        "HEALER_LOG_FORMAT": "json",
        "POD_NAMESPACE": "default",
        "POD_NAME": "healer-bench",
        "PYTHONPATH": str(REPO_ROOT),
        **(env or {}),
    }
    environment.pop("HEALER_NOTIFY_URLS", None)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LAUNCH.format(hidden=DEV_ONLY if prod_like else ()),
        "run",
        "--node",
        NODE,
        *(("--kubeconfig", str(kubeconfig)) if kubeconfig is not None else ()),
        "--http-port",
        str(port),
        cwd=str(REPO_ROOT),
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        async with aiohttp.ClientSession() as session:
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"healer run exited with {proc.returncode} before ready")
                if time.perf_counter() - t0 > deadline_s:
                    raise TimeoutError(f"healer run not ready within {deadline_s}s")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.01)
        yield Agent(pid=proc.pid, port=port, ready_s=time.perf_counter() - t0)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
