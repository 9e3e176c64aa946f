"""Small read-only probes over kubernetes_asyncio objects, shared by e2e tests and benches.

The generated client returns untyped model objects; these helpers give the few questions the
tests ask ("is this node Ready?", "which pods of this workload are Terminating?") one typed,
tested answer instead of attribute chains repeated in every test.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


async def list_pods(api: client.ApiClient, *, namespace: str, labels: dict[str, str]) -> list[Any]:
    core = client.CoreV1Api(api)
    result = await core.list_namespaced_pod(namespace, label_selector=selector(labels))
    return list(result.items)


async def read_node(api: client.ApiClient, *, name: str) -> Any:
    return await client.CoreV1Api(api).read_node(name)


def node_condition(node: Any, *, kind: str = "Ready") -> str | None:
    """Status ("True", "False", "Unknown") of the node's condition ``kind``, None if absent."""
    for condition in node.status.conditions or []:
        if condition.type == kind:
            return str(condition.status)
    return None


def node_taint_keys(node: Any) -> set[str]:
    return {taint.key for taint in node.spec.taints or []}


async def node_lease_renew_time(api: client.ApiClient, *, node: str) -> Any:
    """The node's Lease renewTime (a datetime), None if there is no Lease yet."""
    try:
        lease = await client.CoordinationV1Api(api).read_namespaced_lease(node, "kube-node-lease")
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.renew_time


def is_terminating(pod: Any) -> bool:
    return pod.metadata.deletion_timestamp is not None


def is_running(pod: Any) -> bool:
    """Running and Ready, not being deleted."""
    if is_terminating(pod) or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def service_account_exists(api: client.ApiClient, *, namespace: str, name: str = "default") -> bool:
    try:
        await client.CoreV1Api(api).read_namespaced_service_account(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def manifest(obj: dict[str, Any]) -> Any:
    """A plain-dict object body. The client serialises dicts as-is; its annotations only name models."""
    return obj
