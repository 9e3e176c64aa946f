"""healer's in-cluster configuration against the real kube-apiserver, as a pod would use it.

A service-account folder is laid out as the kubelet mounts it (a TokenRequest token, the
control plane's CA), KUBERNETES_SERVICE_HOST/PORT point at the API server, and healer's own
loader (`healer.kube.incluster`, no kubernetes-asyncio) connects. SelfSubjectReview tells which
token a request carried, so rotation is checked by who the server says we are: after the
token's minute (an injected clock), and at once when the old token is revoked (its service
account deleted: the next request's 401 makes the client re-read the file).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from healer.kube import client, errors, incluster
from tests.api.tls import ScratchCA
from tests.support.controlplane import ControlPlane
from tests.support.serviceaccount import pod_env, request_token, write_service_account
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

RBAC = "/apis/rbac.authorization.k8s.io/v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True, slots=True)
class Accounts:
    """Two service accounts that may list nodes, in a namespace of their own."""

    admin: client.Kube
    namespace: str
    env: dict[str, str]  # KUBERNETES_SERVICE_HOST/PORT of the control plane
    ca: bytes

    async def token(self, name: str) -> str:
        return await request_token(self.admin, namespace=self.namespace, name=name)

    def user(self, name: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{name}"


async def whoami(kube: client.Kube) -> str:
    review = await kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


@pytest.fixture
async def accounts(control_plane: ControlPlane) -> AsyncIterator[Accounts]:
    suffix = uuid.uuid4().hex[:6]
    namespace = f"incluster-{suffix}"
    role = f"healer-incluster-{suffix}"
    async with client.connect(kubeconfig=control_plane.kubeconfig, qps=50, burst=50) as admin:
        await admin.request(
            "POST",
            "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        for name in ("first", "second"):
            await admin.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            )
        await admin.request(
            "POST",
            f"{RBAC}/clusterroles",
            body={
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}],
            },
        )
        await admin.request(
            "POST",
            f"{RBAC}/clusterrolebindings",
            body={
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [
                    {"kind": "ServiceAccount", "name": name, "namespace": namespace}
                    for name in ("first", "second")
                ],
            },
        )
        try:
            yield Accounts(
                admin=admin,
                namespace=namespace,
                env=pod_env(control_plane),
                ca=control_plane.ca_cert.read_bytes(),
            )
        finally:
            for path in (f"{RBAC}/clusterrolebindings/{role}", f"{RBAC}/clusterroles/{role}"):
                await admin.request("DELETE", path)
            await admin.request("DELETE", f"/api/v1/namespaces/{namespace}")


async def test_a_pod_lists_nodes_as_its_service_account(
    accounts: Accounts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_service_account(tmp_path / "sa", token=await accounts.token("first"), ca_pem=accounts.ca)
    for name, value in accounts.env.items():
        monkeypatch.setenv(name, value)
    async with client.connect(service_account_dir=folder) as kube:
        nodes = await kube.request("GET", "/api/v1/nodes")
        assert isinstance(nodes["items"], list)
        assert await whoami(kube) == accounts.user("first")
        with pytest.raises(errors.Forbidden):  # the service account's rights, not the admin's
            await kube.request("GET", "/api/v1/secrets")


async def test_the_token_file_is_reread_after_a_minute(accounts: Accounts, tmp_path: Path) -> None:
    folder = write_service_account(tmp_path / "sa", token=await accounts.token("first"), ca_pem=accounts.ca)
    clock = Clock()
    kube = client.in_cluster(incluster.load(folder, env=accounts.env, clock=clock))
    try:
        assert await whoami(kube) == accounts.user("first")
        (folder / "token").write_text(await accounts.token("second"))  # the kubelet's rotation
        assert await whoami(kube) == accounts.user("first")  # both are valid: no 401 says anything
        clock.now += incluster.TOKEN_MAX_AGE_S
        assert await whoami(kube) == accounts.user("second")
    finally:
        await kube.close()


async def test_a_revoked_token_is_replaced_on_its_first_401(accounts: Accounts, tmp_path: Path) -> None:
    first = await accounts.token("first")
    folder = write_service_account(tmp_path / "sa", token=first, ca_pem=accounts.ca)
    stale = write_service_account(tmp_path / "stale", token=first, ca_pem=accounts.ca)
    clock = Clock()  # never advanced: only a 401 can make the client re-read the file
    kube = client.in_cluster(incluster.load(folder, env=accounts.env, clock=clock))
    probe = client.in_cluster(incluster.load(stale, env=accounts.env, clock=clock))
    try:
        assert await whoami(kube) == accounts.user("first")
        (folder / "token").write_text(await accounts.token("second"))
        await accounts.admin.request(
            "DELETE", f"/api/v1/namespaces/{accounts.namespace}/serviceaccounts/first"
        )

        async def revoked() -> bool:
            try:
                await probe.request("GET", "/api/v1/nodes")
            except errors.ClientError as e:
                return e.status == 401
            return False

        await wait_until(revoked, timeout_s=60, what="the deleted account's token to be refused")
        assert await whoami(kube) == accounts.user("second")
    finally:
        await kube.close()
        await probe.close()


async def test_a_ca_that_did_not_sign_the_api_server_is_refused(accounts: Accounts, tmp_path: Path) -> None:
    folder = write_service_account(
        tmp_path / "sa", token=await accounts.token("first"), ca_pem=ScratchCA().pem
    )
    kube = client.in_cluster(incluster.load(folder, env=accounts.env))
    try:
        with pytest.raises(errors.Unreachable, match="certificate is not trusted by the configured CA"):
            await kube.request("GET", "/api/v1/nodes")
    finally:
        await kube.close()
