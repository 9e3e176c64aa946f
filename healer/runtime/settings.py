"""How `healer run` is configured: flags first, then the environment the DaemonSet sets.

One frozen value, built once at start-up, so every part of the daemon reads the same
answers and a test can construct the exact configuration it needs without touching
`os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HTTP_PORT = 9180
DEFAULT_NAMESPACE = "healer-system"
LEASE_NAME = "healer-leader"
# Where the in-cluster token and ca.crt are (default /var/run/secrets/kubernetes.io/serviceaccount):
# for tests and benchmarks that run `healer run` in-cluster outside a pod.
SERVICE_ACCOUNT_DIR_ENV = "HEALER_SERVICE_ACCOUNT_DIR"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    node: str | None  # the node this pod runs on (NODE_NAME); None: cluster role only
    rules_dir: Path
    dry_run: bool = False
    kubeconfig: Path | None = None  # None: in-cluster configuration
    service_account_dir: Path | None = None  # in-cluster token and ca.crt; None: the standard mount
    http_port: int = DEFAULT_HTTP_PORT
    http_host: str = "0.0.0.0"
    namespace: str = DEFAULT_NAMESPACE  # where the leader Lease lives (POD_NAMESPACE)
    identity: str = ""  # who holds the Lease (POD_NAME, else the node, else the host name)
    log_format: str = "json"
    tick_s: float = 5.0
    debounce_s: float = 0.2
    lease_name: str = LEASE_NAME
    elect: bool = True  # take part in leader election (off: node agent only)
    gpu: bool = True  # watch this node's GPUs through NVML (returns at once without a driver)

    @classmethod
    def from_args(
        cls,
        *,
        dry_run: bool = False,
        node: str | None = None,
        kubeconfig: str | None = None,
        rules: str | None = None,
        http_port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Raises ValueError (with a one-line reason) for an unusable value."""
        from healer.rules import loading  # the rules package owns HEALER_RULES_DIR and its fallbacks

        e = os.environ if env is None else env
        node_name = node or e.get("NODE_NAME") or None
        raw_port = e.get("HEALER_HTTP_PORT", str(DEFAULT_HTTP_PORT))
        try:
            port = http_port if http_port is not None else int(raw_port)
        except ValueError:
            raise ValueError(f"HEALER_HTTP_PORT={raw_port!r}: not a port number") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"HTTP port {port}: not a port number")
        identity = e.get("POD_NAME") or node_name or os.uname().nodename
        return cls(
            node=node_name,
            rules_dir=Path(rules) if rules else loading.default_directory(e),
            dry_run=dry_run,
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
            service_account_dir=Path(sa_dir) if (sa_dir := e.get(SERVICE_ACCOUNT_DIR_ENV)) else None,
            http_port=port,
            namespace=e.get("POD_NAMESPACE") or DEFAULT_NAMESPACE,
            identity=identity,
            log_format=e.get("HEALER_LOG_FORMAT", "json"),
        )
