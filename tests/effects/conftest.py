"""An in-memory KubeApi for narrow executor tests: merge patches, preconditions, scripted faults.

It implements just the API semantics the executor relies on (resourceVersion preconditions on
PATCH, UID preconditions on DELETE, the Eviction subresource, Events) and lets a test queue
errors for a method and path, so idempotency and error mapping are checked write by write.
The same executor is exercised over real HTTP against the real control plane in tests/e2e.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from healer.kube import api as kube_api
from healer.kube import errors


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class MemKube:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[tuple[str, str, errors.ApiError]] = field(default_factory=list)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    pdb_blocks: bool = False
    rv: int = 100

    def add(self, path: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        self.objects[path] = obj

    def fail(self, method: str, path: str, error: errors.ApiError, *, times: int = 1) -> None:
        self.faults.extend([(method, path, error)] * times)

    @property
    def writes(self) -> list[tuple[str, str, Any]]:
        return [c for c in self.calls if c[0] != "GET" and not c[1].endswith("/events")]

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: kube_api.JsonBody | None = None,
        content_type: str = "application/json",
        request_timeout: float | None = None,
    ) -> Any:
        self.calls.append((method, path, copy.deepcopy(body)))
        for i, (m, p, err) in enumerate(self.faults):
            if m == method and p == path:
                del self.faults[i]
                raise err
        if path.endswith("/events") and method == "POST":
            assert isinstance(body, dict)
            self.events.append(dict(body))
            return body
        if path.endswith("/eviction"):
            pod_path = path.removesuffix("/eviction")
            if pod_path not in self.objects:
                raise errors.NotFound("pod not found")
            if self.pdb_blocks:
                raise errors.TooManyRequests(
                    "Cannot evict pod as it would violate the pod's disruption budget."
                )
            self.objects[pod_path]["metadata"]["deletionTimestamp"] = "2026-11-27T05:00:00Z"
            return {"kind": "Status", "status": "Success"}
        obj_path = path.removesuffix("/status")
        obj = self.objects.get(obj_path)
        if obj is None:
            raise errors.NotFound(f"{path} not found")
        if method == "GET":
            return copy.deepcopy(obj)
        if method == "PATCH":
            assert isinstance(body, dict)
            want_rv = body.get("metadata", {}).get("resourceVersion")
            if want_rv is not None and want_rv != obj["metadata"]["resourceVersion"]:
                raise errors.Conflict("the object has been modified")
            if content_type == kube_api.STRATEGIC_MERGE_PATCH and "conditions" in body.get("status", {}):
                conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
                for c in body["status"]["conditions"]:
                    conds[c["type"]] = {**conds.get(c["type"], {}), **c}
                new = copy.deepcopy(obj)
                new.setdefault("status", {})["conditions"] = list(conds.values())
            else:
                new = merge_patch(obj, body)
            self.add(obj_path, new)
            return copy.deepcopy(new)
        if method == "DELETE":
            assert isinstance(body, dict)
            uid = body.get("preconditions", {}).get("uid")
            if uid and uid != obj["metadata"].get("uid"):
                raise errors.Conflict("Precondition failed: UID in precondition")
            del self.objects[obj_path]
            return obj
        raise AssertionError(f"unexpected {method} {path}")


@pytest.fixture
def mem() -> MemKube:
    return MemKube()
