"""`healer run` as real processes next to the test control plane, one per simulated node pod.

The e2e tests run healer exactly as the DaemonSet does (`python -m healer run --node X`),
only with a kubeconfig instead of in-cluster config: the leader Lease, the watches, SIGTERM
and SIGKILL are all real. Each process logs JSON lines to its own file, which the tests
read to see what healer decided (held actions, dry-run "would act" lines); its
/metrics port is scraped for counters.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
LEASE_NAMESPACE = "healer-system"
LEASE_NAME = "healer-leader"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Healer:
    node: str
    kubeconfig: Path
    log_dir: Path
    dry_run: bool = False
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def identity(self) -> str:
        return f"healer-{self.node}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"healer-{self.node}{'-dry' if self.dry_run else ''}.log"

    def start(self) -> Healer:
        args = [
            sys.executable,
            "-m",
            "healer",
            "run",
            "--node",
            self.node,
            "--kubeconfig",
            str(self.kubeconfig),
        ]
        args += ["--http-port", str(self.port)]
        if self.dry_run:
            args.append("--dry-run")
        env = {
            **os.environ,
            "POD_NAME": self.identity,
            "POD_NAMESPACE": LEASE_NAMESPACE,
            "HEALER_LOG_FORMAT": "json",
            "HEALER_NOTIFY_URLS": "",
            "HEALER_NOTIFY_URLS_FILE": str(self.log_dir / "no-such-urls-file"),
            "PYTHONPATH": str(REPO_ROOT),
            **self.env,
        }
        env.pop("HEALER_RULES_DIR", None)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, *, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: the exit code (0 after a clean drain)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: no drain, no Lease release (a crashed pod)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                lines.append(entry)
        return lines

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics (0 when absent). A healer that does not answer raises: a
        stopped one has no metrics, and reading it as 0 would make `== 0` assertions vacuous."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            text = r.read().decode()
        want = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
        )
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0


class Healers:
    """Several healer processes; always stopped on exit, even when the test fails."""

    def __init__(self, *healers: Healer) -> None:
        self.all = list(healers)

    def __enter__(self) -> Healers:
        for h in self.all:
            h.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.all:
            if h.alive:
                try:
                    h.terminate(timeout_s=20)
                except subprocess.TimeoutExpired:
                    h.kill()

    def by_identity(self, identity: str) -> Healer:
        return next(h for h in self.all if h.identity == identity)


async def ensure_namespace(api: client.ApiClient, name: str = LEASE_NAMESPACE) -> None:
    try:
        await client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise


async def lease_holder(api: client.ApiClient) -> str | None:
    try:
        lease = await client.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity or None


async def healer_events(api: client.ApiClient) -> list[Any]:
    """Every core/v1 Event healer recorded (reason starts with `Healer`), all namespaces."""
    events = await client.CoreV1Api(api).list_event_for_all_namespaces()
    return [e for e in events.items if (e.reason or "").startswith("Healer")]


def event_counts(events: list[Any]) -> dict[tuple[str, str], int]:
    """(reason, namespace/name of the object) -> how many Events (counting `count`)."""
    counts: dict[tuple[str, str], int] = {}
    for e in events:
        obj = e.involved_object
        key = (e.reason, f"{obj.namespace or ''}/{obj.name}")
        counts[key] = counts.get(key, 0) + (e.count or 1)
    return counts
