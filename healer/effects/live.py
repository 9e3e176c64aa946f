"""The live executor: each typed action becomes the smallest idempotent write that does it.

Why this shape:
- Every write first reads the object and does nothing when it is already so (UNCHANGED), so a
  restarted daemon or a new leader repeating a step changes nothing and records no Event.
- Node writes are read-modify-write with a resourceVersion precondition; a 409 means someone
  else wrote in between, so we re-read and decide again rather than overwrite.
- healer's own cordons carry `healer.io/cordoned-by`/`-at` and append to
  `healer.io/remediations`, so healer only ever uncordons what it cordoned and the budget
  guard can count remediations across leaders.
- Evictions go through the Eviction API: a 429 there is a PodDisruptionBudget saying "not now";
  it comes back as a retryable failure and is never turned into a delete.
- API errors become Outcomes, never exceptions: 5xx, 429 and an unreachable API are retried with
  backoff first (`healer.kube.retry`); what still fails is FAILED (retryable when trying later may help).
- Every object healer changes gets a core/v1 Event whose reason starts with `Healer`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from healer.kube import api as kube_api
from healer.kube import errors, retry
from healer.model import names
from healer.model.actions import (
    Action,
    AddTaint,
    Cordon,
    Delete,
    Evict,
    ForceDelete,
    Notify,
    Outcome,
    OutcomeStatus,
    RemoveTaint,
    SetCondition,
    Uncordon,
)

log = structlog.get_logger(__name__)

REMEDIATION_WINDOW = timedelta(hours=24)
EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS = "default"  # where kubelet and kubectl put Node events
_RETRYABLE_NOT_429: tuple[type[errors.ApiError], ...] = (errors.ServerError, errors.Unreachable)
# an action waits a few seconds at most: the next plan retries what still fails
EXECUTOR_BACKOFF = retry.Backoff(base=0.25, cap=4.0, max_retry_after=10.0)
_WARNING_VERBS = frozenset({"cordon", "taint", "evict", "delete", "force-delete"})

Raw = dict[str, Any]


def rfc3339(at: datetime) -> str:
    """The API server's timestamp format: UTC, second precision, `Z`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_reason(verb: str) -> str:
    """`force-delete` -> `HealerForceDelete`."""
    return names.EVENT_REASON_PREFIX + "".join(part.capitalize() for part in verb.split("-"))


def remediations_after(existing: str | None, *, now: datetime) -> str:
    """The `healer.io/remediations` value with `now` appended and entries older than 24 h dropped.

    Unreadable entries are dropped rather than failing the cordon: the list is a budget, not a log.
    """
    times: list[datetime] = []
    try:
        loaded = json.loads(existing) if existing else []
    except ValueError:
        loaded = []
    for item in loaded if isinstance(loaded, list) else []:
        try:
            at = datetime.fromisoformat(str(item))
        except ValueError:
            continue
        if at.tzinfo is not None and now - at <= REMEDIATION_WINDOW:
            times.append(at)
    times.append(now)
    return json.dumps([rfc3339(t) for t in sorted(times)])


class _Unchanged(Exception):
    """Raised inside a read-modify-write when the object is already as wanted."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class LiveExecutor:
    """Carries actions out against the API. `instance` names this healer (node or pod) in Events."""

    def __init__(
        self,
        api: kube_api.KubeApi,
        *,
        instance: str = "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        attempts: int = 5,
        backoff: retry.Backoff = EXECUTOR_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        conflict_attempts: int = 5,
    ) -> None:
        self._api = api
        self._instance = instance
        self._clock = clock
        self._attempts = attempts
        self._backoff = backoff
        self._sleep = sleep
        self._conflict_attempts = conflict_attempts

    # --- the port ---------------------------------------------------------------------------

    async def execute(self, action: Action) -> Outcome:
        try:
            outcome = await self._dispatch(action)
        except errors.ApiError as e:
            outcome = self._failed(action, e)
        except Exception as e:  # a bug here must not take the daemon down; it is logged loudly
            log.exception("executor error", action=action.verb, target=action.target.key)
            outcome = Outcome(action=action, status=OutcomeStatus.FAILED, detail=f"internal error: {e}")
        log.info(
            "executed",
            action=action.verb,
            kind=action.kind,
            namespace=action.namespace,
            name=action.name,
            rule=action.rule,
            incident=action.incident,
            status=str(outcome.status),
            detail=outcome.detail,
        )
        return outcome

    async def _dispatch(self, action: Action) -> Outcome:
        match action:
            case Cordon():
                return await self._cordon(action)
            case Uncordon():
                return await self._uncordon(action)
            case AddTaint():
                return await self._taint(action)
            case RemoveTaint():
                return await self._untaint(action)
            case SetCondition():
                return await self._set_condition(action)
            case Evict():
                return await self._evict(action)
            case Delete():
                return await self._delete(action)
            case ForceDelete():
                return await self._force_delete(action)
            case Notify():
                return Outcome(action=action, status=OutcomeStatus.SKIPPED, detail="for the notifier")
        raise AssertionError(f"unhandled action {action!r}")  # pragma: no cover

    @staticmethod
    def _failed(action: Action, e: errors.ApiError) -> Outcome:
        if isinstance(e, errors.NotFound):
            # the object is gone: for deletes that is the goal, for everything else nothing to do
            gone = isinstance(action, Delete | ForceDelete | Evict)
            return Outcome(
                action=action,
                status=OutcomeStatus.UNCHANGED if gone else OutcomeStatus.SKIPPED,
                detail="already gone" if gone else f"{action.kind} not found",
            )
        retryable = isinstance(e, (*retry.RETRYABLE, errors.Conflict))
        return Outcome(
            action=action,
            status=OutcomeStatus.FAILED,
            detail=f"{type(e).__name__} ({e.status}): {e}",
            retryable=retryable,
        )

    # --- transport with backoff -------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: kube_api.JsonBody | None = None,
        content_type: str = "application/json",
        retry_429: bool = True,
    ) -> Any:
        """One request, retried on 5xx, 429 (unless told not to) and no answer (`kube.retry`)."""

        async def once() -> Any:
            return await self._api.request(method, path, body=body, content_type=content_type)

        retry_on = retry.RETRYABLE if retry_429 else _RETRYABLE_NOT_429
        return await retry.with_retries(
            once,
            attempts=self._attempts,
            backoff=self._backoff,
            retry_on=retry_on,
            sleep=self._sleep,
            what=f"{method} {path}",
        )

    async def _modify(
        self,
        path: str,
        change: Callable[[Raw], dict[str, Any]],
        *,
        content_type: str = kube_api.MERGE_PATCH,
        patch_path: str | None = None,
    ) -> Raw:
        """Read, let `change` compute a patch (or raise _Unchanged), write it under the read's
        resourceVersion; on 409 read again and decide again."""
        for _ in range(self._conflict_attempts):
            raw: Raw = await self._call("GET", path)
            patch = change(raw)
            patch.setdefault("metadata", {})["resourceVersion"] = raw["metadata"]["resourceVersion"]
            try:
                written: Raw = await self._call(
                    "PATCH", patch_path or path, body=patch, content_type=content_type
                )
            except errors.Conflict:
                log.info("conflict, re-reading", path=path)
                continue
            return written
        raise errors.Conflict(f"{path}: still conflicting after {self._conflict_attempts} attempts")

    async def _node_write(
        self, action: Action, change: Callable[[Raw], dict[str, Any]], **kw: Any
    ) -> Outcome:
        path = f"/api/v1/nodes/{action.name}"
        try:
            written = await self._modify(path, change, **kw)
        except _Unchanged as u:
            return Outcome(action=action, status=OutcomeStatus.UNCHANGED, detail=u.detail)
        await self._record_event(action, uid=written.get("metadata", {}).get("uid", ""))
        return Outcome(action=action, status=OutcomeStatus.APPLIED)

    # --- nodes ------------------------------------------------------------------------------

    async def _cordon(self, action: Cordon) -> Outcome:
        now = self._clock()

        def change(raw: Raw) -> dict[str, Any]:
            annotations: Mapping[str, str] = raw["metadata"].get("annotations") or {}
            if (raw.get("spec") or {}).get("unschedulable"):
                ours = names.CORDONED_BY in annotations
                raise _Unchanged("already cordoned" + ("" if ours else " (not by healer)"))
            return {
                "spec": {"unschedulable": True},
                "metadata": {
                    "annotations": {
                        names.CORDONED_BY: action.rule,
                        names.CORDONED_AT: rfc3339(now),
                        names.REMEDIATIONS: remediations_after(annotations.get(names.REMEDIATIONS), now=now),
                    }
                },
            }

        return await self._node_write(action, change)

    async def _uncordon(self, action: Uncordon) -> Outcome:
        def change(raw: Raw) -> dict[str, Any]:
            annotations: Mapping[str, str] = raw["metadata"].get("annotations") or {}
            if names.CORDONED_BY not in annotations:
                cordoned = (raw.get("spec") or {}).get("unschedulable")
                raise _Unchanged("cordoned, but not by healer" if cordoned else "not cordoned")
            patch: dict[str, Any] = {
                "metadata": {"annotations": {names.CORDONED_BY: None, names.CORDONED_AT: None}},
            }
            if (raw.get("spec") or {}).get("unschedulable"):
                patch["spec"] = {"unschedulable": None}
            return patch

        return await self._node_write(action, change)

    async def _taint(self, action: AddTaint) -> Outcome:
        now = self._clock()

        def change(raw: Raw) -> dict[str, Any]:
            taints: list[Raw] = list((raw.get("spec") or {}).get("taints") or [])
            same = [t for t in taints if t.get("key") == action.key and t.get("effect") == action.effect]
            if same and all(t.get("value", "") == action.value for t in same):
                raise _Unchanged("already tainted")
            taint: Raw = {"key": action.key, "effect": action.effect}
            if action.value:
                taint["value"] = action.value
            if action.effect == "NoExecute":
                taint["timeAdded"] = rfc3339(now)
            kept = [
                t for t in taints if not (t.get("key") == action.key and t.get("effect") == action.effect)
            ]
            return {"spec": {"taints": [*kept, taint]}}

        return await self._node_write(action, change)

    async def _untaint(self, action: RemoveTaint) -> Outcome:
        def change(raw: Raw) -> dict[str, Any]:
            taints: list[Raw] = list((raw.get("spec") or {}).get("taints") or [])
            kept = [t for t in taints if t.get("key") != action.key]
            if len(kept) == len(taints):
                raise _Unchanged("not tainted")
            return {"spec": {"taints": kept}}

        return await self._node_write(action, change)

    async def _set_condition(self, action: SetCondition) -> Outcome:
        now = rfc3339(self._clock())

        def change(raw: Raw) -> dict[str, Any]:
            conditions: list[Raw] = (raw.get("status") or {}).get("conditions") or []
            old = next((c for c in conditions if c.get("type") == action.type), None)
            if old is not None and (old.get("status"), old.get("reason", ""), old.get("message", "")) == (
                action.status,
                action.cond_reason,
                action.message,
            ):
                raise _Unchanged("condition already so")
            unchanged_status = old is not None and old.get("status") == action.status
            transition = old.get("lastTransitionTime") if old is not None and unchanged_status else now
            wanted = {
                "type": action.type,
                "status": action.status,
                "reason": action.cond_reason,
                "message": action.message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": transition or now,
            }
            # the whole list, with ours replaced or appended: a strategic merge (by type) and a
            # plain list replace give the same result, and the resourceVersion guards the rest
            others = [c for c in conditions if c.get("type") != action.type]
            return {"status": {"conditions": [*others, wanted]}}

        return await self._node_write(
            action,
            change,
            content_type=kube_api.STRATEGIC_MERGE_PATCH,
            patch_path=f"/api/v1/nodes/{action.name}/status",
        )

    # --- pods -------------------------------------------------------------------------------

    @staticmethod
    def _pod_path(action: Action) -> str:
        return f"/api/v1/namespaces/{action.namespace}/pods/{action.name}"

    async def _current_pod(self, action: Action) -> Raw | Outcome:
        """The pod, or the UNCHANGED outcome when it is gone, replaced, or already terminating."""
        try:
            raw: Raw = await self._call("GET", self._pod_path(action))
        except errors.NotFound:
            return Outcome(action=action, status=OutcomeStatus.UNCHANGED, detail="already gone")
        meta = raw.get("metadata") or {}
        if action.target.uid and meta.get("uid") != action.target.uid:
            return Outcome(action=action, status=OutcomeStatus.UNCHANGED, detail="replaced by a new pod")
        if meta.get("deletionTimestamp"):
            return Outcome(action=action, status=OutcomeStatus.UNCHANGED, detail="already terminating")
        return raw

    @staticmethod
    def _preconditions(uid: str) -> dict[str, Any]:
        return {"preconditions": {"uid": uid}} if uid else {}

    async def _evict(self, action: Evict) -> Outcome:
        pod = await self._current_pod(action)
        if isinstance(pod, Outcome):
            return pod
        uid = pod["metadata"].get("uid", "")
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": action.name, "namespace": action.namespace},
            "deleteOptions": self._preconditions(uid),
        }
        try:
            await self._call("POST", self._pod_path(action) + "/eviction", body=body, retry_429=False)
        except errors.TooManyRequests as e:
            return Outcome(
                action=action,
                status=OutcomeStatus.FAILED,
                detail=f"eviction refused (PodDisruptionBudget): {e}",
                retryable=True,
            )
        except errors.Conflict:
            return Outcome(action=action, status=OutcomeStatus.UNCHANGED, detail="replaced by a new pod")
        await self._record_event(action, uid=uid)
        return Outcome(action=action, status=OutcomeStatus.APPLIED)

    async def _delete(self, action: Delete) -> Outcome:
        pod = await self._current_pod(action)
        if isinstance(pod, Outcome):
            return pod
        uid = pod["metadata"].get("uid", "")
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **self._preconditions(uid)}
        try:
            await self._call("DELETE", self._pod_path(action), body=body)
        except errors.Conflict:
            return Outcome(action=action, status=OutcomeStatus.UNCHANGED, detail="replaced by a new pod")
        await self._record_event(action, uid=uid)
        return Outcome(action=action, status=OutcomeStatus.APPLIED)

    async def _force_delete(self, action: ForceDelete) -> Outcome:
        """Grace 0 with the UID the engine saw: a same-named replacement is never hit."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            **self._preconditions(action.target.uid),
        }
        try:
            await self._call("DELETE", self._pod_path(action), body=body)
        except errors.Conflict:
            return Outcome(action=action, status=OutcomeStatus.UNCHANGED, detail="replaced by a new pod")
        await self._record_event(action, uid=action.target.uid)
        return Outcome(action=action, status=OutcomeStatus.APPLIED)

    # --- Kubernetes Events ------------------------------------------------------------------

    async def _record_event(self, action: Action, *, uid: str) -> None:
        """A core/v1 Event on the object; failing to record one never fails the action."""
        namespace = action.namespace or EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS
        now = rfc3339(self._clock())
        involved: Raw = {"apiVersion": "v1", "kind": action.kind, "name": action.name}
        if action.namespace:
            involved["namespace"] = action.namespace
        if uid:
            involved["uid"] = uid
        message = action.reason if not action.rule else f"{action.reason} (rule {action.rule})"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{action.name}.healer-", "namespace": namespace},
            "involvedObject": involved,
            "reason": event_reason(action.verb),
            "message": message[:1024],
            "type": "Warning" if action.verb in _WARNING_VERBS else "Normal",
            "source": {"component": "healer", **({"host": self._instance} if self._instance else {})},
            "reportingComponent": "healer",
            "reportingInstance": self._instance or "healer",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        except errors.ApiError as e:
            log.warning(
                "could not record event", target=action.target.key, reason=body["reason"], error=str(e)
            )
