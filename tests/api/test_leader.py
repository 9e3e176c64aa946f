"""Lease leader election over real HTTP: one leader, takeover, loss at once, 409s, release.

Timings are client-go's shape scaled down (lease 1 s, renew deadline 0.6 s, retry 0.1 s) so
a takeover takes about a second; every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.kube import client
from healer.runtime import leader
from tests.api import fakeapi

FAST = leader.Timings(lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)
NS = "healer-system"
LEASE = ("healer-system", "healer-leader")


async def eventually(predicate: Callable[[], Any], *, within: float, what: str) -> float:
    """Wait until `predicate()`; return how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        assert loop.time() - start < within, f"not within {within}s: {what}"
        await asyncio.sleep(0.01)
    return loop.time() - start


class Candidate:
    """One healer process' elector with its own client, recording what it was told."""

    def __init__(self, kube: client.Kube, identity: str, **kwargs: Any) -> None:
        self.changes: list[tuple[bool, float]] = []
        self.leading_runs = 0
        self.cancelled_while_leading = 0
        self.leader_when_cancelled: list[bool] = []
        self.elector = leader.LeaseElector(
            kube,
            namespace=NS,
            name="healer-leader",
            identity=identity,
            timings=kwargs.pop("timings", FAST),
            on_change=lambda leading: self.changes.append((leading, asyncio.get_running_loop().time())),
            **kwargs,
        )
        self.task: asyncio.Task[None] | None = None

    async def lead(self) -> None:
        self.leading_runs += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled_while_leading += 1
            self.leader_when_cancelled.append(self.elector.is_leader.is_set())
            raise

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self.lead))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    @property
    def leading(self) -> bool:
        return self.elector.is_leader.is_set()


@pytest.fixture
async def connect(fake: fakeapi.FakeApi, kubeconfig: Path) -> AsyncIterator[Callable[[], Any]]:
    """Separate clients, as separate processes would have."""
    stack = contextlib.AsyncExitStack()
    candidates: list[Candidate] = []

    async def _make(identity: str, **kwargs: Any) -> Candidate:
        kube = await stack.enter_async_context(client.connect(kubeconfig=kubeconfig, qps=0))
        candidate = Candidate(kube, identity, **kwargs)
        candidates.append(candidate)
        return candidate

    yield _make
    for candidate in candidates:
        await candidate.stop()
    await stack.aclose()


def lease_spec(fake: fakeapi.FakeApi) -> dict[str, Any]:
    lease = fake.get("leases", LEASE)
    assert lease is not None
    return dict(lease["spec"])


async def test_exactly_one_of_two_leads(fake: fakeapi.FakeApi, connect: Any) -> None:
    a, b = await connect("tethys"), await connect("calypso")
    a.start()
    b.start()
    await eventually(lambda: a.leading or b.leading, within=3, what="a leader")
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.5  # > a lease duration: the follower must not take over a live leader
    while loop.time() < end:
        assert a.leading != b.leading
        await asyncio.sleep(0.02)
    first = a if a.leading else b
    assert lease_spec(fake)["holderIdentity"] == first.elector.identity
    assert first.leading_runs == 1
    assert (b if first is a else a).leading_runs == 0
    assert lease_spec(fake)["leaseDurationSeconds"] == 1


async def test_takeover_after_holder_stops_renewing(fake: fakeapi.FakeApi, connect: Any) -> None:
    a = await connect("tethys", release_on_cancel=False)  # a crash: no release
    b = await connect("calypso")
    a.start()
    await eventually(lambda: a.leading, within=3, what="a leads")
    b.start()
    await eventually(
        lambda: lease_spec(fake).get("holderIdentity") == "tethys" and b.elector.holder,
        within=3,
        what="b saw a",
    )
    await a.stop()
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    await eventually(lambda: b.leading, within=3, what="b takes over")
    took = loop.time() - stopped
    assert took <= FAST.lease_duration + 2 * FAST.retry_period * (1 + FAST.jitter) + 0.3
    assert took >= FAST.lease_duration * 0.5  # it waited for the lease to expire, not less
    spec = lease_spec(fake)
    assert spec["holderIdentity"] == "calypso"
    assert spec["leaseTransitions"] == 1


async def test_failed_renewals_drop_leadership_at_the_deadline(fake: fakeapi.FakeApi, connect: Any) -> None:
    a = await connect("tethys")
    a.start()
    await eventually(lambda: a.leading, within=3, what="a leads")
    await eventually(
        lambda: sum(1 for r in fake.requests if r.method == "PUT" and r.status == 200) >= 2,
        within=3,
        what="a renews",
    )
    fault = fake.fail(500, method="PUT", path="/leases/", times=None)
    await eventually(lambda: not a.leading, within=3, what="leadership dropped")
    last_ok = max(r.at for r in fake.requests if r.method == "PUT" and r.status == 200)
    lost_at = a.changes[-1][1]
    # the renew that succeeded last started at most one retry period before the server saw it
    assert lost_at - last_ok <= FAST.renew_deadline + 0.25
    assert lost_at - last_ok >= FAST.renew_deadline - FAST.retry_period - 0.05
    await eventually(lambda: a.cancelled_while_leading == 1, within=1, what="lead() cancelled")
    assert a.leader_when_cancelled == [False]  # is_leader cleared before lead() was cancelled
    assert [leading for leading, _ in a.changes] == [True, False]
    fault.times = 0  # the API heals: a campaigns again and wins (nobody else wants it)
    await eventually(lambda: a.leading, within=3, what="a leads again")
    await eventually(lambda: a.leading_runs == 2, within=1, what="lead() runs again")


async def test_unreachable_api_drops_leadership(fake: fakeapi.FakeApi, connect: Any) -> None:
    a = await connect("tethys")
    a.start()
    await eventually(lambda: a.leading, within=3, what="a leads")
    await fake.down()
    took = await eventually(lambda: not a.leading, within=3, what="leadership dropped")
    assert took <= FAST.renew_deadline + 0.2
    await fake.up()
    await eventually(lambda: a.leading, within=3, what="a leads again")


async def test_conflict_on_renew_rereads_and_keeps_leading(fake: fakeapi.FakeApi, connect: Any) -> None:
    a = await connect("tethys")
    a.start()
    await eventually(lambda: a.leading, within=3, what="a leads")
    lease = fake.get("leases", LEASE)
    assert lease is not None
    fake.put("leases", dict(lease, metadata=dict(lease["metadata"], labels={"touched": "yes"})))  # new RV
    await eventually(
        lambda: any(r.method == "PUT" and r.status == 409 for r in fake.requests), within=3, what="a 409"
    )
    conflict = next(i for i, r in enumerate(fake.requests) if r.method == "PUT" and r.status == 409)
    await eventually(
        lambda: any(r.method == "PUT" and r.status == 200 for r in fake.requests[conflict:]),
        within=3,
        what="a renew after the 409",
    )
    assert [r.method for r in fake.requests[conflict : conflict + 3]] == ["PUT", "GET", "PUT"]
    assert a.leading
    assert [leading for leading, _ in a.changes] == [True]
    assert lease_spec(fake)["holderIdentity"] == "tethys"


async def test_conflict_because_another_took_the_lease_drops_at_once(
    fake: fakeapi.FakeApi, connect: Any
) -> None:
    a = await connect("tethys")
    a.start()
    await eventually(lambda: a.leading, within=3, what="a leads")
    lease = fake.get("leases", LEASE)
    assert lease is not None
    stolen = dict(lease["spec"], holderIdentity="intruder", renewTime=leader.micro_time(datetime.now(UTC)))
    loop = asyncio.get_running_loop()
    fake.put("leases", dict(lease, spec=stolen))
    taken = loop.time()
    await eventually(lambda: not a.leading, within=3, what="a steps down")
    assert loop.time() - taken <= 2 * FAST.retry_period + 0.25  # well before a renew deadline (0.6 s)
    await asyncio.sleep(0)  # let run() finish its bookkeeping
    assert lease_spec(fake)["holderIdentity"] == "intruder"  # a did not fight back


async def test_release_on_shutdown_lets_the_next_one_lead_at_once(
    fake: fakeapi.FakeApi, connect: Any
) -> None:
    slow = leader.Timings(lease_duration=30.0, renew_deadline=20.0, retry_period=0.1)
    a = await connect("tethys", timings=slow)
    b = await connect("calypso", timings=slow)
    a.start()
    await eventually(lambda: a.leading, within=3, what="a leads")
    b.start()
    await eventually(lambda: b.elector.holder == "tethys", within=3, what="b saw a")
    await a.stop()
    assert lease_spec(fake)["holderIdentity"] in ("", "calypso")
    took = await eventually(lambda: b.leading, within=3, what="b leads")
    assert took < 1.0  # a 30 s lease, yet no wait: it was released


class SkewedClock:
    """A wall clock set years off; the monotonic clock is the real one."""

    def __init__(self, at: datetime) -> None:
        self.at = at
        self.real = leader.SystemClock()

    def monotonic(self) -> float:
        return self.real.monotonic()

    def now(self) -> datetime:
        return self.at + timedelta(seconds=self.real.monotonic())


async def test_lease_times_are_micro_time_from_the_injected_clock(
    fake: fakeapi.FakeApi, connect: Any
) -> None:
    base = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    a = await connect("tethys", clock=SkewedClock(base))
    a.start()
    await eventually(lambda: a.leading, within=3, what="a leads")
    spec = lease_spec(fake)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", spec["renewTime"])
    assert spec["renewTime"].startswith("2031-")
    assert spec["acquireTime"].startswith("2031-")


async def test_a_skewed_wall_clock_cannot_steal_a_live_lease(fake: fakeapi.FakeApi, connect: Any) -> None:
    """Expiry is judged on our monotonic clock: a peer whose wall clock runs years ahead still waits."""
    a = await connect("tethys")
    b = await connect("calypso", clock=SkewedClock(datetime(2099, 1, 1, tzinfo=UTC)))
    a.start()
    await eventually(lambda: a.leading, within=3, what="a leads")
    b.start()
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.5
    while loop.time() < end:
        assert not b.leading
        await asyncio.sleep(0.02)
    assert a.leading


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        leader.Timings(lease_duration=10, renew_deadline=10, retry_period=2)
    assert leader.Timings() == leader.Timings(lease_duration=15, renew_deadline=10, retry_period=2)


async def test_changes_iterator_reports_transitions(fake: fakeapi.FakeApi, connect: Any) -> None:
    a = await connect("tethys")
    seen: list[bool] = []

    async def follow() -> None:
        async for leading in a.elector.changes():
            seen.append(leading)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    a.start()
    await eventually(lambda: seen == [True], within=3, what="became leader")
    await a.stop()
    await eventually(lambda: seen == [True, False], within=3, what="stopped leading")
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower


async def test_shutdown_while_a_lost_leadership_drains_is_not_swallowed(
    fake: fakeapi.FakeApi, kubeconfig: Path
) -> None:
    """run() cancelled while it waits for lead() to wind down must still end."""
    draining = asyncio.Event()

    async def slow_lead() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            draining.set()
            await asyncio.sleep(0.3)  # finishing the action in flight
            raise

    async with client.connect(kubeconfig=kubeconfig, qps=0) as kube:
        elector = leader.LeaseElector(
            kube, namespace=NS, name="healer-leader", identity="tethys", timings=FAST
        )
        run = asyncio.create_task(elector.run(slow_lead))
        await eventually(elector.is_leader.is_set, within=3, what="leads")
        fake.fail(500, method="PUT", path="/leases/", times=None)  # renewals fail: leadership is lost
        await asyncio.wait_for(draining.wait(), 3)
        run.cancel()  # SIGTERM arrives while lead() drains
        done, _ = await asyncio.wait({run}, timeout=2)
        assert run in done
        assert run.cancelled()


async def test_renewals_do_not_queue_behind_a_saturated_main_bucket(
    fake: fakeapi.FakeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    """`healer run`'s elector has its own token bucket: 30 queued writes on the main one
    (30 s at 1 QPS) delay neither the first acquire nor the renewals after it."""
    from healer.runtime import daemon
    from healer.runtime.metrics import Metrics
    from healer.runtime.settings import Settings

    settings = Settings(node=None, rules_dir=tmp_path, identity="tethys")
    async with client.connect(kubeconfig=kubeconfig, qps=1, burst=1) as kube:
        backlog = [asyncio.create_task(kube.request("GET", "/api/v1/nodes")) for _ in range(30)]
        elector = daemon.lease_elector(kube, settings=settings, metrics=Metrics(), timings=FAST)
        changes: list[bool] = []
        elector.on_change = changes.append

        async def lead() -> None:
            await asyncio.Event().wait()

        task = asyncio.create_task(elector.run(lead))
        try:
            await eventually(elector.is_leader.is_set, within=1.0, what="leading despite the backlog")
            first = lease_spec(fake)["renewTime"]
            await eventually(
                lambda: lease_spec(fake)["renewTime"] != first, within=1.0, what="a renewal despite backlog"
            )
            await asyncio.sleep(FAST.renew_deadline * 2)  # two renew deadlines: still leading, never lost
            assert elector.is_leader.is_set()
            assert changes == [True]
            assert sum(not t.done() for t in backlog) > 20  # the main bucket really was saturated
        finally:
            for t in (task, *backlog):
                t.cancel()
            await asyncio.gather(task, *backlog, return_exceptions=True)
