"""List+watch for nodes, pods, PVs, PVCs and PDBs: a never-ending stream of typed events.

Why stacked generators (as kopf does): each layer has one job and can be read alone.

    watch()        forever: list when needed, watch, classify failures, back off, report
    _list()        one (re)list, paginated; diffs against what the consumer already has
    _events()      one watch request: raw line -> orjson -> `decode` -> typed event

What a consumer sees (and may rely on):

- ADDED/MODIFIED/DELETED as `NodeEvent`, `PodEvent` or `StorageEvent` (PV, PVC, PDB),
  each carrying the slim `healer.model.view` object; a DELETED carries the last state.
- `Listed(resource)` after every complete (re)list: from then on the events delivered so
  far ARE the store. A relist is a diff: objects that changed come as MODIFIED (or DELETED +
  ADDED if the uid changed: deleted and re-created while we were away), new ones as ADDED,
  and objects that vanished come as DELETED with their last known state; unchanged ones
  are not repeated. So a consumer that just applies events never keeps a ghost.
- `Disconnected(resource, error)` once when a list or watch request fails (no answer,
  5xx, 429, a stream cut before it delivered anything...). Between it and the next `Listed`
  the consumer's view may be stale and nothing cluster-wide should be decided on it.
  Recovery always relists (from the watch cache, not older than what we had), so `Listed`
  means "current again".
- A watch that ends normally (`timeoutSeconds`) or is cut after delivering events resumes
  from the last resourceVersion at once (bookmarks keep it fresh): nothing lost, nothing
  repeated, no `Disconnected`. 410 Gone (HTTP or an ERROR event) relists with a consistent
  read. Retry-After is honoured; other failures back off with jitter, forever.

`resource` in `Listed`/`Disconnected` is the plural ("nodes", "pods",
"persistentvolumes", "persistentvolumeclaims", "poddisruptionbudgets"). Every restart calls
`on_restart(resource, reason)` (reasons in `RestartReason`) so the runtime can count them.

The per-event path is `orjson.loads`, `decode`, one dict update (for the relist diff: the
slim object under its own key, both shared with the consumer's store, so the bookkeeping costs
a dict entry per object), one event object, `yield`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any

import orjson
import structlog

from healer.kube import api as kube_api
from healer.kube import errors, retry
from healer.model import decode, events

log = structlog.get_logger(__name__)

# a namespaced object's (namespace, name) (the decoded object's own `key` where it has one,
# so the tuple is shared), a cluster-scoped object's name
Key = tuple[str, str] | str

DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_PAGE_SIZE = 500
DEFAULT_BACKOFF = retry.Backoff(base=0.5, cap=30.0)


class RestartReason(StrEnum):
    EXPIRED = "expired"  # the server ended the watch (timeoutSeconds): routine
    DROPPED = "dropped"  # cut after delivering events: resumed from the last resourceVersion
    GONE = "gone"  # 410: the resourceVersion is too old: relist
    UNREACHABLE = "unreachable"  # no HTTP answer at all
    THROTTLED = "throttled"  # 429
    SERVER_ERROR = "server-error"  # 5xx
    CLIENT_ERROR = "client-error"  # other 4xx (403 while RBAC settles, ...)
    BAD_EVENT = "bad-event"  # a line that is not a watch event
    INTERNAL = "internal"  # a bug in healer; logged with its traceback, then treated as an outage


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """How to list, watch and decode one kind."""

    name: str  # plural, as in the URL
    kind: str
    group_version: str  # "v1" (core) or "policy/v1"
    namespaced: bool
    decode: Callable[[decode.Raw], Any]
    event: Callable[[events.Change, Any], events.Event]
    key: Callable[[Any], Key]  # of a decoded object
    meta_key: Callable[[Mapping[str, Any]], Key]  # the same key from raw metadata, before decoding

    def path(self, namespace: str | None = None) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if namespace and self.namespaced:
            return f"{root}/namespaces/{namespace}/{self.name}"
        return f"{root}/{self.name}"


def _storage_event(change: events.Change, obj: Any) -> events.Event:
    return events.StorageEvent(change=change, obj=obj)


def _name(meta: Mapping[str, Any]) -> str:
    name: str = meta["name"]
    return name


def _namespaced(meta: Mapping[str, Any]) -> tuple[str, str]:
    """As `decode` reads it: no namespace is "default", an explicit null is ""."""
    namespace = meta.get("namespace", "default")
    return ("" if namespace is None else namespace, meta["name"])


def _pdb_key(pdb: Any) -> tuple[str, str]:
    return (pdb.namespace, pdb.name)


NODES = Resource(
    name="nodes",
    kind="Node",
    group_version="v1",
    namespaced=False,
    decode=decode.node,
    event=lambda change, obj: events.NodeEvent(change=change, node=obj),
    key=attrgetter("name"),
    meta_key=_name,
)
PODS = Resource(
    name="pods",
    kind="Pod",
    group_version="v1",
    namespaced=True,
    decode=decode.pod,
    event=lambda change, obj: events.PodEvent(change=change, pod=obj),
    key=attrgetter("key"),
    meta_key=_namespaced,
)
PERSISTENT_VOLUMES = Resource(
    name="persistentvolumes",
    kind="PersistentVolume",
    group_version="v1",
    namespaced=False,
    decode=decode.persistent_volume,
    event=_storage_event,
    key=attrgetter("name"),
    meta_key=_name,
)
PERSISTENT_VOLUME_CLAIMS = Resource(
    name="persistentvolumeclaims",
    kind="PersistentVolumeClaim",
    group_version="v1",
    namespaced=True,
    decode=decode.persistent_volume_claim,
    event=_storage_event,
    key=attrgetter("key"),
    meta_key=_namespaced,
)
POD_DISRUPTION_BUDGETS = Resource(
    name="poddisruptionbudgets",
    kind="PodDisruptionBudget",
    group_version="policy/v1",
    namespaced=True,
    decode=decode.pod_disruption_budget,
    event=_storage_event,
    key=_pdb_key,
    meta_key=_namespaced,
)
RESOURCES: Mapping[str, Resource] = {
    key: r
    for r in (NODES, PODS, PERSISTENT_VOLUMES, PERSISTENT_VOLUME_CLAIMS, POD_DISRUPTION_BUDGETS)
    for key in (r.kind, r.name)
}

_CHANGES: Mapping[str, events.Change] = {c.value: c for c in events.Change}

OnRestart = Callable[[str, str], None]


def node_selector(node: str) -> str:
    """fieldSelector for a node agent's own Node."""
    return f"metadata.name={node}"


def pods_on_node_selector(node: str) -> str:
    """fieldSelector for the pods bound to a node (the apiserver indexes spec.nodeName)."""
    return f"spec.nodeName={node}"


@dataclass(slots=True)
class _State:
    """What survives restarts: the resume point and what the consumer has been told."""

    rv: str = ""
    # key -> the object last yielded (its `resource_version` says which version that was)
    known: dict[Key, Any] = field(default_factory=dict)
    progress: bool = False  # the current watch delivered an event or a bookmark


class _Gone(Exception):
    """410: relist."""


class _Cut(Exception):
    """The stream broke after delivering something: resume at once."""

    def __init__(self, error: errors.ApiError) -> None:
        super().__init__(str(error))
        self.error = error


class _BadEvent(errors.ServerError):
    """A line that is not a watch event: the stream cannot be trusted; relist."""


async def _list(
    api: kube_api.KubeApi,
    res: Resource,
    *,
    path: str,
    selectors: Mapping[str, str],
    state: _State,
    resource_version: str,
    page_size: int,
) -> AsyncIterator[events.Event]:
    """One paginated list, emitted as a diff against `state.known` (see module docstring).

    `resource_version`: "0" (any, from the cache: start-up), a version (not older than it:
    recovery) or "" (a consistent read: after 410).
    """
    query: dict[str, str] = {**selectors, "limit": str(page_size)}
    if resource_version == "0":
        query["resourceVersion"] = "0"
    elif resource_version:
        query["resourceVersion"] = resource_version
        query["resourceVersionMatch"] = "NotOlderThan"
    seen: set[Key] = set()
    known = state.known
    key_of = res.key
    meta_key = res.meta_key
    while True:
        try:
            page = await api.request("GET", path, query=query)
        except errors.Gone as e:
            raise _Gone(str(e)) from e
        items: list[Any] | None = page.get("items") or []
        list_meta = page.get("metadata") or {}
        del page
        for raw in items or ():
            try:
                meta = raw["metadata"]
                key = meta_key(meta)
                rv = meta.get("resourceVersion", "")
            except (KeyError, TypeError, AttributeError) as e:
                log.warning("watch skipped an item without metadata.name", resource=res.name, error=repr(e))
                continue
            seen.add(key)
            old = known.get(key)
            if old is not None and old.resource_version == rv:
                continue
            try:
                obj = res.decode(raw)
            except decode.DecodeError as e:
                log.warning("watch skipped undecodable object", resource=res.name, key=key, error=str(e))
                continue
            known[key_of(obj)] = obj  # the same key as `key`, but the object's own (shared) tuple
            old_uid = getattr(old, "uid", None)  # None: a kind whose view keeps no uid
            if old is None:
                yield res.event(events.Change.ADDED, obj)
            elif old_uid is not None and old_uid != meta.get("uid", old_uid):
                yield res.event(events.Change.DELETED, old)
                yield res.event(events.Change.ADDED, obj)
            else:
                yield res.event(events.Change.MODIFIED, obj)
        # the page's raw objects go before the next page is read: one page (~12 MB of dicts at
        # 500 pods) alive, not two, and the RSS keeps what the list's peak took
        items = raw = None
        token = list_meta.get("continue")
        if not token:
            break
        query = {**selectors, "limit": str(page_size), "continue": token}
    for key in [k for k in known if k not in seen]:
        yield res.event(events.Change.DELETED, known.pop(key))
    state.rv = list_meta.get("resourceVersion", "") or state.rv


async def _events(lines: AsyncIterator[bytes], res: Resource, state: _State) -> AsyncIterator[events.Event]:
    """The typed events of one watch response; bookmarks only move `state.rv`."""
    known = state.known
    decoder = res.decode
    make = res.event
    key_of = res.key
    deleted = events.Change.DELETED
    state.progress = False
    try:
        async for line in lines:
            try:
                raw = orjson.loads(line)
                kind = raw["type"]
                obj = raw["object"]
                if kind == "BOOKMARK":
                    state.rv = obj["metadata"]["resourceVersion"]
                    state.progress = True
                    continue
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    if code == 410:
                        raise _Gone(str(obj.get("message", "")))
                    cls = errors.for_status(code) if code else errors.ServerError
                    raise cls(
                        str(obj.get("message", "watch error")), status=code, reason=obj.get("reason", "")
                    )
                meta = obj["metadata"]
                change = _CHANGES[kind]
                rv = meta["resourceVersion"]
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
                raise _BadEvent(f"{type(e).__name__}: {e}: {line[:200]!r}") from e
            try:
                item = decoder(obj)
            except decode.DecodeError as e:
                log.warning("watch skipped undecodable object", resource=res.name, error=str(e))
                state.rv = rv
                continue
            if change is deleted:
                known.pop(key_of(item), None)
            else:
                known[key_of(item)] = item
            state.rv = rv
            state.progress = True
            yield make(change, item)
    except errors.Unreachable as e:
        if state.progress:
            raise _Cut(e) from e
        raise


def _reason(error: errors.ApiError) -> RestartReason:
    if isinstance(error, _BadEvent):
        return RestartReason.BAD_EVENT
    if isinstance(error, errors.Unreachable):
        return RestartReason.UNREACHABLE
    if isinstance(error, errors.TooManyRequests):
        return RestartReason.THROTTLED
    if isinstance(error, errors.ServerError):
        return RestartReason.SERVER_ERROR
    return RestartReason.CLIENT_ERROR


async def watch(
    api: kube_api.KubeApi,
    *,
    kind: str | Resource,
    field_selector: str | None = None,
    label_selector: str | None = None,
    namespace: str | None = None,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    inactivity_timeout: float | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    backoff: retry.Backoff = DEFAULT_BACKOFF,
    on_restart: OnRestart | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[events.Event]:
    """List, then watch `kind` forever (see the module docstring for what is yielded).

    `kind`: "Node"/"nodes", "Pod"/"pods", "PersistentVolume", "PersistentVolumeClaim",
    "PodDisruptionBudget" (or a `Resource`). `inactivity_timeout` (default
    `timeout_seconds` + 30) ends a watch that received nothing at all for that long:
    a half-open connection is otherwise indistinguishable from a quiet cluster.
    """
    res = kind if isinstance(kind, Resource) else RESOURCES[kind]
    path = res.path(namespace)
    selectors: dict[str, str] = {}
    if field_selector:
        selectors["fieldSelector"] = field_selector
    if label_selector:
        selectors["labelSelector"] = label_selector
    inactivity = inactivity_timeout if inactivity_timeout is not None else timeout_seconds + 30.0
    state = _State()
    list_from: str | None = "0"  # None: no list needed; "0": start-up; "": consistent; rv: recovery
    failures = 0
    gones = 0
    empty = 0  # watches in a row that ended cleanly without delivering anything
    disconnected = False
    bound = log.bind(resource=res.name, field_selector=field_selector)

    def restarted(reason: RestartReason) -> None:
        if on_restart is not None:
            try:
                on_restart(res.name, reason.value)
            except Exception:
                bound.exception("watch on_restart hook failed")

    while True:
        try:
            if list_from is not None:
                async for event in _list(
                    api,
                    res,
                    path=path,
                    selectors=selectors,
                    state=state,
                    resource_version=list_from,
                    page_size=page_size,
                ):
                    yield event
                list_from = None
                failures = 0
                if disconnected:
                    bound.info("watch resynced", resource_version=state.rv)
                disconnected = False
                yield events.Listed(resource=res.name)
            query = {
                **selectors,
                "watch": "true",
                "allowWatchBookmarks": "true",
                "resourceVersion": state.rv,
                "timeoutSeconds": str(timeout_seconds),
            }
            async with api.stream(path, query=query, timeout=inactivity) as lines:
                failures = 0
                async for event in _events(lines, res, state):
                    gones = 0
                    yield event
            restarted(RestartReason.EXPIRED)
            if state.progress:
                empty = 0
            else:  # a server (or proxy) that ends every watch at once must not make us spin
                await sleep(backoff.delay(empty))
                empty += 1
        except (_Gone, errors.Gone) as e:
            bound.info("watch resourceVersion gone, relisting", resource_version=state.rv, error=str(e))
            list_from = ""
            restarted(RestartReason.GONE)
            gones += 1
            if gones > 1:  # a relist that is at once too old again: do not spin
                await sleep(backoff.delay(gones - 2))
        except _Cut as e:
            bound.info("watch cut, resuming", resource_version=state.rv, error=str(e))
            restarted(RestartReason.DROPPED)
        except Exception as e:  # a watcher must outlive anything the API (or a bug) throws at it
            if not isinstance(e, errors.ApiError):
                bound.exception("watch failed unexpectedly")
                e = errors.ApiError(f"{type(e).__name__}: {e}")
                reason = RestartReason.INTERNAL
            else:
                reason = _reason(e)
            delay = backoff.delay(failures, retry_after=e.retry_after)
            failures += 1
            bound.warning(
                "watch failed",
                reason=reason.value,
                status=e.status,
                error=str(e),
                attempt=failures,
                delay=round(delay, 3),
            )
            restarted(reason)
            if not disconnected:
                disconnected = True
                yield events.Disconnected(resource=res.name, error=f"{reason.value}: {e}")
            if list_from is None:
                list_from = state.rv or "0"
            await sleep(delay)
