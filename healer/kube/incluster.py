"""In-cluster configuration (the path every DaemonSet pod takes), without kubernetes-asyncio.

Why it exists: importing kubernetes-asyncio costs a node agent ~35 MiB of RSS (its package
`__init__` imports every generated API and model, and its config loader imports `ApiClient`),
a third of the agent's memory, paid once per node. In a pod healer needs none of that: only
the API server's address, the service account's token and CA. So this module does what
client-go's `rest.InClusterConfig` does, with what healer already imports (ssl, aiohttp):

- host: `https://` + `KUBERNETES_SERVICE_HOST` (an IPv6 address in brackets) + `:` +
  `KUBERNETES_SERVICE_PORT`; either unset or empty means "not in a cluster" (`NotInCluster`),
  and the caller falls back to a kubeconfig;
- token: `<service account dir>/token`, re-read when the copy in memory is older than a minute
  and at once after a 401 (client-go's cached file token source): the kubelet rotates bound
  service-account tokens in place, so a long-running agent must never keep the first one;
- CA: `<service account dir>/ca.crt` into an `ssl.SSLContext` that verifies the server.

Kubeconfig files (exec plugins, OIDC, client certificates) stay with kubernetes-asyncio in
`healer.kube.client`, imported only on that path. Every problem is a one-line `ConfigError`
naming the file or variable.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog

from healer.kube.errors import ConfigError

log = structlog.get_logger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
HOST_ENV = "KUBERNETES_SERVICE_HOST"
PORT_ENV = "KUBERNETES_SERVICE_PORT"
TOKEN_MAX_AGE_S = 60.0  # client-go re-reads the token file once a minute
# Large objects in watch events overflow aiohttp's default 64 KiB read buffer (a line must fit
# twice the buffer); etcd's request limit is 1.5 MiB. kubernetes-asyncio uses the same value.
READ_BUFSIZE = 2**21
CONNECTION_LIMIT = 100  # kubernetes-asyncio's connection_pool_maxsize


class NotInCluster(ConfigError):
    """KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is unset or empty."""


def host_url(host: str, port: str) -> str:
    """`https://host:port`, with an IPv6 host in brackets (Go's net.JoinHostPort)."""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"service account token {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"service account token {path}: cannot read it ({type(e).__name__})") from None
    if not token:
        raise ConfigError(f"service account token {path} is empty")
    return token


class TokenFile:
    """The bearer token in `path`: read at once, re-read when older than `max_age_s` or on `reload()`.

    A failed re-read keeps the token it has (and logs): the kubelet swaps the file atomically,
    so a failure is rare and the old token is usually still valid for a while.
    """

    def __init__(
        self, path: Path, *, max_age_s: float = TOKEN_MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.max_age_s = max_age_s
        self._clock = clock
        self._token = _read_token(path)
        self._read_at = clock()

    def get(self) -> str:
        if self._clock() - self._read_at >= self.max_age_s:
            self.reload()
        return self._token

    def reload(self) -> None:
        try:
            self._token = _read_token(self.path)
        except ConfigError as e:
            log.warning("service account token not re-read, keeping the one in memory", error=str(e))
        self._read_at = self._clock()  # a failure is retried after max_age_s (or the next 401)

    async def headers(self) -> Mapping[str, str]:
        """`Kube`'s `auth` hook."""
        return {"Authorization": f"Bearer {self.get()}"}

    async def reauth(self) -> None:
        """`Kube`'s `reauth` hook: the API said 401, so the token in memory may be a rotated-out one."""
        self.reload()


def ssl_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts exactly the certificates in `ca_file` (PEM)."""
    if not ca_file.is_file():
        raise ConfigError(f"service account CA {ca_file} does not exist")
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as e:
        why = e.reason or str(e)
        raise ConfigError(f"service account CA {ca_file}: no usable PEM certificate ({why})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"service account CA {ca_file}: cannot read it ({type(e).__name__})") from None


@dataclass(frozen=True, slots=True)
class InCluster:
    """What a pod knows about its API server: where it is, how to prove who we are, whom to trust."""

    host: str
    token: TokenFile
    ssl: ssl.SSLContext

    def session(self) -> aiohttp.ClientSession:
        """An aiohttp session that verifies the API server against the CA (call inside a loop).

        `trust_env` honours HTTPS_PROXY / NO_PROXY as client-go's ProxyFromEnvironment does."""
        connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, ssl=self.ssl)
        return aiohttp.ClientSession(connector=connector, trust_env=True, read_bufsize=READ_BUFSIZE)


def load(
    service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
    *,
    env: Mapping[str, str] | None = None,
    token_max_age_s: float = TOKEN_MAX_AGE_S,
    clock: Callable[[], float] = time.monotonic,
) -> InCluster:
    """The in-cluster configuration; `NotInCluster` outside a pod, `ConfigError` for a broken one."""
    e = os.environ if env is None else env
    host, port = e.get(HOST_ENV, ""), e.get(PORT_ENV, "")
    if not host or not port:
        unset = " and ".join(name for name, value in ((HOST_ENV, host), (PORT_ENV, port)) if not value)
        raise NotInCluster(f"{unset} not set")
    folder = Path(service_account_dir)
    token = TokenFile(folder / "token", max_age_s=token_max_age_s, clock=clock)
    return InCluster(host=host_url(host, port), token=token, ssl=ssl_context(folder / "ca.crt"))
