"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it.

A dead node cannot heal itself, and N agents racing to heal it would double every write; so
exactly one healer pod acts cluster-wide: the holder of the Lease. The algorithm and the
timings are client-go's (15 s lease, 10 s renew deadline, 2 s retry):

- campaign: every retry period (jittered), read the Lease; take it when it is free (no
  holder, as after a clean release) or expired. Expiry is judged by *our* monotonic clock
  from the moment we saw the record last change, never by comparing the holder's wall-clock
  renewTime with ours, so clock skew between nodes cannot elect two leaders;
- hold: renew every retry period with the Lease's resourceVersion (a PUT: 409 means someone
  else wrote it: re-read; if they hold it now, we lost). If no renew succeeded within the
  renew deadline, leadership is dropped AT ONCE: `is_leader` is cleared and `lead()` is
  cancelled before anything else happens. Because renew deadline < lease duration, the old
  leader has stopped acting before a new one can take over;
- release: on shutdown the holder clears holderIdentity, so the next leader starts within a
  retry period rather than a lease duration.

Wall-clock time goes into the Lease (renewTime/acquireTime as MicroTime, RFC 3339 with
microseconds); deadlines use the monotonic clock. Both come from an injectable `Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from healer.kube import api as kube_api
from healer.kube import errors

log = structlog.get_logger(__name__)

Lead = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    jitter: float = 0.2  # campaign retries wait retry_period * (1 + U(0, jitter))

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


def micro_time(at: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Observed:
    """The last Lease we read or wrote, and when (monotonic) its record last changed."""

    lease: dict[str, Any] | None = None
    record: tuple[Any, ...] = ()
    changed_at: float = 0.0
    held_by_us: bool = False


class LeaseElector:
    """Campaigns for `namespace/name`; `run(lead)` runs `lead()` while holding it.

    `is_leader` (an asyncio.Event), `on_change(leading)` and `changes()` report leadership;
    all three flip to "not leading" before `lead()` is cancelled.
    """

    def __init__(
        self,
        api: kube_api.KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: Timings | None = None,
        clock: Clock | None = None,
        on_change: Callable[[bool], None] | None = None,
        release_on_cancel: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or Timings()
        self.clock = clock or SystemClock()
        self.on_change = on_change
        self.release_on_cancel = release_on_cancel
        self.sleep = sleep
        self.rand = rand
        self.is_leader = asyncio.Event()
        self._observed = _Observed()
        self._listeners: set[asyncio.Queue[bool]] = set()
        self._renewed_at = 0.0  # monotonic start of our last successful write

    # ---- public ----------------------------------------------------------------------
    @property
    def path(self) -> str:
        return f"{self._collection}/{self.name}"

    @property
    def _collection(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    @property
    def holder(self) -> str:
        """The holder in the last Lease we saw ("" when free or never read)."""
        lease = self._observed.lease
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    async def changes(self) -> AsyncIterator[bool]:
        """Leadership changes as they happen (True: became leader, False: lost it)."""
        queue: asyncio.Queue[bool] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)

    async def run(self, lead: Lead | None = None) -> None:
        """Campaign, hold, run `lead()` while holding; forever, until cancelled.

        On cancellation: leadership dropped, `lead()` cancelled, the Lease released (when
        `release_on_cancel`, client-go's ReleaseOnCancel).
        """
        bound = log.bind(lease=f"{self.namespace}/{self.name}", identity=self.identity)
        try:
            while True:
                await self._campaign()
                bound.info("leader elected")
                self._set(True)
                task: asyncio.Task[None] | None = None
                if lead is not None:
                    task = asyncio.create_task(_lead(lead), name="healer-lead")
                if task is not None:
                    task.add_done_callback(_log_lead_failure)
                try:
                    why = await self._hold()
                finally:
                    self._set(False)  # first: nobody may act on a Lease we no longer hold
                    if task is not None:
                        await cancel_and_wait(task)
                bound.warning("leadership lost", reason=why)
        finally:
            if self.is_leader.is_set():
                self._set(False)
            if self.release_on_cancel and self._observed.held_by_us:
                await self._release(bound)

    # ---- internals -------------------------------------------------------------------
    def _set(self, leading: bool) -> None:
        if leading == self.is_leader.is_set():
            return
        if leading:
            self.is_leader.set()
        else:
            self.is_leader.clear()
        for queue in self._listeners:
            queue.put_nowait(leading)
        if self.on_change is not None:
            try:
                self.on_change(leading)
            except Exception:
                log.exception("leader on_change hook failed")

    async def _campaign(self) -> None:
        while True:
            started = self.clock.monotonic()
            if await self._try_acquire_or_renew(request_timeout=self.timings.renew_deadline):
                self._renewed_at = started
                return
            await self.sleep(self.timings.retry_period * (1 + self.rand() * self.timings.jitter))

    async def _hold(self) -> str:
        """Renew until we cannot; returns why leadership ended."""
        t = self.timings
        last_ok = self._renewed_at
        while True:
            remaining = last_ok + t.renew_deadline - self.clock.monotonic()
            await self.sleep(max(0.0, min(t.retry_period, remaining)))
            started = self.clock.monotonic()
            remaining = last_ok + t.renew_deadline - started
            if remaining <= 0:
                return "renew deadline passed"
            ok = False
            try:
                async with asyncio.timeout(remaining):
                    ok = await self._try_acquire_or_renew(request_timeout=remaining)
            except TimeoutError:
                ok = False
            if ok:
                last_ok = self._renewed_at = started
            elif not self._observed.held_by_us:
                return f"lease taken by {self.holder or 'nobody'}"
            elif self.clock.monotonic() >= last_ok + t.renew_deadline:
                return "renew deadline passed"

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("acquireTime"),
            spec.get("leaseTransitions"),
            spec.get("leaseDurationSeconds"),
        )
        if record != self._observed.record:
            self._observed.record = record
            self._observed.changed_at = self.clock.monotonic()
        self._observed.lease = lease
        self._observed.held_by_us = spec.get("holderIdentity") == self.identity

    def _spec(self, old: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        old = old or {}
        mine = old.get("holderIdentity") == self.identity
        spec = dict(old)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, math.ceil(self.timings.lease_duration)),
            renewTime=micro_time(now),
        )
        if not mine:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + (1 if old else 0)
        return spec

    async def _try_acquire_or_renew(self, *, request_timeout: float) -> bool:
        try:
            return await self._attempt(request_timeout)
        except errors.Conflict as e:
            log.info(
                "lease write conflict, re-reading", lease=self.name, identity=self.identity, error=str(e)
            )
            self._observed.lease = None  # the next attempt reads first
            with contextlib.suppress(errors.ApiError):
                self._observe(await self.api.request("GET", self.path, request_timeout=request_timeout))
            return False
        except errors.ApiError as e:
            log.info(
                "lease attempt failed", lease=self.name, identity=self.identity, status=e.status, error=str(e)
            )
            return False
        except Exception:  # a malformed Lease or a bug must not end the election
            log.exception("lease attempt failed unexpectedly", lease=self.name, identity=self.identity)
            return False

    async def _attempt(self, request_timeout: float) -> bool:
        now = self.clock.now()
        cached = self._observed.lease
        if cached is not None and self._observed.held_by_us:
            lease = cached  # renewing: write straight away (409 if anything changed since)
        else:
            try:
                lease = await self.api.request("GET", self.path, request_timeout=request_timeout)
            except errors.NotFound:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(None, now),
                }
                self._observe(
                    await self.api.request(
                        "POST", self._collection, body=body, request_timeout=request_timeout
                    )
                )
                return True
            self._observe(lease)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            expires = self._observed.changed_at + self.timings.lease_duration
            if holder and holder != self.identity and self.clock.monotonic() < expires:
                return False  # held by another, and alive as far as we have seen
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": lease["metadata"],  # carries resourceVersion: optimistic concurrency
            "spec": self._spec(lease.get("spec"), now),
        }
        self._observe(await self.api.request("PUT", self.path, body=body, request_timeout=request_timeout))
        return True

    async def _release(self, bound: Any) -> None:
        lease = self._observed.lease
        if lease is None:
            return
        now = self.clock.now()
        spec = dict(lease.get("spec") or {})
        spec.update(
            holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time(now), acquireTime=micro_time(now)
        )
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": lease["metadata"],
            "spec": spec,
        }
        try:
            async with asyncio.timeout(self.timings.retry_period):
                self._observe(await self.api.request("PUT", self.path, body=body))
            bound.info("lease released")
        except (errors.ApiError, TimeoutError) as e:
            bound.warning("lease release failed; it will expire", error=str(e))
        self._observed.held_by_us = False


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it, without swallowing a cancellation aimed at us."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        pass  # already logged by _log_lead_failure


async def _lead(lead: Lead) -> None:
    await lead()


def _log_lead_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("lead() failed while leading", error=repr(task.exception()))
