"""A small Kubernetes API server (aiohttp.web) for fault-injection tests over real HTTP.

The real control plane proves healer works; it cannot be made to answer 429 on the third
request, forget a resourceVersion on demand, or cut a watch mid-stream. This server can.
It keeps what the client depends on, with the API server's semantics:

- objects under the real URL shapes (`/api/v1/nodes/x`, `/apis/coordination.k8s.io/v1/
  namespaces/ns/leases/x`, `.../status`, `.../eviction`), a global resourceVersion counter,
  uid, creationTimestamp, generateName;
- LIST with `limit`/`continue`, list resourceVersion, field selectors (`a=b`, `a!=b`,
  dotted paths such as `spec.nodeName`) and equality label selectors;
- WATCH from a resourceVersion (history replay), `resourceVersion` unset/"0" = synthetic
  ADDED for the current state, selector-aware ADDED/DELETED when an object moves in or out,
  bookmarks, `timeoutSeconds`, and "too old resourceVersion" (410, as an ERROR event like
  the watch cache or as an HTTP status) after `compact()`;
- POST (409 AlreadyExists), PUT and PATCH (merge, strategic treated as merge, JSON patch)
  with resourceVersion preconditions (409 Conflict), DELETE with uid/resourceVersion
  preconditions, evictions (429 while `pdb_blocked` names the pod);
- faults: `fail(...)` scripted statuses (429 + Retry-After, 500, ...), `drop_next(...)`
  (close the connection without an answer), `cut_watches()` (abort open streams), `down()`
  / `up()` (stop listening: connection refused), bearer-token auth;
- HTTPS when given a server `ssl.SSLContext` (`tests/api/tls.py` makes one from a test CA), for
  the in-cluster configuration, which only speaks https.

Every request is recorded in `requests` so tests can assert what the client sent.
"""

from __future__ import annotations

import asyncio
import copy
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import orjson
from aiohttp import web

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped

CLUSTER_SCOPED = {"nodes", "persistentvolumes", "namespaces"}
KINDS = {
    "nodes": "Node",
    "pods": "Pod",
    "persistentvolumes": "PersistentVolume",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "leases": "Lease",
    "events": "Event",
    "namespaces": "Namespace",
}


def status_body(code: int, reason: str, message: str, **details: Any) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


class HTTPFault(Exception):
    def __init__(self, code: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        return _json(status_body(self.code, self.reason, self.message), self.code, self.headers)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float
    status: int = 0  # 0 until answered (or when the connection was dropped)
    authorization: str = ""  # the Authorization header as sent (which token a client used)


@dataclass
class Fault:
    """A scripted answer for matching requests, `times` times (None: until removed)."""

    status: int = 500
    method: str | None = None
    path: str | None = None  # substring of the path
    watch: bool | None = None  # only watches / only non-watches
    times: int | None = 1
    retry_after: float | None = None
    reason: str = ""
    drop: bool = False  # close the connection instead of answering
    hits: int = 0

    def matches(self, method: str, path: str, is_watch: bool) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method != method:
            return False
        if self.path and self.path not in path:
            return False
        return self.watch is None or self.watch == is_watch


@dataclass
class Change:
    rv: int
    type: str
    obj: Obj
    old: Obj | None


@dataclass
class Store:
    objects: dict[Key, Obj] = field(default_factory=dict)
    history: list[Change] = field(default_factory=list)
    watchers: set[asyncio.Queue[Change | None]] = field(default_factory=set)
    compacted: int = 0


def _lookup(obj: Obj, dotted: str) -> str:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    return "" if cur is None else str(cur)


def _selector_matches(obj: Obj | None, selector: str | None, *, labels: bool) -> bool:
    if obj is None:
        return False
    if not selector:
        return True
    for term in selector.split(","):
        if "!=" in term:
            k, v = term.split("!=", 1)
            neg = True
        else:
            k, v = term.split("=", 1)
            neg = False
            k = k.rstrip("=")
        actual = (obj.get("metadata", {}).get("labels") or {}).get(k, "") if labels else _lookup(obj, k)
        if (actual == v) == neg:
            return False
    return True


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _merge(result.get(k), v)
    return result


def _json_patch(obj: Obj, ops: list[Obj]) -> Obj:
    doc = copy.deepcopy(obj)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op["value"]:
                raise HTTPFault(422, "Invalid", f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise HTTPFault(422, "Invalid", f"no value at {op['path']}")
                parent[last] = op["value"]
        elif kind == "remove":
            try:
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            except (KeyError, IndexError) as e:
                raise HTTPFault(422, "Invalid", f"no value at {op['path']}") from e
        else:
            raise HTTPFault(422, "Invalid", f"unsupported op {kind}")
    return doc


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeApi:
    """The server. `await start()` / `await stop()`; `url` once started."""

    def __init__(
        self,
        *,
        token: str | None = None,
        bookmark_interval: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.token = token
        self.ssl_context = ssl_context  # serve https with it
        self.bookmark_interval = bookmark_interval  # 0: bookmarks only at the end of a timed watch
        self.gone_as_status = False  # answer a too-old watch with HTTP 410 rather than an ERROR event
        self.max_watch_seconds: float | None = None  # cap timeoutSeconds (fast tests)
        self.pdb_blocked: set[Key] = set()  # evictions of these pods get 429
        self.error_event_next: Obj | None = None  # a Status to send as an ERROR event (then close)
        self.bookmarks_sent: list[str] = []
        self.rv = 100
        self.stores: dict[str, Store] = {}
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._streams: set[web.StreamResponse] = set()
        self._changed = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        """`async with FakeApi(...) as api:` serves until the block ends (`start`, then `stop`)."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await self.up()

    async def up(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def down(self) -> None:
        """Stop listening and cut every open watch: clients see refused connections."""
        self.cut_watches()
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self._runner.server if self._runner is not None else None
        if server is not None:  # keep-alive connections too, or a pooled one would still be served
            for transport in list(server._connections.values()):
                transport.abort()

    async def stop(self) -> None:
        self.cut_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- faults ------------------------------------------------------------------------
    def fail(self, status: int = 500, **kwargs: Any) -> Fault:
        fault = Fault(status=status, **kwargs)
        self.faults.append(fault)
        return fault

    def drop_next(self, **kwargs: Any) -> Fault:
        return self.fail(drop=True, **kwargs)

    def cut_watches(self) -> None:
        """Abort every open watch stream (no terminating chunk: the client sees a cut)."""
        for resp in list(self._streams):
            transport = resp._req.transport if resp._req is not None else None
            if transport is not None:
                transport.abort()
        self._streams.clear()

    def compact(self) -> None:
        """Forget history up to now: a watch from an older resourceVersion gets 410."""
        for store in self.stores.values():
            store.compacted = self.rv
            store.history.clear()

    # ---- direct state access (no HTTP) ------------------------------------------------
    def store(self, resource: str) -> Store:
        return self.stores.setdefault(resource, Store())

    def put(self, resource: str, obj: Obj) -> Obj:
        """Create or replace `obj` (as an API write would: new RV, watch event)."""
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta["name"])
        store = self.store(resource)
        old = store.objects.get(key)
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
        else:
            meta.setdefault("uid", old["metadata"]["uid"])
            meta.setdefault("creationTimestamp", old["metadata"].get("creationTimestamp"))
        self._commit(resource, key, obj, old, "MODIFIED" if old else "ADDED")
        return obj

    def remove(self, resource: str, key: Key) -> Obj:
        store = self.store(resource)
        old = store.objects.pop(key)
        gone = copy.deepcopy(old)
        self.rv += 1
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(store, Change(self.rv, "DELETED", gone, old))
        return gone

    def get(self, resource: str, key: Key) -> Obj | None:
        return self.store(resource).objects.get(key)

    def _commit(self, resource: str, key: Key, obj: Obj, old: Obj | None, kind: str) -> None:
        store = self.store(resource)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        store.objects[key] = obj
        self._emit(store, Change(self.rv, kind, copy.deepcopy(obj), old))

    def _emit(self, store: Store, change: Change) -> None:
        store.history.append(change)
        for q in store.watchers:
            q.put_nowait(change)

    # ---- HTTP --------------------------------------------------------------------------
    @staticmethod
    def _parse(path: str) -> tuple[str, str, str, str]:
        """(resource, namespace, name, subresource) from an API path."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"]:
            rest = parts[2:]
            prefix = "v1"
        elif parts[:1] == ["apis"]:
            rest = parts[3:]
            prefix = f"{parts[1]}/{parts[2]}"
        else:
            raise HTTPFault(404, "NotFound", f"no route {path}")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace = rest[1]
            rest = rest[2:]
        if not rest:
            raise HTTPFault(404, "NotFound", f"no route {path}")
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        del prefix
        return plural, namespace, name, sub

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        is_watch = query.get("watch", "").lower() in ("true", "1")
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        record = Recorded(
            request.method,
            request.path,
            query,
            body,
            time.monotonic(),
            authorization=request.headers.get("Authorization", ""),
        )
        self.requests.append(record)
        response = await self._serve(request, query, body, is_watch)
        record.status = response.status
        return response

    async def _serve(
        self, request: web.Request, query: dict[str, str], body: Any, is_watch: bool
    ) -> web.StreamResponse:
        for fault in self.faults:
            if fault.matches(request.method, request.path, is_watch):
                fault.hits += 1
                if fault.drop:
                    assert request.transport is not None
                    request.transport.abort()
                    raise asyncio.CancelledError
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                reason = fault.reason or {429: "TooManyRequests", 500: "InternalError"}.get(fault.status, "")
                return _json(
                    status_body(fault.status, reason, f"injected {fault.status}"), fault.status, headers
                )
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(status_body(401, "Unauthorized", "Unauthorized"), 401)
        try:
            resource, namespace, name, sub = self._parse(request.path)
            if request.method == "GET" and not name:
                if is_watch:
                    return await self._watch(request, resource, namespace, query)
                return self._list(resource, namespace, query)
            return self._write(request.method, resource, namespace, name, sub, body, query)
        except HTTPFault as e:
            return e.response()

    def _list(self, resource: str, namespace: str, query: dict[str, str]) -> web.Response:
        store = self.store(resource)
        items = [
            o
            for k, o in sorted(store.objects.items())
            if (not namespace or k[0] == namespace)
            and _selector_matches(o, query.get("fieldSelector"), labels=False)
            and _selector_matches(o, query.get("labelSelector"), labels=True)
        ]
        start = 0
        if query.get("continue"):
            token_rv, _, offset = query["continue"].partition(":")
            if int(token_rv) < store.compacted:
                raise HTTPFault(410, "Expired", "The provided continue parameter is too old")
            start = int(offset)
        limit = int(query.get("limit") or 0)
        meta: Obj = {"resourceVersion": str(self.rv)}
        page = items[start:]
        if limit and len(page) > limit:
            page = page[:limit]
            meta["continue"] = f"{self.rv}:{start + limit}"
        return _json({"kind": f"{KINDS.get(resource, 'Object')}List", "metadata": meta, "items": page})

    async def _watch(
        self, request: web.Request, resource: str, namespace: str, query: dict[str, str]
    ) -> web.StreamResponse:
        store = self.store(resource)
        fsel, lsel = query.get("fieldSelector"), query.get("labelSelector")
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        since = query.get("resourceVersion", "")
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        if self.max_watch_seconds is not None:
            timeout = min(timeout or self.max_watch_seconds, self.max_watch_seconds)
        if since not in ("", "0") and int(since) < store.compacted and self.gone_as_status:
            raise HTTPFault(410, "Expired", f"too old resource version: {since} ({store.compacted})")
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        store.watchers.add(queue)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        self._streams.add(resp)

        def visible(o: Obj | None) -> bool:
            return (
                o is not None
                and (not namespace or o["metadata"].get("namespace", "") == namespace)
                and _selector_matches(o, fsel, labels=False)
                and _selector_matches(o, lsel, labels=True)
            )

        async def send(kind: str, obj: Obj) -> None:
            await resp.write(orjson.dumps({"type": kind, "object": obj}) + b"\n")

        try:
            if since not in ("", "0") and int(since) < store.compacted:
                status = status_body(410, "Expired", f"too old resource version: {since} ({store.compacted})")
                await send("ERROR", status)
                return resp
            if since in ("", "0"):
                for o in list(store.objects.values()):
                    if visible(o):
                        await send("ADDED", o)
                last = self.rv
            else:
                last = int(since)
                for change in list(store.history):
                    if change.rv > last:
                        queue.put_nowait(change)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            next_bookmark = loop.time() + self.bookmark_interval if self.bookmark_interval else None
            while True:
                now = loop.time()
                waits = [t - now for t in (deadline, next_bookmark) if t is not None]
                try:
                    change = await asyncio.wait_for(queue.get(), max(0.0, min(waits)) if waits else None)
                except TimeoutError:
                    now = loop.time()
                    if deadline is not None and now >= deadline:
                        if bookmarks:
                            await send("BOOKMARK", self._bookmark(resource))
                        return resp
                    if bookmarks and next_bookmark is not None:
                        await send("BOOKMARK", self._bookmark(resource))
                        next_bookmark = now + self.bookmark_interval
                    continue
                if change is None:
                    return resp
                if self.error_event_next is not None:
                    error, self.error_event_next = self.error_event_next, None
                    await send("ERROR", error)
                    return resp
                if change.rv <= last:
                    continue
                last = change.rv
                new_vis = change.type != "DELETED" and visible(change.obj)
                old_vis = visible(change.old)
                if change.type == "DELETED":
                    if old_vis:
                        await send("DELETED", change.obj)
                elif new_vis and not old_vis:
                    await send("ADDED", change.obj)
                elif new_vis:
                    await send("MODIFIED", change.obj)
                elif old_vis:
                    await send("DELETED", change.obj)
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        finally:
            store.watchers.discard(queue)
            self._streams.discard(resp)

    def _bookmark(self, resource: str) -> Obj:
        self.bookmarks_sent.append(str(self.rv))
        return {"kind": KINDS.get(resource, "Object"), "metadata": {"resourceVersion": str(self.rv)}}

    def _write(
        self,
        method: str,
        resource: str,
        namespace: str,
        name: str,
        sub: str,
        body: Any,
        query: dict[str, str],
    ) -> web.Response:
        store = self.store(resource)
        if method == "POST" and not name:
            if not isinstance(body, dict):
                raise HTTPFault(400, "BadRequest", "body must be an object")
            meta = body.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if not meta.get("name"):
                raise HTTPFault(422, "Invalid", "metadata.name: Required value")
            if namespace:
                meta["namespace"] = namespace
            key = (namespace, meta["name"])
            if key in store.objects:
                raise HTTPFault(409, "AlreadyExists", f'{resource} "{meta["name"]}" already exists')
            meta.pop("resourceVersion", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            self._commit(resource, key, body, None, "ADDED")
            return _json(body, 201)
        key = (namespace, name)
        current = store.objects.get(key)
        if method == "POST" and sub == "eviction":
            if current is None:
                raise HTTPFault(404, "NotFound", f'pods "{name}" not found')
            if key in self.pdb_blocked:
                msg = "Cannot evict pod as it would violate the pod's disruption budget."
                raise HTTPFault(429, "TooManyRequests", msg)
            self.remove(resource, key)
            return _json(status_body(201, "", "") | {"status": "Success"}, 201)
        if current is None:
            raise HTTPFault(404, "NotFound", f'{resource} "{name}" not found')
        if method == "GET":
            return _json(current)
        if method == "DELETE":
            pre = (body or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise HTTPFault(409, "Conflict", "Precondition failed: UID in precondition does not match")
            current_rv = current["metadata"]["resourceVersion"]
            if pre.get("resourceVersion") and pre["resourceVersion"] != current_rv:
                raise HTTPFault(409, "Conflict", "Precondition failed: ResourceVersion does not match")
            return _json(self.remove(resource, key))
        if method == "PUT":
            if not isinstance(body, dict):
                raise HTTPFault(400, "BadRequest", "body must be an object")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise HTTPFault(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )
            new = copy.deepcopy(body)
        elif method == "PATCH":
            if isinstance(body, list):
                new = _json_patch(current, body)
            else:
                new = _merge(current, body)
                rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
                if rv and rv != current["metadata"]["resourceVersion"]:
                    raise HTTPFault(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}"')
        else:
            raise HTTPFault(405, "MethodNotAllowed", f"{method} not allowed")
        meta = new.setdefault("metadata", {})
        meta["name"] = name
        if namespace:
            meta["namespace"] = namespace
        meta["uid"] = current["metadata"]["uid"]
        meta["creationTimestamp"] = current["metadata"].get("creationTimestamp")
        self._commit(resource, key, new, current, "MODIFIED")
        return _json(new)


def node(name: str, *, ready: str = "True", labels: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def pod(name: str, *, namespace: str = "default", node_name: str = "", phase: str = "Running") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase},
    }


Predicate = Callable[[Recorded], bool]
