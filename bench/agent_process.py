"""A real `healer run` process against a local fake API server, for the start-up and memory benches.

Why: start-up time and resident memory are properties of the process the DaemonSet runs, not of
a function: they include the interpreter, every import `healer run` makes, the HTTP server,
the watches and the store. So the benches start exactly that process (`python -m healer run
--node NAME`, the shipped rules, leader election on, as in production) against
`tests/api/fakeapi.FakeApi` serving one node and its realistic pods (`bench/synth.py`), wait
for `/readyz` to answer 200, and read the process's own /proc/<pid>/status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import synth

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
async def fake_cluster(*, pods: int) -> AsyncIterator[Path]:
    """FakeApi with node `NODE` (Ready) and `pods` realistic pods on it; yields a kubeconfig."""
    from tests.api.fakeapi import FakeApi

    api = FakeApi()
    await api.start()
    try:
        api.put("nodes", synth.node(1))
        rng = random.Random(1)
        for i in range(pods):
            api.put("pods", synth.pod(i, node_name=NODE, rng=rng))
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
    finally:
        await api.stop()


@contextlib.asynccontextmanager
async def healer_run(
    *, kubeconfig: Path, prod_like: bool = True, deadline_s: float = 60.0
) -> AsyncIterator[Agent]:
    """Spawn `healer run --node NODE` and wait for /readyz 200 (polled every 10 ms).

    `prod_like`: hide the venv's development-only packages (`DEV_ONLY`) as the image lacks them."""
    port = free_port()
    env = {
        **os.environ,
        "HEALER_LOG_FORMAT": "json",
        "POD_NAMESPACE": "default",
        "POD_NAME": "healer-bench",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("HEALER_NOTIFY_URLS", None)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LAUNCH.format(hidden=DEV_ONLY if prod_like else ()),
        "run",
        "--node",
        NODE,
        "--kubeconfig",
        str(kubeconfig),
        "--http-port",
        str(port),
        cwd=str(REPO_ROOT),
        env=env,
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
