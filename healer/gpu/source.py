"""The node agent's view of its GPUs: NVML events and polls as a stream of `GpuSignal` batches.

NVML reports XIDs and ECC errors as events a caller must block for (`nvmlEventSetWait_v2`);
that C call cannot be awaited or cancelled, so one dedicated worker thread waits with a short
timeout (`wait_timeout_ms`, 500 ms) and hands each event to the event loop with
`call_soon_threadsafe`; stopping sets a flag the thread sees within one timeout. Everything
that is a state rather than an event (ECC counters, pending or failed row remaps, pending
page retirements, the recovery action, a lost GPU or a shrinking device list, sustained
hardware throttling, temperature near the slowdown threshold) is polled every
`poll_interval` seconds (5 s), and once at start, because NVML does not replay events that
happened before registration.

Level faults (lost, remap pending/failure, retired pages pending, recovery action, volatile
uncorrected ECC at start) are reported on every poll while they last; counters as deltas;
throttling and temperature once when they start. A poll that finds nothing wrong with a
GPU reports `HEALTHY`, and evidence that the GPU was reset reports `RESET` (see
`healer.engine.gpu_health` for how recovery uses both).

Without a driver or a GPU (`NVMLError_LibraryNotFound`, `DriverNotLoaded`, a device count
of 0) `NvmlSource.open` logs one warning and returns None: the GPU watcher is off and
healer runs on. Where event registration is refused (NO_PERMISSION, NOT_SUPPORTED: e.g.
MIG without privileges, or a container without the capability) the source says so once and
polls only. The `nvml` object is injected (default: the `pynvml` module of nvidia-ml-py),
so the tests run it against `healer.gpu.fake.FakeNvml`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pynvml  # importing it does not load libnvidia-ml: nvmlInit does
import structlog

from healer.model.events import GpuSignal, GpuSignalKind

log = structlog.get_logger(__name__)

WHOLE_GPU = 0xFFFFFFFF
# clock event reasons that mean the hardware is protecting itself (not idle or a power cap)
HARMFUL_THROTTLE = {
    0x8: "HwSlowdown",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
}
SUSTAINED_POLLS = 3  # throttling counts once it is seen on this many polls in a row
THERMAL_MARGIN_C = 5  # report THERMAL this close to the slowdown threshold
RECOVERY_ACTIONS = {1: "GPU reset", 2: "node reboot", 3: "drain peer-to-peer", 4: "drain and reset"}

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuInfo:
    index: int
    uuid: str
    name: str = ""


@dataclass
class _Seen:
    """What the previous poll found on one GPU (touched only by the poll)."""

    first: bool = True
    lost: bool = False
    ecc: dict[tuple[int, int], int] = field(default_factory=dict)
    remap_pending: bool = False
    retired_pending: bool = False
    recovery_action: int = 0
    energy_mj: int | None = None
    throttle_polls: int = 0
    hot: bool = False
    slowdown_c: int | None = None


_POLL_NOW = object()  # queued by the wait thread: something happened that a poll should look at


class NvmlSource:
    """Open with `NvmlSource.open(...)`, use as `async with source:` and iterate `source.signals()`."""

    def __init__(
        self,
        *,
        node: str,
        nvml: Any,
        gpus: tuple[GpuInfo, ...],
        handles: tuple[Any, ...],
        poll_interval: float,
        wait_timeout_ms: int,
        clock: Clock,
    ) -> None:
        self.node = node
        self.gpus = gpus
        self.events = False  # True once event registration worked for at least one GPU
        self._nvml = nvml
        self._handles = handles
        self._poll_interval = poll_interval
        self._wait_ms = wait_timeout_ms
        self._clock = clock
        self._seen = {g.index: _Seen() for g in gpus}
        self._set: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._by_uuid = {g.uuid: g for g in gpus}
        self._closed = False

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        *,
        node: str,
        nvml: Any = None,
        poll_interval: float = 5.0,
        wait_timeout_ms: int = 500,
        clock: Clock = utcnow,
    ) -> NvmlSource | None:
        """Initialise NVML and list the GPUs; None (after one warning) when there is nothing to watch."""
        if nvml is None:
            nvml = pynvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            log.warning("gpu watcher off: NVML unavailable", node=node, reason=_error_name(e), error=str(e))
            return None
        try:
            count = nvml.nvmlDeviceGetCount()
            handles = tuple(nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count))
            gpus = tuple(
                GpuInfo(index=i, uuid=_text(nvml.nvmlDeviceGetUUID(h)), name=_name(nvml, h))
                for i, h in enumerate(handles)
            )
        except nvml.NVMLError as e:
            _shutdown(nvml)
            log.warning("gpu watcher off: GPUs could not be listed", node=node, reason=_error_name(e))
            return None
        if not gpus:
            _shutdown(nvml)
            log.warning("gpu watcher off: no GPUs", node=node, reason="device count 0")
            return None
        source = cls(
            node=node,
            nvml=nvml,
            gpus=gpus,
            handles=handles,
            poll_interval=poll_interval,
            wait_timeout_ms=wait_timeout_ms,
            clock=clock,
        )
        source._register()
        log.info(
            "gpu watcher on",
            node=node,
            gpus=[f"{g.index} {g.uuid} {g.name}" for g in gpus],
            events=source.events,
        )
        return source

    def _register(self) -> None:
        nvml = self._nvml
        want = nvml.nvmlEventTypeXidCriticalError | nvml.nvmlEventTypeDoubleBitEccError
        want |= nvml.nvmlEventTypeSingleBitEccError | getattr(nvml, "nvmlEventTypeGpuRecoveryAction", 0)
        refused: dict[str, str] = {}
        try:
            self._set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as e:
            log.warning("gpu events unavailable: polling only", node=self.node, reason=_error_name(e))
            return
        for gpu, handle in zip(self.gpus, self._handles, strict=True):
            try:
                mask = want & nvml.nvmlDeviceGetSupportedEventTypes(handle)
                if not mask:
                    refused[gpu.uuid] = "no supported event types"
                    continue
                nvml.nvmlDeviceRegisterEvents(handle, mask, self._set)
                self.events = True
            except (nvml.NVMLError_NoPermission, nvml.NVMLError_NotSupported) as e:
                refused[gpu.uuid] = _error_name(e)  # nothing registered for it; the set stays usable
            except nvml.NVMLError as e:  # UNKNOWN and the rest: the set is not to be trusted
                refused[gpu.uuid] = _error_name(e)
                self.events = False
                break
        if refused:
            log.warning(
                "gpu events unavailable: polling only",
                node=self.node,
                refused=refused,
                note="XIDs are not seen on these GPUs; polled signals still are",
            )
        if not self.events:
            self._free_set()

    def _free_set(self) -> None:
        if self._set is not None:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlEventSetFree(self._set)
            self._set = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> NvmlSource:
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        if self.events:
            self._thread = threading.Thread(
                target=self._wait_loop, args=(loop,), name=f"nvml-events-{self.node}", daemon=True
            )
            self._thread.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the wait thread (it notices within one wait timeout), free the set, shut NVML down."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.shield(asyncio.to_thread(thread.join, self._wait_ms / 1000 * 4 + 2))
            if thread.is_alive():
                log.warning("nvml wait thread did not stop; leaving it (daemon)", node=self.node)
        self._free_set()
        _shutdown(self._nvml)

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the stream ------------------------------------------------------------------------------
    async def signals(self) -> AsyncIterator[tuple[GpuSignal, ...]]:
        """A poll's signals at once, then event batches and a poll every `poll_interval` seconds."""
        loop = asyncio.get_running_loop()
        yield await asyncio.to_thread(self.poll)
        next_poll = loop.time() + self._poll_interval
        while not self._closed:
            timeout = next_poll - loop.time()
            item: object = _POLL_NOW
            if timeout > 0:
                try:
                    async with asyncio.timeout(timeout):
                        item = await self._queue.get()
                except TimeoutError:
                    item = _POLL_NOW
            batch = [item]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            signals = [s for s in batch if isinstance(s, GpuSignal)]
            if any(s is _POLL_NOW for s in batch):
                signals.extend(await asyncio.to_thread(self.poll))
                next_poll = loop.time() + self._poll_interval
            if signals:
                yield tuple(signals)

    # -- the event thread -------------------------------------------------------------------------
    def _wait_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        nvml = self._nvml
        failing = False
        while not self._stop.is_set():
            try:
                event = nvml.nvmlEventSetWait_v2(self._set, self._wait_ms)
            except nvml.NVMLError_Timeout:
                if failing:
                    log.info("nvml event wait works again", node=self.node)
                failing = False
                continue
            except nvml.NVMLError as e:
                # GpuIsLost / Unknown: a poll now names the GPU; then retry quietly at the poll
                # interval (the regular polls report it meanwhile): no busy loop, no log flood
                if not failing:
                    log.warning("nvml event wait failed", node=self.node, reason=_error_name(e))
                    if not self._hand_over(loop, _POLL_NOW):
                        return
                failing = True
                self._stop.wait(self._poll_interval)
                continue
            if failing:
                log.info("nvml event wait works again", node=self.node)
            failing = False
            for item in self._event_items(event):
                if not self._hand_over(loop, item):
                    return

    def _hand_over(self, loop: asyncio.AbstractEventLoop, item: object) -> bool:
        try:
            loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _event_items(self, event: Any) -> list[object]:
        nvml = self._nvml
        gpu = self._gpu_of(event.device)
        at = self._clock()
        etype = int(event.eventType)
        detail = ""
        gi, ci = (
            int(getattr(event, "gpuInstanceId", WHOLE_GPU)),
            int(getattr(event, "computeInstanceId", WHOLE_GPU)),
        )
        if gi != WHOLE_GPU or ci != WHOLE_GPU:
            detail = f"MIG gi={gi} ci={ci}"
        items: list[object] = []

        def signal(kind: GpuSignalKind, **kw: Any) -> GpuSignal:
            return GpuSignal(node=self.node, gpu_index=gpu.index, gpu_uuid=gpu.uuid, kind=kind, at=at, **kw)

        if etype & nvml.nvmlEventTypeXidCriticalError:
            xid = int(event.eventData)
            text = f"XID {xid}" + (" (driver: unknown XID)" if xid == 999 else "")
            items.append(signal(GpuSignalKind.XID, xid=xid, value=xid, detail=f"{text} {detail}".strip()))
        if etype & nvml.nvmlEventTypeDoubleBitEccError:
            items.append(signal(GpuSignalKind.ECC_DBE, value=1, detail="double-bit ECC error event"))
            items.append(_POLL_NOW)
        if etype & nvml.nvmlEventTypeSingleBitEccError:
            items.append(signal(GpuSignalKind.ECC_SBE, value=1, detail="single-bit ECC error event"))
        if etype & getattr(nvml, "nvmlEventTypeGpuRecoveryAction", 0):
            items.append(_POLL_NOW)
        return items

    def _gpu_of(self, handle: Any) -> GpuInfo:
        try:
            return self._by_uuid.get(_text(self._nvml.nvmlDeviceGetUUID(handle)), _UNKNOWN_GPU)
        except self._nvml.NVMLError:
            return self.gpus[0] if len(self.gpus) == 1 else _UNKNOWN_GPU

    # -- polling ---------------------------------------------------------------------------------
    def poll(self) -> tuple[GpuSignal, ...]:
        """Read every polled signal of every GPU (blocking NVML calls: run it in a thread)."""
        nvml = self._nvml
        at = self._clock()
        missing: set[str] = set()
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError:
            count = len(self.gpus)
        if count < len(self.gpus):
            for gpu in self.gpus:
                try:
                    nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
                except nvml.NVMLError:
                    missing.add(gpu.uuid)
        out: list[GpuSignal] = []
        for gpu, handle in zip(self.gpus, self._handles, strict=True):
            if gpu.uuid in missing:
                out.extend(
                    self._lost(gpu, at=at, detail=f"device count dropped to {count} of {len(self.gpus)}")
                )
                continue
            out.extend(self._poll_gpu(gpu, handle, at=at))
        return tuple(out)

    def _lost(self, gpu: GpuInfo, *, at: datetime, detail: str) -> list[GpuSignal]:
        seen = self._seen[gpu.index]
        seen.lost, seen.first = True, False
        return [self._signal(gpu, GpuSignalKind.GPU_LOST, at=at, detail=detail)]

    def _signal(
        self, gpu: GpuInfo, kind: GpuSignalKind, *, at: datetime, value: int = 0, detail: str = ""
    ) -> GpuSignal:
        return GpuSignal(
            node=self.node,
            gpu_index=gpu.index,
            gpu_uuid=gpu.uuid,
            kind=kind,
            at=at,
            value=value,
            detail=detail,
        )

    def _poll_gpu(self, gpu: GpuInfo, handle: Any, *, at: datetime) -> list[GpuSignal]:
        nvml = self._nvml
        seen = self._seen[gpu.index]
        lost_errors = (nvml.NVMLError_GpuIsLost, nvml.NVMLError_Unknown, nvml.NVMLError_NotFound)
        out: list[GpuSignal] = []
        bad = False

        def sig(kind: GpuSignalKind, *, value: int = 0, detail: str = "") -> None:
            out.append(self._signal(gpu, kind, at=at, value=value, detail=detail))

        def read(fn: str, *args: Any) -> Any:
            """The value, or None where this GPU or driver does not support it."""
            try:
                return getattr(nvml, fn)(handle, *args)
            except (
                nvml.NVMLError_NotSupported,
                nvml.NVMLError_NoPermission,
                nvml.NVMLError_FunctionNotFound,
            ):
                return None
            except AttributeError:  # an older nvidia-ml-py without the function
                return None

        try:
            temp = read("nvmlDeviceGetTemperature", nvml.NVML_TEMPERATURE_GPU)
        except lost_errors as e:
            return self._lost(gpu, at=at, detail=f"NVML: {e}")
        except nvml.NVMLError as e:
            log.warning(
                "gpu poll failed", node=self.node, gpu=gpu.index, uuid=gpu.uuid, reason=_error_name(e)
            )
            return []
        if seen.lost:
            sig(GpuSignalKind.RESET, detail="the GPU answers again after it was lost")
            seen.lost = False
        try:
            # ECC: volatile counters restart at a reset or driver load, aggregate ones never do
            for error_type, kind in (
                (nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, GpuSignalKind.ECC_DBE),
                (nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, GpuSignalKind.ECC_SBE),
            ):
                vol = read("nvmlDeviceGetTotalEccErrors", error_type, nvml.NVML_VOLATILE_ECC)
                agg = read("nvmlDeviceGetTotalEccErrors", error_type, nvml.NVML_AGGREGATE_ECC)
                prev_vol = seen.ecc.get((error_type, 0))
                prev_agg = seen.ecc.get((error_type, 1))
                if vol is not None and prev_vol is not None and vol < prev_vol:
                    sig(GpuSignalKind.RESET, detail="volatile ECC counters restarted")
                delta = 0
                if agg is not None and prev_agg is not None:
                    delta = agg - prev_agg
                elif vol is not None and prev_vol is not None:
                    delta = vol - prev_vol if vol >= prev_vol else vol
                elif seen.first and vol and kind is GpuSignalKind.ECC_DBE:
                    delta = vol  # uncorrected errors since the driver loaded, found at start
                if delta > 0:
                    sig(
                        kind,
                        value=delta,
                        detail=f"{delta} new {'un' if kind is GpuSignalKind.ECC_DBE else ''}"
                        "corrected ECC errors",
                    )
                    bad = bad or kind is GpuSignalKind.ECC_DBE
                if vol is not None:
                    seen.ecc[(error_type, 0)] = vol
                if agg is not None:
                    seen.ecc[(error_type, 1)] = agg
            remap = read("nvmlDeviceGetRemappedRows")
            if remap is not None:
                _, _, pending, failure = (int(v) for v in remap)
                if pending:
                    sig(
                        GpuSignalKind.ROW_REMAP_PENDING,
                        value=1,
                        detail="row remap pending: applied at next reset",
                    )
                elif seen.remap_pending:
                    sig(GpuSignalKind.RESET, detail="pending row remap applied")
                if failure:
                    sig(GpuSignalKind.ROW_REMAP_FAILURE, value=1, detail="row remap failed")
                seen.remap_pending = bool(pending)
                bad = bad or bool(pending or failure)
            retired = read("nvmlDeviceGetRetiredPagesPendingStatus")
            if retired is not None:
                if retired:
                    sig(GpuSignalKind.RETIRED_PAGES_PENDING, value=1, detail="page retirement pending")
                elif seen.retired_pending:
                    sig(GpuSignalKind.RESET, detail="pending page retirement applied")
                seen.retired_pending = bool(retired)
                bad = bad or bool(retired)
            action = self._recovery_action(handle)
            if action is not None:
                if action:
                    sig(
                        GpuSignalKind.RECOVERY_ACTION,
                        value=action,
                        detail=f"driver asks for: {RECOVERY_ACTIONS.get(action, str(action))}",
                    )
                elif seen.recovery_action:
                    sig(GpuSignalKind.RESET, detail="recovery action cleared")
                seen.recovery_action = action
                bad = bad or bool(action)
            energy = read("nvmlDeviceGetTotalEnergyConsumption")
            if energy is not None:
                if seen.energy_mj is not None and energy < seen.energy_mj:
                    sig(GpuSignalKind.RESET, detail="energy counter restarted: driver reloaded or GPU reset")
                seen.energy_mj = int(energy)
            reasons = read("nvmlDeviceGetCurrentClocksEventReasons")
            if reasons is not None:
                harmful = [name for bit, name in HARMFUL_THROTTLE.items() if int(reasons) & bit]
                seen.throttle_polls = seen.throttle_polls + 1 if harmful else 0
                if seen.throttle_polls == SUSTAINED_POLLS:
                    sig(GpuSignalKind.THROTTLE, value=int(reasons), detail="sustained " + ",".join(harmful))
            if temp is not None:
                if seen.slowdown_c is None:
                    seen.slowdown_c = read(
                        "nvmlDeviceGetTemperatureThreshold", nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
                    )
                hot = seen.slowdown_c is not None and temp >= seen.slowdown_c - THERMAL_MARGIN_C
                if hot and not seen.hot:
                    sig(
                        GpuSignalKind.THERMAL,
                        value=int(temp),
                        detail=f"{temp} C, slowdown at {seen.slowdown_c} C",
                    )
                seen.hot = hot
        except lost_errors as e:
            return out + self._lost(gpu, at=at, detail=f"NVML: {e}")
        except nvml.NVMLError as e:
            log.warning(
                "gpu poll failed", node=self.node, gpu=gpu.index, uuid=gpu.uuid, reason=_error_name(e)
            )
            seen.first = False
            return out
        seen.first = False
        if not bad:
            sig(GpuSignalKind.HEALTHY)
        return out

    def _recovery_action(self, handle: Any) -> int | None:
        nvml = self._nvml
        fid = getattr(nvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", None)
        if fid is None:
            return None
        try:
            (value,) = nvml.nvmlDeviceGetFieldValues(handle, [fid])
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound, nvml.NVMLError_InvalidArgument):
            return None
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            return None
        return int(value.value.uiVal)


_UNKNOWN_GPU = GpuInfo(index=-1, uuid="unknown")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _name(nvml: Any, handle: Any) -> str:
    try:
        return _text(nvml.nvmlDeviceGetName(handle))
    except nvml.NVMLError:
        return ""


def _error_name(error: BaseException) -> str:
    return type(error).__name__.removeprefix("NVMLError_")


def _shutdown(nvml: Any) -> None:
    with contextlib.suppress(nvml.NVMLError):
        nvml.nvmlShutdown()
