"""A pod's way in to the API server, laid out outside a pod: for tests and benches of the
in-cluster path (`healer.kube.incluster`, what every DaemonSet pod takes).

The kubelet gives a pod `KUBERNETES_SERVICE_HOST`/`PORT` and mounts a service-account folder
with a bound `token` and the cluster's `ca.crt`. Here `write_service_account` lays out that
folder, `in_cluster_env` sets those variables, `request_token` gets a real token for a
ServiceAccount from the API server (TokenRequest, as the kubelet does), and `pod_env` points
the variables at a real control plane whose CA is `ControlPlane.ca_cert`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

from healer.kube import client, incluster
from tests.support.controlplane import ControlPlane


def write_service_account(folder: Path, *, token: str, ca_pem: bytes) -> Path:
    """`folder/token` and `folder/ca.crt`, as the kubelet mounts them; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_bytes(ca_pem)
    return folder


def in_cluster_env(port: int, *, host: str = "127.0.0.1") -> dict[str, str]:
    """The variables the kubelet sets in every pod, pointing at `host:port`."""
    return {incluster.HOST_ENV: host, incluster.PORT_ENV: str(port)}


def pod_env(control_plane: ControlPlane) -> dict[str, str]:
    """KUBERNETES_SERVICE_HOST/PORT of the control plane's kube-apiserver."""
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    assert server.hostname, server
    assert server.port, server
    return in_cluster_env(server.port, host=server.hostname)


async def request_token(admin: client.Kube, *, namespace: str, name: str, expiration_s: int = 3600) -> str:
    """A bound token for ServiceAccount `namespace/name` (TokenRequest), as the kubelet mounts."""
    answer = await admin.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_s},
        },
    )
    return str(answer["status"]["token"])
