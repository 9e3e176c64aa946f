"""A real local HTTP endpoint for apprise's json:// URLs, so e2e tests read what was sent.

healer's notifier posts through apprise exactly as in production; the receiver keeps each
JSON body in arrival order (`title`, `message`, `type`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Receiver:
    url: str
    arrivals: list[dict[str, Any]] = field(default_factory=list)

    def titles(self) -> list[str]:
        return [str(a.get("title", "")) for a in self.arrivals]

    def text(self, message: dict[str, Any]) -> str:
        return f"{message.get('title', '')}\n{message.get('message', '')}"


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """Listens on 127.0.0.1 (a free port) until the block ends."""
    app = web.Application()
    runner = web.AppRunner(app)
    rx = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        rx.arrivals.append(await request.json())
        return web.Response(text="ok")

    app.router.add_post("/{tail:.*}", handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rx.url = f"json://127.0.0.1:{int(runner.addresses[0][1])}/alerts"
    try:
        yield rx
    finally:
        await runner.cleanup()
