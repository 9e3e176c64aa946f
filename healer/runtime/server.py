"""/healthz, /readyz and /metrics on one small aiohttp server.

Kubelet probes and Prometheus need an HTTP port; aiohttp is already in the process (the
kube transport), so it costs nothing extra. Liveness says the event loop answers; readiness
says the view is synced, so a pod that cannot see the API is not reported ready.
"""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client as prom
from aiohttp import web

from healer.runtime.metrics import Metrics


class HealthServer:
    def __init__(
        self, *, metrics: Metrics, ready: Callable[[], bool], host: str = "0.0.0.0", port: int
    ) -> None:
        self._metrics = metrics
        self._ready = ready
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = port

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not synced\n")

    async def _metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": prom.CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        sockets = self._runner.addresses
        if sockets:
            self.port = int(sockets[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
