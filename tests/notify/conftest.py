"""Real local receivers for real apprise: an HTTP endpoint and an SMTP server on loopback.

Alerts travel the whole way (apprise plugin, HTTP or SMTP, a socket on 127.0.0.1) and the
tests assert on what arrived. Arrivals go into an asyncio.Queue, so tests wait on them with
a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `tests.notify.builders` importable however pytest is invoked
    sys.path.insert(0, str(REPO_ROOT))

SECRET = "hunter2-s3cr3t-t0ken"


@dataclass
class Arrival:
    path: str
    kind: str  # "json" | "form"
    data: dict[str, Any]
    authorization: str

    @property
    def title(self) -> str:
        return str(self.data.get("title", ""))

    @property
    def body(self) -> str:
        return str(self.data.get("message", ""))


@dataclass
class HttpReceiver:
    port: int
    arrivals: asyncio.Queue[Arrival] = field(default_factory=asyncio.Queue)
    script: list[int] = field(default_factory=list)  # statuses to answer first, then 200
    gate: asyncio.Event | None = None  # when set up, requests wait for it: a slow target
    seen: int = 0  # requests of any status

    def url(self, schema: str = "json", path: str = "hook") -> str:
        return f"{schema}://healer:{SECRET}@127.0.0.1:{self.port}/{path}"

    async def next(self, timeout_s: float = 10.0) -> Arrival:
        return await asyncio.wait_for(self.arrivals.get(), timeout=timeout_s)

    def drained(self) -> list[Arrival]:
        out = []
        while not self.arrivals.empty():
            out.append(self.arrivals.get_nowait())
        return out


@pytest.fixture
async def http_receiver() -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver(port=0)

    async def handle(request: web.Request) -> web.Response:
        receiver.seen += 1
        if receiver.gate is not None:
            await receiver.gate.wait()
        if receiver.script:
            return web.Response(status=receiver.script.pop(0), text="scripted failure")
        if request.content_type == "application/json":
            data = await request.json()
            kind = "json"
        else:
            data = dict(await request.post())
            kind = "form"
        await receiver.arrivals.put(
            Arrival(
                path=request.path,
                kind=kind,
                data=data,
                authorization=request.headers.get("Authorization", ""),
            )
        )
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = int(runner.addresses[0][1])
    try:
        yield receiver
    finally:
        await runner.cleanup()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def text(self) -> str:
        parts = []
        for part in self.message.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        return "\n".join(parts)


@dataclass
class SmtpReceiver:
    port: int
    mails: asyncio.Queue[Mail] = field(default_factory=asyncio.Queue)

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?mode=insecure&from=healer@example.com&to=ops@example.com"

    async def next(self, timeout_s: float = 10.0) -> Mail:
        return await asyncio.wait_for(self.mails.get(), timeout=timeout_s)


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        await self.receiver.mails.put(
            Mail(sender=envelope.mail_from or "", recipients=list(envelope.rcpt_tos), message=parsed)
        )
        return "250 OK"


@pytest.fixture
async def smtp_receiver() -> AsyncIterator[SmtpReceiver]:
    receiver = SmtpReceiver(port=0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(_Handler(receiver), hostname="localhost", loop=loop), "127.0.0.1", 0
    )
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()
