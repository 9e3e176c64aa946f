"""Delivery through real apprise to real receivers on loopback: what arrives, and what does not."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from healer.model.actions import Severity, Stage
from healer.notify import delivery, targets
from healer.notify.delivery import Dispatcher, Metrics, Settings, TokenBucket
from healer.notify.messages import Item, Message, Section
from tests.notify.conftest import SECRET, HttpReceiver, SmtpReceiver

FAST = Settings(retries=2, backoff_s=0.01, rate_per_minute=0, digest_threshold=10, digest_window_s=0.3)


def _message(
    n: int = 0, *, tags: frozenset[str] = frozenset(), severity: Severity = Severity.WARNING
) -> Message:
    return Message(
        key=f"node-not-ready/node{n}",
        stage=Stage.OPENED,
        title=f"node{n} NotReady: 1 pod moved",
        sections=(
            Section(
                heading="What it could not do",
                items=(
                    Item(text="db/postgres-0 waits for fencing", commands=(f"kubectl taint node node{n} x",)),
                ),
            ),
        ),
        severity=severity,
        tags=tags,
    )


def _target(url: str) -> targets.Target:
    target = targets.make_target(url)
    assert target is not None
    return target


async def test_json_target_gets_markdown_and_form_text_target_gets_plain_text(
    http_receiver: HttpReceiver,
) -> None:
    dispatcher = Dispatcher(
        [
            _target(http_receiver.url("json", "md")),
            _target(http_receiver.url("form", "txt") + "?format=text"),
        ],
        settings=FAST,
    )
    dispatcher.submit(_message(1))
    got = {a.path: a for a in [await http_receiver.next(), await http_receiver.next()]}
    await dispatcher.close()
    md, txt = got["/md"], got["/txt"]
    assert (md.kind, txt.kind) == ("json", "form")
    assert md.title == txt.title == "node1 NotReady: 1 pod moved"
    assert (
        md.body
        == "**What it could not do**\n\n- db/postgres-0 waits for fencing\n    `kubectl taint node node1 x`"
    )
    assert (
        txt.body == "What it could not do:\n- db/postgres-0 waits for fencing\n  $ kubectl taint node node1 x"
    )
    assert md.data["type"] == "warning"


async def test_mailto_target_gets_an_html_mail(smtp_receiver: SmtpReceiver) -> None:
    dispatcher = Dispatcher([_target(smtp_receiver.url())], settings=FAST)
    dispatcher.submit(_message(2, severity=Severity.CRITICAL))
    mail = await smtp_receiver.next()
    await dispatcher.close()
    assert mail.subject == "node2 NotReady: 1 pod moved"
    assert mail.recipients == ["ops@example.com"]
    assert "<strong>What it could not do</strong>" in mail.text()
    assert "<code>kubectl taint node node2 x</code>" in mail.text()


async def test_a_500_is_retried_and_the_alert_arrives(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [500]
    metrics = Metrics()
    dispatcher = Dispatcher([_target(http_receiver.url())], settings=FAST, metrics=metrics)
    dispatcher.submit(_message(3))
    arrival = await http_receiver.next()
    await dispatcher.close()
    assert arrival.title == "node3 NotReady: 1 pod moved"
    assert http_receiver.seen == 2
    assert (metrics.value("retried"), metrics.value("sent"), metrics.value("failed")) == (1, 1, 0)


async def test_a_delivery_that_keeps_failing_is_counted_and_logged_without_the_secret(
    http_receiver: HttpReceiver,
) -> None:
    http_receiver.script = [500, 502, 503]
    metrics = Metrics()
    dispatcher = Dispatcher([_target(http_receiver.url())], settings=FAST, metrics=metrics)
    with capture_logs() as logs:
        dispatcher.submit(_message(4))
        await asyncio.wait_for(dispatcher.idle(), timeout=10)
    await dispatcher.close()
    assert http_receiver.seen == 3
    assert http_receiver.arrivals.empty()
    assert (metrics.value("retried"), metrics.value("failed"), metrics.value("sent")) == (2, 1, 0)
    [failed] = [e for e in logs if e["event"] == "notify.failed"]
    assert failed["log_level"] == "error"
    assert failed["target"] == f"json://healer:****@127.0.0.1:{http_receiver.port}/hook"
    assert "503" in failed["reason"]
    assert failed["attempts"] == 3
    assert SECRET not in repr(logs)


async def test_ten_alerts_within_the_window_become_one_digest(http_receiver: HttpReceiver) -> None:
    metrics = Metrics()
    dispatcher = Dispatcher([_target(http_receiver.url())], settings=FAST, metrics=metrics)
    for n in range(12):
        dispatcher.submit(_message(n))
    digest = await http_receiver.next()
    await asyncio.wait_for(dispatcher.idle(), timeout=10)
    await dispatcher.close()
    assert http_receiver.arrivals.empty()
    assert digest.title == "healer: 12 alerts in 1 min"
    for n in range(12):
        assert f"- node{n} NotReady: 1 pod moved" in digest.body
    assert (metrics.value("digested"), metrics.value("sent")) == (12, 1)


async def test_tags_route_alerts_and_untagged_targets_get_everything(http_receiver: HttpReceiver) -> None:
    gpu_only = targets.parse([f"gpu = {http_receiver.url(path='gpu')}"], source="test").targets
    critical = targets.parse([f"critical,oncall={http_receiver.url(path='crit')}"], source="test").targets
    everything = targets.parse([http_receiver.url(path="all")], source="test").targets
    dispatcher = Dispatcher([*gpu_only, *critical, *everything], settings=FAST)
    dispatcher.submit(_message(1, tags=frozenset({"gpu"})))
    dispatcher.submit(_message(2, severity=Severity.CRITICAL))
    await asyncio.wait_for(dispatcher.idle(), timeout=10)
    await dispatcher.close()
    got = sorted((a.path, a.title.split()[0]) for a in http_receiver.drained())
    assert got == [("/all", "node1"), ("/all", "node2"), ("/crit", "node2"), ("/gpu", "node1")]


async def test_a_slow_target_does_not_hold_up_the_others_or_the_caller(http_receiver: HttpReceiver) -> None:
    http_receiver.gate = asyncio.Event()
    slow = Dispatcher([_target(http_receiver.url(path="slow"))], settings=FAST)
    slow.submit(_message(1))  # the request now hangs in the receiver
    # meanwhile the loop stays free: another target on another server gets its alert
    arrived: asyncio.Queue[str] = asyncio.Queue()

    async def handle(request: web.Request) -> web.Response:
        await arrived.put((await request.json())["title"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/fast", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fast = Dispatcher([_target(f"json://127.0.0.1:{port}/fast")], settings=FAST)
    fast.submit(_message(2))
    assert await asyncio.wait_for(arrived.get(), timeout=10) == "node2 NotReady: 1 pod moved"
    assert http_receiver.arrivals.empty()  # the slow one is still hanging
    http_receiver.gate.set()
    assert (await http_receiver.next()).title == "node1 NotReady: 1 pod moved"
    await fast.close()
    await slow.close()
    await runner.cleanup()


async def test_a_full_queue_drops_and_counts_instead_of_blocking(http_receiver: HttpReceiver) -> None:
    http_receiver.gate = asyncio.Event()
    metrics = Metrics()
    settings = Settings(retries=0, rate_per_minute=0, queue_size=2, digest_threshold=100)
    dispatcher = Dispatcher([_target(http_receiver.url())], settings=settings, metrics=metrics)
    with capture_logs() as logs:
        for n in range(6):  # one in flight at most, two queued, the rest dropped
            dispatcher.submit(_message(n))
    assert metrics.value("dropped") >= 3
    assert any(e["event"] == "notify.dropped" for e in logs)
    http_receiver.gate.set()
    await asyncio.wait_for(dispatcher.idle(), timeout=10)
    await dispatcher.close()
    assert metrics.value("sent") + metrics.value("dropped") == 6


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=2, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(0.0) == pytest.approx(2.0)
    assert bucket.take(10.0) == 0.0  # refilled (capped at the burst)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == pytest.approx(1.0)


def test_scrub_masks_url_secrets_in_reasons() -> None:
    target = _target(f"json://healer:{SECRET}@127.0.0.1:9/hook")
    text = delivery.scrub(target, f"could not reach json://healer:{SECRET}@127.0.0.1:9/hook")
    assert SECRET not in text
    assert "****" in text
