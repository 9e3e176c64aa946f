"""The notifier end to end: executed plans in, real alerts out through apprise to loopback receivers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from healer.model.actions import Cordon, Delete, ForceDelete, Held, Notify, OutcomeStatus, Plan, Stage
from healer.model.view import ClusterView
from healer.notify import AppriseNotifier, NullNotifier, Settings, Timings, from_environment, targets
from tests.notify.builders import NODE_INCIDENT, applied, at, node, node_ref, oceanid, pod, pod_ref
from tests.notify.conftest import SECRET, HttpReceiver, SmtpReceiver

TIMINGS = Timings(
    settle_s=0,
    verify_deadline_s=90,
    release_wait_s=0,
    dedupe_window_s=300,
    recovery_hold_s=60,
    storm_clear_s=120,
)
SETTINGS = Settings(retries=2, backoff_s=0.01, rate_per_minute=0, digest_window_s=0.3)


def _notifier(*urls: str, shadow: bool = False) -> AppriseNotifier:
    loaded = targets.parse(urls, source="test")
    assert not loaded.errors
    return AppriseNotifier(loaded.targets, shadow=shadow, timings=TIMINGS, settings=SETTINGS)


async def test_styx_incident_gives_one_story_and_one_recovery(
    http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    notifier = _notifier(http_receiver.url(), smtp_receiver.url())
    actions = (
        Cordon(
            target=node_ref("styx"), rule="node-not-ready", reason="NotReady for 5m", incident=NODE_INCIDENT
        ),
        ForceDelete(
            target=pod_ref("apps", "web-7d9f-aaa"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT
        ),
    )
    with capture_logs() as logs:
        await notifier.observe(
            plan=Plan(actions=actions), outcomes=applied(*actions), view=oceanid(), now=at(0)
        )
        moved = oceanid(extra=(pod("apps", "web-7d9f-new", "calypso"),))
        for t in (5, 10, 15):  # the engine keeps re-planning the same incident
            await notifier.observe(
                plan=Plan(actions=actions), outcomes=applied(*actions), view=moved, now=at(t)
            )
            await notifier.tick(view=moved, now=at(t))
        story = await http_receiver.next()
        mail = await smtp_receiver.next()
        back = oceanid(styx_ready="True")
        await notifier.tick(view=back, now=at(600))
        await notifier.tick(view=back, now=at(700))
        recovery = await http_receiver.next()
        await smtp_receiver.next()
        await notifier.idle()
    await notifier.close()

    assert story.title == "styx NotReady: 1 pod moved, 2 needs you"
    assert "- apps/web-7d9f-aaa now runs on calypso as web-7d9f-new" in story.body
    assert "`kubectl taint node styx node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`" in story.body
    assert story.data["type"] == "failure"  # critical: somebody has to act
    assert mail.subject == story.title
    assert recovery.title == "styx recovered"
    assert recovery.data["type"] == "success"
    assert http_receiver.arrivals.empty()  # exactly one story and one recovery
    assert notifier.metrics.value("sent") == 4
    assert SECRET not in repr(logs)
    assert any(e["event"] == "notify.sent" and "****" in e["target"] for e in logs)


async def test_a_reopened_incident_within_the_window_is_deduped(http_receiver: HttpReceiver) -> None:
    notifier = _notifier(http_receiver.url())
    view = oceanid()
    cordon = Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT)
    resolved = Notify(
        target=node_ref("styx"),
        rule="node-not-ready",
        reason="r",
        incident=NODE_INCIDENT,
        title="",
        stage=Stage.RESOLVED,
    )
    for t in (0, 60):
        await notifier.observe(plan=Plan(actions=(cordon,)), outcomes=applied(cordon), view=view, now=at(t))
        await notifier.observe(plan=Plan(actions=(resolved,)), outcomes=[], view=view, now=at(t + 10))
    await notifier.idle()
    await notifier.close()
    titles = [a.title for a in http_receiver.drained()]
    assert titles == ["styx NotReady: 2 needs you", "styx recovered"]
    assert notifier.metrics.value("deduped") == 2


async def test_storm_alert_once_and_evicted_cleanup_summary(http_receiver: HttpReceiver) -> None:
    notifier = _notifier(http_receiver.url())
    view = oceanid()
    held = Held(
        action=Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT),
        guard="storm",
        detail="2 of 3 nodes unhealthy",
    )
    for t in (0, 10, 20):
        await notifier.observe(plan=Plan(held=(held,)), outcomes=[], view=view, now=at(t))
    storm = await http_receiver.next()
    evicted = [
        pod(
            "apps",
            f"web-{i}",
            "calypso",
            phase="Failed",
            reason="Evicted",
            message="The node was low on resource: memory.",
        )
        for i in range(3)
    ]
    cleanup_view = ClusterView.of(nodes=[node("calypso")], pods=evicted)
    deletes = tuple(
        Delete(target=p.ref, rule="evicted-cleanup", reason="Evicted", incident="evicted-cleanup")
        for p in evicted
    )
    await notifier.observe(
        plan=Plan(actions=deletes), outcomes=applied(*deletes), view=cleanup_view, now=at(30)
    )
    summary = await http_receiver.next()
    await notifier.tick(view=view, now=at(200))
    over = await http_receiver.next()
    await notifier.idle()
    await notifier.close()
    assert storm.title.startswith("Storm guard")
    assert summary.title == "Cleaned up 3 Evicted pods on calypso"
    assert "- apps: 3" in summary.body
    assert "calypso: evicted for memory pressure (3)" in summary.body
    assert over.title == "Storm over: healer acts again"
    assert http_receiver.arrivals.empty()


async def test_shadow_mode_messages_say_would_have_done(http_receiver: HttpReceiver) -> None:
    notifier = _notifier(http_receiver.url(), shadow=True)
    cordon = Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT)
    await notifier.observe(
        plan=Plan(actions=(cordon,)),
        outcomes=applied(cordon, status=OutcomeStatus.SKIPPED, detail="dry-run"),
        view=oceanid(),
        now=at(0),
    )
    arrival = await http_receiver.next()
    await notifier.close()
    assert arrival.title.startswith("[would have done] styx NotReady")
    assert "would have cordoned styx" in arrival.body


async def test_from_environment_reads_the_secret_file_and_env_and_redacts(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    urls = tmp_path / "urls"
    urls.write_text(
        f"# comment\ngpu,critical={http_receiver.url(path='gpu')}\n\nnot a url\nnope://{SECRET}@x\n",
        encoding="utf-8",
    )
    env = {"HEALER_NOTIFY_URLS_FILE": str(urls), "HEALER_NOTIFY_URLS": http_receiver.url(path="all")}
    with capture_logs() as logs:
        notifier = from_environment(env, timings=TIMINGS, settings=SETTINGS)
    assert isinstance(notifier, AppriseNotifier)
    assert [sorted(t.tags) for t in notifier.dispatcher.targets] == [["critical", "gpu"], []]
    errors = [e["error"] for e in logs if e["event"] == "notify.bad_url"]
    assert errors == [
        f"{urls} line 4: not an apprise URL (expected [tag,tag=]schema://...)",
        f"{urls} line 5: apprise cannot use this nope:// URL (unknown schema or bad arguments)",
    ]
    assert SECRET not in repr(logs)
    await notifier.close()


async def test_without_urls_alerts_are_off_and_said_so_once(tmp_path: Path) -> None:
    with capture_logs() as logs:
        notifier = from_environment({"HEALER_NOTIFY_URLS_FILE": str(tmp_path / "absent")})
        await notifier.observe(plan=Plan(), outcomes=[], view=oceanid(), now=at(0))
        await notifier.tick(view=oceanid(), now=at(1))
    assert isinstance(notifier, NullNotifier)
    assert [e["event"] for e in logs if e["event"].startswith("notify.")] == [
        "notify.bad_url",
        "notify.alerts_off",
    ]


async def test_observe_returns_at_once_while_a_target_hangs(http_receiver: HttpReceiver) -> None:
    http_receiver.gate = asyncio.Event()
    notifier = _notifier(http_receiver.url())
    cordon = Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT)
    await asyncio.wait_for(
        notifier.observe(plan=Plan(actions=(cordon,)), outcomes=applied(cordon), view=oceanid(), now=at(0)),
        timeout=1,
    )
    await asyncio.wait_for(notifier.tick(view=oceanid(), now=at(1)), timeout=1)
    assert http_receiver.arrivals.empty()
    http_receiver.gate.set()
    assert (await http_receiver.next()).title == "styx NotReady: 2 needs you"
    await notifier.close()
