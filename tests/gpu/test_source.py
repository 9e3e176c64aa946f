"""NvmlSource against FakeNvml: the event thread bridge, polled signals, fallbacks, clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pynvml
import pytest
import structlog

from healer.gpu.fake import FakeGpu, FakeNvml
from healer.gpu.source import NvmlSource
from healer.model.events import GpuSignal
from healer.model.events import GpuSignalKind as K

NODE = "calypso"


def fake(n: int = 2) -> FakeNvml:
    return FakeNvml([FakeGpu(uuid=f"GPU-{i:04d}", bus_id=f"00000000:{i + 1:02x}:00.0") for i in range(n)])


def open_source(nvml: FakeNvml, **kw: float) -> NvmlSource:
    source = NvmlSource.open(node=NODE, nvml=nvml, poll_interval=kw.get("poll", 60.0), wait_timeout_ms=100)
    assert source is not None
    return source


async def next_batch(
    it: AsyncIterator[tuple[GpuSignal, ...]], *, timeout_s: float = 5.0
) -> tuple[GpuSignal, ...]:
    return await asyncio.wait_for(anext(it), timeout_s)


async def batch_with(
    it: AsyncIterator[tuple[GpuSignal, ...]], kind: K, *, timeout_s: float = 5.0
) -> tuple[GpuSignal, ...]:
    """Batches until one holds `kind` (the deadline bounds the whole wait)."""
    async with asyncio.timeout(timeout_s):
        while True:
            batch = await anext(it)
            if any(s.kind is kind for s in batch):
                return batch


def kinds(batch: tuple[GpuSignal, ...], gpu: int | None = None) -> list[K]:
    return [s.kind for s in batch if gpu is None or s.gpu_index == gpu]


async def test_opens_lists_gpus_and_first_poll_is_healthy() -> None:
    nvml = fake()
    source = open_source(nvml)
    assert [(g.index, g.uuid) for g in source.gpus] == [(0, "GPU-0000"), (1, "GPU-0001")]
    assert source.events
    async with source:
        it = source.signals()
        first = await next_batch(it)
        assert kinds(first) == [K.HEALTHY, K.HEALTHY]
        assert {s.node for s in first} == {NODE}
        await it.aclose()


async def test_xid_event_arrives_through_the_thread_bridge() -> None:
    nvml = fake()
    source = open_source(nvml)
    async with source:
        it = source.signals()
        await next_batch(it)
        assert source.thread_alive
        nvml.inject_xid(1, 79)
        batch = await batch_with(it, K.XID)
        (xid,) = [s for s in batch if s.kind is K.XID]
        assert (xid.gpu_index, xid.gpu_uuid, xid.xid) == (1, "GPU-0001", 79)
        await it.aclose()


async def test_mig_instance_is_named_in_detail() -> None:
    nvml = fake(1)
    source = open_source(nvml)
    async with source:
        it = source.signals()
        await next_batch(it)
        nvml.inject_xid(0, 31, gi=1, ci=0)
        batch = await batch_with(it, K.XID)
        assert "MIG gi=1 ci=0" in batch[0].detail
        await it.aclose()


async def test_thread_stops_cleanly_and_nvml_is_shut_down() -> None:
    nvml = fake()
    source = open_source(nvml)
    async with source:
        it = source.signals()
        await next_batch(it)
        assert source.thread_alive
        assert nvml.waits >= 1  # it is really waiting in NVML
        await it.aclose()
    assert not source.thread_alive
    assert nvml.open_event_sets == 0
    assert not nvml.initialised


async def test_stop_while_cancelled_mid_wait() -> None:
    nvml = fake(1)
    source = open_source(nvml)

    async def consume() -> None:
        async for _ in source.signals():
            pass

    async with source:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0)  # let it start waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not source.thread_alive
    assert not nvml.initialised


async def test_dbe_storm_is_reported_by_event_and_as_counter_delta() -> None:
    nvml = fake(1)
    source = open_source(nvml)
    async with source:
        it = source.signals()
        await next_batch(it)
        nvml.inject_ecc(0, uncorrected=3)
        # the event, and the poll it triggers sees the counter went up by 3: one batch or two,
        # depending on when the poll runs
        dbe: list[int] = []
        async with asyncio.timeout(5):
            while not {1, 3} <= set(dbe):
                batch = await anext(it)
                values = [s.value for s in batch if s.kind is K.ECC_DBE]
                assert not values or K.HEALTHY not in kinds(batch)
                dbe += values
        assert sorted(dbe) == [1, 3]
        await it.aclose()


async def test_sbe_counters_give_deltas_on_each_poll() -> None:
    nvml = fake(1)
    source = open_source(nvml)
    source.poll()
    nvml.inject_ecc(0, corrected=50, event=False)
    first = source.poll()
    nvml.inject_ecc(0, corrected=7, event=False)
    second = source.poll()
    assert [(s.kind, s.value) for s in first if s.kind is K.ECC_SBE] == [(K.ECC_SBE, 50)]
    assert [(s.kind, s.value) for s in second if s.kind is K.ECC_SBE] == [(K.ECC_SBE, 7)]
    assert K.HEALTHY in kinds(second)  # corrected errors alone are no fault
    await source.aclose()


async def test_uncorrected_ecc_already_there_at_start_is_reported() -> None:
    nvml = fake(1)
    nvml.gpus[0].ecc[(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)] = 2
    source = open_source(nvml)
    first = source.poll()
    assert [(s.kind, s.value) for s in first] == [(K.ECC_DBE, 2)]
    assert [s.kind for s in source.poll()] == [K.HEALTHY]  # no new errors since
    await source.aclose()


async def test_row_remap_pending_then_failure_then_reset() -> None:
    nvml = fake(1)
    source = open_source(nvml)
    source.poll()
    nvml.set_remap(0, pending=True)
    assert kinds(source.poll()) == [K.ROW_REMAP_PENDING]
    assert kinds(source.poll()) == [K.ROW_REMAP_PENDING]  # level: every poll while it lasts
    nvml.set_remap(0, pending=True, failure=True)
    assert kinds(source.poll()) == [K.ROW_REMAP_PENDING, K.ROW_REMAP_FAILURE]
    nvml.set_remap(0)
    after = source.poll()
    assert K.RESET in kinds(after)
    assert K.HEALTHY in kinds(after)
    await source.aclose()


async def test_retired_pages_and_recovery_action() -> None:
    nvml = fake(1)
    source = open_source(nvml)
    nvml.gpus[0].retired_pending = 1
    nvml.set_recovery_action(0, 2)
    first = source.poll()  # found at start: events are not replayed
    assert kinds(first) == [K.RETIRED_PAGES_PENDING, K.RECOVERY_ACTION]
    assert "node reboot" in first[1].detail
    nvml.reset_gpu(0)
    after = source.poll()
    assert kinds(after).count(K.RESET) >= 2
    assert kinds(after)[-1] is K.HEALTHY
    await source.aclose()


async def test_lost_gpu_from_wait_and_poll_then_back() -> None:
    nvml = fake(2)
    source = open_source(nvml)
    async with source:
        it = source.signals()
        await next_batch(it)
        nvml.lose_gpu(0)
        batch = await batch_with(it, K.GPU_LOST)
        assert kinds(batch, gpu=0) == [K.GPU_LOST]
        assert kinds(batch, gpu=1) == [K.HEALTHY]
        await it.aclose()
    nvml.inits = nvml.shutdowns = 0
    nvml.nvmlInit()
    nvml.reset_gpu(0)
    back = source.poll()
    assert kinds(back, gpu=0)[0] is K.RESET
    assert "answers again" in back[0].detail
    nvml.nvmlShutdown()


async def test_device_count_drop_is_gpu_lost() -> None:
    nvml = fake(2)
    source = open_source(nvml)
    source.poll()
    nvml.remove_gpu(1)
    batch = source.poll()
    lost = [s for s in batch if s.kind is K.GPU_LOST]
    assert [(s.gpu_index, s.gpu_uuid) for s in lost] == [(1, "GPU-0001")]
    assert "device count dropped to 1 of 2" in lost[0].detail
    await source.aclose()


async def test_sustained_throttle_and_heat_are_reported_once() -> None:
    nvml = fake(1)
    source = open_source(nvml)
    nvml.gpus[0].clock_reasons = 0x40 | 0x1  # HW thermal slowdown (+ idle, which is harmless)
    nvml.gpus[0].temp_c = 88
    polls = [kinds(source.poll()) for _ in range(5)]
    assert polls[0] == [K.THERMAL, K.HEALTHY]
    assert [p.count(K.THROTTLE) for p in polls] == [0, 0, 1, 0, 0]
    await source.aclose()


async def test_unsupported_queries_are_skipped() -> None:
    nvml = fake(1)
    nvml.gpus[0].not_supported |= {"remap", "retired", "ecc", "fields", "energy", "clocks", "temp_threshold"}
    source = open_source(nvml)
    assert kinds(source.poll()) == [K.HEALTHY]
    await source.aclose()


@pytest.mark.parametrize("error", [pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_NOT_SUPPORTED])
async def test_denied_registration_falls_back_to_polling_and_says_so_once(error: int) -> None:
    nvml = fake(2)
    nvml.register_error = error
    with structlog.testing.capture_logs() as logs:
        source = open_source(nvml)
    assert not source.events
    assert nvml.open_event_sets == 0
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["gpu events unavailable: polling only"]
    assert set(warnings[0]["refused"]) == {"GPU-0000", "GPU-0001"}
    async with source:
        it = source.signals()
        assert kinds(await next_batch(it)) == [K.HEALTHY, K.HEALTHY]
        assert not source.thread_alive  # nothing to wait for
        nvml.set_remap(1, pending=True)
        source_poll = source.poll()  # polled signals still arrive
        assert kinds(source_poll, gpu=1) == [K.ROW_REMAP_PENDING]
        await it.aclose()


async def test_no_driver_turns_the_watcher_off_with_one_warning() -> None:
    nvml = fake()
    nvml.driver_missing = True
    with structlog.testing.capture_logs() as logs:
        assert NvmlSource.open(node=NODE, nvml=nvml) is None
    assert [(e["log_level"], e["event"], e["reason"]) for e in logs] == [
        ("warning", "gpu watcher off: NVML unavailable", "LibraryNotFound")
    ]


async def test_no_gpus_turns_the_watcher_off_and_shuts_nvml_down() -> None:
    nvml = FakeNvml([])
    with structlog.testing.capture_logs() as logs:
        assert NvmlSource.open(node=NODE, nvml=nvml) is None
    assert [e["event"] for e in logs] == ["gpu watcher off: no GPUs"]
    assert not nvml.initialised


async def test_real_pynvml_without_driver_is_off_not_a_crash() -> None:
    """This machine has no NVIDIA driver: the real module must fail cleanly in nvmlInit."""
    with structlog.testing.capture_logs() as logs:
        source = NvmlSource.open(node=NODE)
    if source is not None:  # a GPU machine: the real path works, nothing more to check here
        await source.aclose()
        return
    assert [e["event"] for e in logs] == ["gpu watcher off: NVML unavailable"]


async def test_a_lost_gpu_is_reported_every_poll_but_logged_once() -> None:
    nvml = fake(1)
    source = NvmlSource.open(node=NODE, nvml=nvml, poll_interval=0.05, wait_timeout_ms=50)
    assert source is not None
    async with source:
        it = source.signals()
        await next_batch(it)
        with structlog.testing.capture_logs() as logs:
            nvml.lose_gpu(0)
            lost = 0
            async with asyncio.timeout(5):
                while lost < 5:  # five polls that each find it lost
                    lost += kinds(await anext(it)).count(K.GPU_LOST)
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["nvml event wait failed"]
        nvml.reset_gpu(0)
        await batch_with(it, K.RESET)
        await it.aclose()
    assert not source.thread_alive
