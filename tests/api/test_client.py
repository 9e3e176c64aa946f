"""`healer.kube.client.Kube` over real HTTP: raw JSON both ways, errors mapped by status."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from healer.kube import api, client, errors, ratelimit, retry
from tests.api import fakeapi
from tests.api.conftest import write_kubeconfig


async def test_crud_round_trip_with_raw_json(kube: client.Kube, fake: fakeapi.FakeApi) -> None:
    created = await kube.request("POST", "/api/v1/nodes", body=fakeapi.node("styx"))
    assert created["metadata"]["name"] == "styx"
    assert created["metadata"]["resourceVersion"]
    got = await kube.request("GET", "/api/v1/nodes/styx")
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    patched = await kube.request(
        "PATCH",
        "/api/v1/nodes/styx",
        body={"spec": {"unschedulable": True}},
        content_type=api.MERGE_PATCH,
    )
    assert patched["spec"]["unschedulable"] is True
    assert fake.requests[-1].body == {"spec": {"unschedulable": True}}
    listed = await kube.request("GET", "/api/v1/nodes", query={"fieldSelector": "metadata.name=styx"})
    assert [n["metadata"]["name"] for n in listed["items"]] == ["styx"]
    assert fake.requests[-1].query["fieldSelector"] == "metadata.name=styx"


async def test_bearer_token_from_kubeconfig_is_sent(fake: fakeapi.FakeApi, tmp_path: Path) -> None:
    wrong = write_kubeconfig(tmp_path / "wrong", server=fake.url, token="nope")
    async with client.connect(kubeconfig=wrong, qps=0) as kube:
        with pytest.raises(errors.ClientError) as caught:
            await kube.request("GET", "/api/v1/nodes")
    assert caught.value.status == 401


ERROR_TABLE = [
    (400, errors.ClientError, "BadRequest"),
    (403, errors.Forbidden, "Forbidden"),
    (404, errors.NotFound, "NotFound"),
    (409, errors.Conflict, "Conflict"),
    (410, errors.Gone, "Expired"),
    (422, errors.Invalid, "Invalid"),
    (429, errors.TooManyRequests, "TooManyRequests"),
    (500, errors.ServerError, "InternalError"),
    (503, errors.ServerError, "ServiceUnavailable"),
]


@pytest.mark.parametrize(("status", "cls", "reason"), ERROR_TABLE)
async def test_status_maps_to_error_class_with_reason_and_message(
    kube: client.Kube, fake: fakeapi.FakeApi, status: int, cls: type[errors.ApiError], reason: str
) -> None:
    fake.fail(status, path="/api/v1/nodes", reason=reason)
    with pytest.raises(errors.ApiError) as caught:
        await kube.request("GET", "/api/v1/nodes")
    assert type(caught.value) is cls
    assert caught.value.status == status
    assert caught.value.reason == reason
    assert str(caught.value) == f"injected {status}"


async def test_retry_after_header_becomes_retry_after(kube: client.Kube, fake: fakeapi.FakeApi) -> None:
    fake.fail(429, retry_after=7)
    with pytest.raises(errors.TooManyRequests) as caught:
        await kube.request("GET", "/api/v1/pods")
    assert caught.value.retry_after == 7.0


def test_retry_after_from_status_details_and_non_status_bodies() -> None:
    body = b'{"kind":"Status","code":429,"reason":"TooManyRequests","details":{"retryAfterSeconds":3}}'
    err = client.error_for(429, body, {})
    assert isinstance(err, errors.TooManyRequests)
    assert err.retry_after == 3.0
    html = b"<html>" + b"x" * 5000
    err = client.error_for(502, html, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert isinstance(err, errors.ServerError)
    assert err.retry_after is None
    assert len(str(err)) <= 256  # never a whole body in logs


async def test_real_404_and_409_from_state(kube: client.Kube) -> None:
    with pytest.raises(errors.NotFound):
        await kube.request("GET", "/api/v1/nodes/nope")
    await kube.request("POST", "/api/v1/nodes", body=fakeapi.node("a"))
    with pytest.raises(errors.Conflict) as caught:
        await kube.request("POST", "/api/v1/nodes", body=fakeapi.node("a"))
    assert caught.value.reason == "AlreadyExists"


async def test_refused_connection_is_unreachable(kube: client.Kube, fake: fakeapi.FakeApi) -> None:
    await fake.down()
    with pytest.raises(errors.Unreachable):
        await kube.request("GET", "/api/v1/nodes")
    await fake.up()
    assert (await kube.request("GET", "/api/v1/nodes"))["items"] == []


async def test_dropped_connection_is_unreachable(kube: client.Kube, fake: fakeapi.FakeApi) -> None:
    fake.drop_next(path="/api/v1/nodes", times=None)  # aiohttp retries an idempotent GET once
    with pytest.raises(errors.Unreachable):
        await kube.request("GET", "/api/v1/nodes")


async def test_stream_yields_raw_lines_and_maps_errors(kube: client.Kube, fake: fakeapi.FakeApi) -> None:
    fake.put("nodes", fakeapi.node("a"))
    async with kube.stream("/api/v1/nodes", query={"watch": "true", "timeoutSeconds": "1"}) as lines:
        first = await anext(aiter(lines))
    assert b'"ADDED"' in first
    assert b'"name":"a"' in first
    fake.fail(500, watch=True)
    with pytest.raises(errors.ServerError):
        async with kube.stream("/api/v1/nodes", query={"watch": "true"}):
            pass


async def test_with_retries_recovers_from_5xx_and_429(kube: client.Kube, fake: fakeapi.FakeApi) -> None:
    fake.fail(500, path="/api/v1/nodes", times=2)
    fake.fail(429, path="/api/v1/nodes", times=1, retry_after=0)
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    result = await retry.with_retries(
        lambda: kube.request("GET", "/api/v1/nodes"),
        attempts=5,
        backoff=retry.Backoff(base=0.01, cap=0.04),
        sleep=sleep,
    )
    assert result["items"] == []
    assert len(slept) == 3
    assert all(0.0 < d <= 0.04 for d in slept)


async def test_with_retries_hands_409_to_the_caller_at_once(kube: client.Kube) -> None:
    calls = 0

    async def create() -> object:
        nonlocal calls
        calls += 1
        return await kube.request("POST", "/api/v1/nodes", body=fakeapi.node("dup"))

    await create()
    with pytest.raises(errors.Conflict):
        await retry.with_retries(create, attempts=5, backoff=retry.Backoff(base=0.001, cap=0.001))
    assert calls == 2


async def test_with_retries_gives_up_after_attempts() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise errors.Unreachable("down")

    async def no_sleep(_: float) -> None:
        return None

    with pytest.raises(errors.Unreachable):
        await retry.with_retries(failing, attempts=3, sleep=no_sleep)
    assert calls == 3


@pytest.mark.parametrize(
    ("attempt", "retry_after", "low", "high"),
    [
        (0, None, 0.25, 0.5),
        (1, None, 0.5, 1.0),
        (3, None, 2.0, 4.0),
        (10, None, 15.0, 30.0),  # capped
        (1000, None, 15.0, 30.0),  # no overflow forever-retrying watchers
        (0, 9.0, 9.0, 9.0),  # Retry-After wins over a shorter backoff
        (0, 10_000.0, 300.0, 300.0),  # but a silly one is capped
    ],
)
def test_backoff_is_jittered_exponential_and_honours_retry_after(
    attempt: int, retry_after: float | None, low: float, high: float
) -> None:
    backoff = retry.Backoff(base=0.5, cap=30.0)
    for rand in (0.0, 0.5, 0.999):
        delay = backoff.delay(attempt, retry_after=retry_after, rand=lambda r=rand: r)
        assert low <= delay <= high


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += delay


async def test_token_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = ratelimit.TokenBucket(rate=5, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await bucket.acquire()
    assert clock.slept == []
    for _ in range(5):
        await bucket.acquire()
    assert clock.now == pytest.approx(1.0)  # 5 more at 5 QPS take a second
    clock.now += 10  # idle: the bucket refills, but never beyond its burst
    for _ in range(10):
        await bucket.acquire()
    assert clock.now == pytest.approx(11.0)
    await bucket.acquire()
    assert clock.now == pytest.approx(11.2)


async def test_token_bucket_queues_concurrent_callers() -> None:
    bucket = ratelimit.TokenBucket(rate=50, burst=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(bucket.acquire() for _ in range(6)))
    assert loop.time() - start >= 5 / 50 * 0.9  # 1 at once, 5 more at 50/s


async def test_client_spends_a_token_per_request(fake: fakeapi.FakeApi, kubeconfig: Path) -> None:
    async with client.connect(kubeconfig=kubeconfig, qps=20, burst=2) as kube:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(6):
            await kube.request("GET", "/api/v1/nodes")
        assert loop.time() - start >= 4 / 20 * 0.9
    assert len(fake.requests) == 6


async def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(client.ConfigError, match="does not exist"):
        async with client.connect(kubeconfig=tmp_path / "nope"):
            pass


async def test_401_reloads_the_kubeconfig_once(fake: fakeapi.FakeApi, tmp_path: Path) -> None:
    """Rotated credentials (an exec plugin's token, a renewed cert) are picked up without a restart."""
    path = write_kubeconfig(tmp_path / "kubeconfig", server=fake.url, token="expired")
    async with client.connect(kubeconfig=path, qps=0) as kube:
        write_kubeconfig(path, server=fake.url)  # the right token, as a refresh would write it
        assert (await kube.request("GET", "/api/v1/nodes"))["items"] == []
    assert [r.status for r in fake.requests] == [401, 200]


async def test_without_kubeconfig_outside_a_cluster_uses_KUBECONFIG(
    fake: fakeapi.FakeApi, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    async with client.connect(qps=0) as kube:
        assert (await kube.request("GET", "/api/v1/nodes"))["items"] == []


async def test_without_any_configuration_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(client.ConfigError, match="not in a cluster"):
        async with client.connect():
            pass


async def test_a_sibling_has_its_own_bucket_and_shares_the_session(
    fake: fakeapi.FakeApi, kubeconfig: Path
) -> None:
    """Lease renewals must not queue behind a burst of writes on the main bucket."""
    async with client.connect(kubeconfig=kubeconfig, qps=1, burst=1) as kube:
        lease_api = kube.sibling(qps=100, burst=10)
        await kube.request("GET", "/api/v1/nodes")  # the main bucket is now empty for a second
        loop = asyncio.get_running_loop()
        start = loop.time()
        await lease_api.request("GET", "/api/v1/nodes")
        assert loop.time() - start < 0.5
        await lease_api.close()  # leaves the shared session open
        await kube.request("GET", "/api/v1/nodes")
    assert [r.status for r in fake.requests] == [200, 200, 200]
