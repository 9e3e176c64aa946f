"""`healer plan` against the live cluster: list everything once, plan once, write nothing.

The same decoders as the watchers and the snapshot reader, so what `healer plan` prints
for the live cluster is what the daemon would decide on the same objects. List answers omit
each item's `kind`, so it is filled in from the resource before decoding.
"""

from __future__ import annotations

import os
from typing import Any

from healer import snapshot
from healer.kube import api as kube_api
from healer.kube import client, retry
from healer.model.view import ClusterView
from healer.watch import resources

KINDS = ("nodes", "pods", "persistentvolumes", "persistentvolumeclaims", "poddisruptionbudgets")
PAGE = "500"


async def list_view(api: kube_api.KubeApi) -> ClusterView:
    items: list[Any] = []
    for name in KINDS:
        res = resources.RESOURCES[name]
        token = ""
        while True:
            query = {"limit": PAGE, **({"continue": token} if token else {})}

            async def page(q: dict[str, str] = query, path: str = res.path()) -> Any:
                return await api.request("GET", path, query=q)

            answer = await retry.with_retries(page, what=f"list {name}")
            for item in answer.get("items") or ():
                item.setdefault("kind", res.kind)
                items.append(item)
            token = (answer.get("metadata") or {}).get("continue") or ""
            if not token:
                break
    return snapshot.view_from({"kind": "List", "items": items}, source="the live cluster")


async def live_view(*, kubeconfig: str | os.PathLike[str] | None = None) -> ClusterView:
    """Raises `client.ConfigError`, `healer.kube.errors.ApiError` or `snapshot.SnapshotError`."""
    async with client.connect(kubeconfig=kubeconfig) as api:
        return await list_view(api)
