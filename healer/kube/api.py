"""The contract between healer and the Kubernetes API: raw JSON in, raw JSON out.

Generated client models cost ~2 ms per pod event to build; healer needs a dozen fields.
So callers speak paths and dicts, and decode with `healer.model.decode`. Implementations:
`healer.kube.client.Kube` (kubernetes-asyncio configuration, auth and aiohttp transport).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

JsonBody = Mapping[str, Any] | list[Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeApi(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: JsonBody | None = None,
        content_type: str = "application/json",
        request_timeout: float | None = None,
    ) -> Any:
        """One request; returns the decoded JSON body or raises `healer.kube.errors.ApiError`.

        `path` is the API path, e.g. "/api/v1/nodes/styx" or "/api/v1/namespaces/apps/pods".
        """
        ...

    def stream(
        self, path: str, *, query: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """A watch: yields the raw JSON lines of the response; raises ApiError on a non-2xx status."""
        ...
