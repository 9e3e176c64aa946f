"""A throwaway certificate authority (trustme) for https tests and benchmarks.

The in-cluster configuration speaks only https and verifies the API server against the
service account's `ca.crt`, as a pod does. `ScratchCA` issues the fake API's server
certificate (127.0.0.1, ::1, localhost) and gives the PEM a pod would find in its
service-account folder; `write_service_account` lays that folder out.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from healer.kube import incluster


class ScratchCA:
    def __init__(self) -> None:
        self._ca = trustme.CA()
        self._server = self._ca.issue_cert("127.0.0.1", "::1", "localhost")

    @property
    def pem(self) -> bytes:
        """The CA certificate, as `ca.crt` holds it."""
        return self._ca.cert_pem.bytes()

    def server_context(self) -> ssl.SSLContext:
        """For `FakeApi(ssl_context=...)`."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.configure_cert(context)
        return context


def write_service_account(folder: Path, *, token: str, ca_pem: bytes) -> Path:
    """`folder/token` and `folder/ca.crt`, as the kubelet mounts them; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_bytes(ca_pem)
    return folder


def in_cluster_env(port: int, *, host: str = "127.0.0.1") -> dict[str, str]:
    """The variables the kubelet sets in every pod, pointing at `host:port`."""
    return {incluster.HOST_ENV: host, incluster.PORT_ENV: str(port)}
