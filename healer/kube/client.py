"""`Kube`: the KubeApi over aiohttp, configured in-cluster by healer or from a kubeconfig.

In a pod (the path every DaemonSet agent takes) `healer.kube.incluster` reads the service
account's token and CA and builds the aiohttp session itself, as client-go's
`rest.InClusterConfig` does, so the agent never imports kubernetes-asyncio (~35 MiB of RSS).
Outside a cluster, or with `--kubeconfig`, kubernetes-asyncio's loader handles the file
(tokens, client certificates, CA, exec plugins, OIDC, TLS server names, proxies) and its
`RESTClientObject` builds the matching session; it is imported only on that path. Neither path
uses the generated API layer: building a V1Pod costs ~2 ms per event, while healer needs a
dozen fields. So requests go out as raw JSON (orjson), answers come back as dicts for
`healer.model.decode`, and watches hand back raw lines.

Failures become `healer.kube.errors` classes: the HTTP status picks the class, the Status
body gives reason and message, Retry-After (header, or APF's `details.retryAfterSeconds`)
gives `retry_after`, and anything without an HTTP answer (refused, reset, timeout, a cut
stream, an untrusted certificate) is `Unreachable`. A token bucket spaces all requests,
watches included. A 401 calls the `reauth` hook once (re-read the token or the kubeconfig:
rotated credentials) before the request is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

from healer.kube import errors, incluster, ratelimit
from healer.kube.api import JsonBody
from healer.kube.errors import ConfigError as ConfigError  # re-exported: callers catch client.ConfigError

log = structlog.get_logger(__name__)

DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)

AuthHeaders = Callable[[], Awaitable[Mapping[str, str]]]


async def _no_auth() -> Mapping[str, str]:
    return {}


def _describe(e: BaseException) -> str:
    """A transport error in one line; an untrusted server certificate says so plainly."""
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        why = getattr(e.certificate_error, "verify_message", "") or e.certificate_error
        return f"the API server's certificate is not trusted by the configured CA: verify failed ({why})"
    return f"{type(e).__name__}: {e}"


def _retry_after(headers: Mapping[str, str], status: Mapping[str, Any] | None) -> float | None:
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass  # an HTTP date: rare from the apiserver; fall through to the body
    if status:
        details = status.get("details")
        if isinstance(details, dict):
            seconds = details.get("retryAfterSeconds")
            if isinstance(seconds, int | float):
                return float(seconds)
    return None


def error_for(status: int, body: bytes, headers: Mapping[str, str]) -> errors.ApiError:
    """The `errors` instance for a non-2xx answer (Status body parsed when there is one)."""
    parsed: Mapping[str, Any] | None = None
    reason = ""
    message = ""
    try:
        decoded = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        parsed = decoded
        reason = str(decoded.get("reason") or "")
        message = str(decoded.get("message") or "")
    elif body:
        message = body[:256].decode("utf-8", "replace")  # not a Status: keep a little, never all
    cls = errors.for_status(status)
    return cls(
        message or f"HTTP {status}",
        status=status,
        reason=reason,
        retry_after=_retry_after(headers, parsed),
    )


class Kube:
    """One API server: `request` for single calls, `stream` for watches."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        host: str,
        auth: AuthHeaders = _no_auth,
        reauth: Callable[[], Awaitable[None]] | None = None,
        limiter: ratelimit.TokenBucket | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        server_hostname: str | None = None,
        proxy: str | None = None,
    ) -> None:
        self._session = session
        self._owns_session = True
        self.host = host.rstrip("/")
        self._auth = auth
        self._reauth = reauth
        self.limiter = limiter or ratelimit.TokenBucket()
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._extra: dict[str, Any] = {}
        if server_hostname:
            self._extra["server_hostname"] = server_hostname
        if proxy:
            self._extra["proxy"] = proxy

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", **(await self._auth())}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

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
        data = orjson.dumps(body) if body is not None else None
        for attempt in (0, 1):
            await self.limiter.acquire()
            headers = await self._headers(content_type if data is not None else None)
            timeout = aiohttp.ClientTimeout(
                total=request_timeout or self.request_timeout, sock_connect=self.connect_timeout
            )
            try:
                async with self._session.request(
                    method,
                    self.host + path,
                    params=query,
                    data=data,
                    headers=headers,
                    timeout=timeout,
                    **self._extra,
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
                    resp_headers = resp.headers
            except _TRANSPORT_ERRORS as e:
                raise errors.Unreachable(f"{method} {path}: {_describe(e)}") from e
            if 200 <= status < 300:
                if not raw:
                    return {}
                try:
                    return orjson.loads(raw)
                except orjson.JSONDecodeError as e:
                    msg = f"{method} {path}: answer is not JSON: {e}"
                    raise errors.ServerError(msg, status=status) from e
            if status == 401 and attempt == 0 and self._reauth is not None:
                log.info("api unauthorized, reloading credentials", path=path)
                await self._reauth()
                continue
            raise error_for(status, raw, resp_headers)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the KubeApi contract's name: inactivity)
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """GET `path` and yield an iterator over its non-empty lines.

        `timeout` is the inactivity timeout: no byte for that long ends the stream with
        `Unreachable` (a half-open connection looks exactly like a quiet watch otherwise).
        """
        await self.limiter.acquire()
        headers = await self._headers(None)
        client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=timeout
        )
        try:
            resp = await self._session.get(
                self.host + path, params=query, headers=headers, timeout=client_timeout, **self._extra
            )
        except _TRANSPORT_ERRORS as e:
            raise errors.Unreachable(f"GET {path}: {_describe(e)}") from e
        try:
            if not 200 <= resp.status < 300:
                try:
                    raw = await resp.read()
                except _TRANSPORT_ERRORS:
                    raw = b""
                raise error_for(resp.status, raw, resp.headers)
            yield _lines(resp, path)
        finally:
            resp.release()
            resp.close()  # a watch is never reused: drop the connection rather than drain it

    def sibling(self, *, qps: float, burst: int) -> Kube:
        """The same connection pool and credentials behind a token bucket of its own.

        For traffic that must not queue behind a burst of writes: a Lease renewal stuck
        behind 60 evictions at 5 QPS would miss its 10 s deadline and drop leadership in the
        middle of an incident (kube-controller-manager gives leader election its own client
        for the same reason). Closing a sibling leaves the shared session open.
        """
        twin = Kube(
            session=self._session,
            host=self.host,
            auth=self._auth,
            reauth=self._reauth,
            limiter=ratelimit.TokenBucket(rate=qps, burst=burst),
            request_timeout=self.request_timeout,
            connect_timeout=self.connect_timeout,
        )
        twin._extra = dict(self._extra)
        twin._owns_session = False
        return twin

    async def close(self) -> None:
        if self._owns_session:
            await self._session.close()


async def _lines(resp: aiohttp.ClientResponse, path: str) -> AsyncIterator[bytes]:
    try:
        async for line in resp.content:
            if len(line) > 1:  # skip blank keep-alive lines
                yield line
    except _TRANSPORT_ERRORS as e:
        raise errors.Unreachable(f"watch {path}: {type(e).__name__}: {e}") from e


def _exists(path: str) -> bool:
    return Path(path.split(os.pathsep)[0]).exists()


def _fallback_kubeconfig(why: incluster.NotInCluster) -> str:
    """Outside a cluster: $KUBECONFIG or ~/.kube/config, as kubectl does."""
    fallback = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not _exists(fallback):
        raise ConfigError(f"not in a cluster ({why}) and no kubeconfig at {fallback}") from why
    return fallback


def in_cluster(
    config: incluster.InCluster,
    *,
    qps: float = ratelimit.DEFAULT_QPS,
    burst: int = ratelimit.DEFAULT_BURST,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Kube:
    """A `Kube` on its own session for a loaded in-cluster configuration; the caller closes it.

    (Call inside a running loop.) Every request reads the token through `config.token`, which
    re-reads the file when it is a minute old and after a 401."""
    return Kube(
        session=config.session(),
        host=config.host,
        auth=config.token.headers,
        reauth=config.token.reauth,
        limiter=ratelimit.TokenBucket(rate=qps, burst=burst),
        request_timeout=request_timeout,
        connect_timeout=connect_timeout,
    )


async def _from_kubeconfig(
    kubeconfig: str | os.PathLike[str],
    context: str | None,
    *,
    qps: float,
    burst: int,
    request_timeout: float,
    connect_timeout: float,
) -> Kube:
    """A `Kube` through kubernetes-asyncio's kubeconfig loader and transport (imported only here)."""
    from kubernetes_asyncio import client as k8s_client
    from kubernetes_asyncio import config as k8s_config
    from kubernetes_asyncio.client import rest

    path = str(kubeconfig)
    if not _exists(path):
        raise ConfigError(f"kubeconfig {path} does not exist")
    configuration: Any = k8s_client.Configuration()

    async def load() -> None:
        try:
            await k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
        except k8s_config.ConfigException as e:
            raise ConfigError(f"kubeconfig {path}: {e}") from e

    await load()
    transport = rest.RESTClientObject(configuration)  # its session carries TLS, CA and client certs

    async def auth() -> Mapping[str, str]:
        settings = await configuration.auth_settings()
        token = settings.get("BearerToken")
        return {"Authorization": token["value"]} if token and token.get("value") else {}

    return Kube(
        session=transport.pool_manager,
        host=configuration.host,
        auth=auth,
        reauth=load,  # a 401 reloads the file: an exec plugin's new token, a renewed certificate
        limiter=ratelimit.TokenBucket(rate=qps, burst=burst),
        request_timeout=request_timeout,
        connect_timeout=connect_timeout,
        server_hostname=configuration.tls_server_name,
        proxy=configuration.proxy,
    )


@contextlib.asynccontextmanager
async def connect(
    *,
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    service_account_dir: str | os.PathLike[str] | None = None,
    qps: float = ratelimit.DEFAULT_QPS,
    burst: int = ratelimit.DEFAULT_BURST,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[Kube]:
    """A `Kube` for `kubeconfig` (and `context`), or in-cluster config when none is given
    (falling back to $KUBECONFIG or ~/.kube/config outside a cluster); closed on exit.

    `service_account_dir` holds the in-cluster `token` and `ca.crt` (default
    /var/run/secrets/kubernetes.io/serviceaccount). Raises `ConfigError` before yielding."""
    config: incluster.InCluster | None = None
    if kubeconfig is None:
        try:
            config = incluster.load(service_account_dir or incluster.SERVICE_ACCOUNT_DIR)
        except incluster.NotInCluster as e:
            kubeconfig = _fallback_kubeconfig(e)
    timeouts = {"request_timeout": request_timeout, "connect_timeout": connect_timeout}
    if config is not None:
        kube = in_cluster(config, qps=qps, burst=burst, **timeouts)
    else:
        assert kubeconfig is not None
        kube = await _from_kubeconfig(kubeconfig, context, qps=qps, burst=burst, **timeouts)
    try:
        yield kube
    finally:
        await kube.close()
