"""`healer run` as a real process: CLI wiring, JSON logs, health endpoints, Lease, SIGTERM drain.

The fake API server plays the cluster; the daemon is started exactly as the DaemonSet starts
it (`python -m healer run`), so argument parsing, logging setup, signal handling and the exit
code are all the real ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.api.fakeapi import FakeApi, node
from tests.api.fixtures import write_kubeconfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(url: str) -> tuple[int, str]:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r,
        ):
            return r.status, await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0, ""


async def test_healer_run_serves_leads_and_drains_on_sigterm(fake: FakeApi, tmp_path: Path) -> None:
    fake.put("nodes", node("calypso"))
    fake.put("nodes", node("tethys"))
    port = _port()
    env = {
        **os.environ,
        "POD_NAME": "healer-calypso",
        "POD_NAMESPACE": "healer-system",
        "HEALER_NOTIFY_URLS": "",
        "HEALER_NOTIFY_URLS_FILE": str(tmp_path / "none"),
        "HEALER_LOG_FORMAT": "json",
    }
    env.pop("HEALER_RULES_DIR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healer",
        "run",
        "--node",
        "calypso",
        "--kubeconfig",
        str(write_kubeconfig(tmp_path / "kubeconfig", server=fake.url)),
        "--http-port",
        str(port),
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60):
            while True:
                status, _ = await _get(base + "/readyz")
                lease = fake.get("leases", ("healer-system", "healer-leader"))
                if status == 200 and lease and lease["spec"].get("holderIdentity") == "healer-calypso":
                    break
                await asyncio.sleep(0.2)
            while True:  # the cluster role starts right after the Lease is won
                status, metrics = await _get(base + "/metrics")
                if "healer_leader 1.0" in metrics:
                    break
                await asyncio.sleep(0.2)
        assert (await _get(base + "/healthz"))[0] == 200
        assert 'healer_view_synced{scope="node"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stdout is not None
    lines = (await proc.stdout.read()).decode().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(logged) == len([line for line in lines if line.strip()]), "every log line is JSON"
    events = [entry["event"] for entry in logged]
    assert "healer started" in events
    assert "lease released" in events
    assert events[-1] == "healer stopped"
    lease = fake.get("leases", ("healer-system", "healer-leader"))
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ""


async def test_healer_run_refuses_broken_rules(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("rules: [ {name: x, scope: galaxy} ]\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healer",
        "run",
        "--node",
        "calypso",
        "--rules",
        str(tmp_path),
        "--kubeconfig",
        str(tmp_path / "missing"),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"rules unusable" in out
    assert b"bad.yaml" in out


async def test_healer_plan_reads_the_live_cluster_and_writes_nothing(fake: FakeApi, tmp_path: Path) -> None:
    fake.put("nodes", node("calypso"))
    fake.put("nodes", node("tethys"))
    styx = node("styx", ready="Unknown")
    styx["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-27T04:00:00Z"
    fake.put("nodes", styx)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healer",
        "plan",
        "--kubeconfig",
        str(write_kubeconfig(tmp_path / "kubeconfig", server=fake.url)),
        "--now",
        "2026-11-27T05:00:00Z",
        "--output",
        "json",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    plan = json.loads(out)
    assert {"action": "cordon", "name": "styx"}.items() <= plan["actions"][0].items()
    assert [r.method for r in fake.requests] == ["GET"] * len(fake.requests)
    listed = {r.path for r in fake.requests}
    assert {"/api/v1/nodes", "/api/v1/pods", "/apis/policy/v1/poddisruptionbudgets"} <= listed


async def test_healer_plan_says_why_when_the_cluster_is_unreachable(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healer",
        "plan",
        "--kubeconfig",
        str(write_kubeconfig(tmp_path / "kubeconfig", server=f"http://127.0.0.1:{_port()}")),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 2
    assert "reading the cluster failed: Unreachable" in err.decode()


async def test_healer_run_rejects_a_bad_port_setting() -> None:
    env = {**os.environ, "HEALER_HTTP_PORT": "ninety"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healer",
        "run",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().strip() == "healer: HEALER_HTTP_PORT='ninety': not a port number"
