"""Drive hack/cp.sh from Python so tests can start a real control plane and break its nodes.

The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, one KWOK
"kubelet" per node) is what reproduces the styx incident faithfully: node lifecycle, taint
eviction and the StatefulSet controller are upstream code, not mocks. This wrapper keeps the
shell script the single source of truth and only adds typed methods and an explicit timing
profile, so a test states which timings it relies on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CP_SCRIPT = REPO_ROOT / "hack" / "cp.sh"


class ControlPlaneError(RuntimeError):
    """hack/cp.sh failed; the message carries its output and where the component logs are."""


@dataclass(frozen=True, slots=True)
class Timings:
    """Node-failure timings handed to the control plane (defaults are upstream's)."""

    node_grace_s: int = 50
    node_monitor_period_s: int = 5
    toleration_s: int = 300
    lease_duration_s: int = 40

    def env(self) -> dict[str, str]:
        return {
            "NODE_GRACE": f"{self.node_grace_s}s",
            "NODE_MONITOR_PERIOD": f"{self.node_monitor_period_s}s",
            "TOLERATION_S": str(self.toleration_s),
            "KWOK_LEASE_S": str(self.lease_duration_s),
        }


UPSTREAM_TIMINGS = Timings()
# Fast enough for CI, slow enough that a healthy kwok (lease renewed every 3 s) never flaps.
FAST_TIMINGS = Timings(node_grace_s=20, node_monitor_period_s=2, toleration_s=10, lease_duration_s=12)


def _free_ports(count: int) -> list[str]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [str(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(slots=True)
class ControlPlane:
    """One control plane under ``cp_dir``; every method is a blocking call to hack/cp.sh."""

    timings: Timings = UPSTREAM_TIMINGS
    cp_dir: Path = field(default_factory=lambda: Path(os.environ.get("CP_DIR", "/tmp/healer-cp")))
    extra_env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 3600.0

    @classmethod
    def isolated(cls, *, timings: Timings) -> ControlPlane:
        """A control plane in its own temp dir on free ports, so concurrent sessions cannot collide
        (``cp.sh up`` starts with ``down``: two sessions sharing CP_DIR would kill each other)."""
        cp_dir = Path(tempfile.mkdtemp(prefix="healer-cp-"))
        names = ("CP_APISERVER_PORT", "CP_ETCD_PORT", "CP_ETCD_PEER_PORT", "CP_KCM_PORT", "CP_SCHEDULER_PORT")
        return cls(
            timings=timings, cp_dir=cp_dir, extra_env=dict(zip(names, _free_ports(len(names)), strict=True))
        )

    @property
    def kubeconfig(self) -> Path:
        return self.cp_dir / "kubeconfig"

    @property
    def ca_cert(self) -> Path:
        """The cluster CA's certificate (it signed the API server's): a pod's `ca.crt`."""
        return self.cp_dir / "pki" / "ca.crt"

    @property
    def log_dir(self) -> Path:
        return self.cp_dir / "logs"

    def _run(self, *args: str, timeout_s: float | None = None) -> str:
        env = {**os.environ, **self.timings.env(), **self.extra_env, "CP_DIR": str(self.cp_dir)}
        try:
            done = subprocess.run(
                ["bash", str(CP_SCRIPT), *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s if timeout_s is not None else self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ControlPlaneError(f"hack/cp.sh {' '.join(args)} timed out after {exc.timeout}s") from exc
        if done.returncode != 0:
            raise ControlPlaneError(
                f"hack/cp.sh {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nlogs: {self.log_dir}"
            )
        return done.stdout

    def build(self) -> None:
        """Build the binaries, or do nothing when the cache already has them."""
        self._run("build")

    def up(self) -> None:
        self._run("up")

    def reset(self) -> None:
        """Restart everything on an empty etcd (cp.sh up is down + up): a fresh, empty cluster."""
        self.up()

    def down(self) -> None:
        self._run("down", timeout_s=120)

    def status(self) -> str:
        return self._run("status", timeout_s=30)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running control-plane process (etcd, kube-*, kwok-NODE)."""
        usage: dict[str, int] = {}
        for pid_file in sorted((self.cp_dir / "pids").glob("*")):
            status = Path("/proc") / pid_file.read_text().strip() / "status"
            try:
                lines = status.read_text().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                if line.startswith("VmRSS:"):
                    usage[pid_file.name] = int(line.split()[1]) * 1024
        return usage

    def add_node(self, *, name: str) -> None:
        """Start the KWOK kubelet for ``name``; the Node object is created through the API."""
        self._run("add-node", name, timeout_s=30)

    def stop_kubelet(self, *, node: str) -> None:
        """Freeze the node's kubelet: no more status updates or Lease renewals."""
        self._run("stop-kubelet", node, timeout_s=30)

    def start_kubelet(self, *, node: str) -> None:
        self._run("start-kubelet", node, timeout_s=30)

    def notready(self, *, node: str) -> None:
        """The node keeps heartbeating but reports Ready=False."""
        self._run("notready", node, timeout_s=30)

    def ready(self, *, node: str) -> None:
        self._run("ready", node, timeout_s=30)
