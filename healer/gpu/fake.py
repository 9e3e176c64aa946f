"""An injectable stand-in for the part of `pynvml` healer's NVML source uses.

Real NVML cannot be made to raise an XID, lose a GPU or refuse event registration on
demand, and most machines that run the tests have no GPU at all. `FakeNvml` has the same
function names and return shapes as `pynvml`, raises pynvml's own exception classes and
forwards constants to the real module (importing pynvml never loads libnvidia-ml), so
`NvmlSource` runs unchanged against it. Nothing in pynvml is patched: the source takes its
`nvml` object as a parameter. `nvmlEventSetWait_v2` really blocks (on a queue) so the
worker-thread bridge is exercised as it is with a driver.

Test hooks (thread-safe): `inject_xid`, `inject_ecc`, `lose_gpu`, `remove_gpu`,
`reset_gpu`, `set_remap`, `set_recovery_action`, `register_error`, `driver_missing`.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

ALL_WHOLE_GPU = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId for a whole GPU (not MIG)

_DEFAULT_EVENTS = (
    pynvml.nvmlEventTypeXidCriticalError
    | pynvml.nvmlEventTypeDoubleBitEccError
    | pynvml.nvmlEventTypeSingleBitEccError
)


@dataclass
class FakeGpu:
    uuid: str
    bus_id: str = "00000000:01:00.0"
    name: str = "NVIDIA GeForce RTX 4090"
    temp_c: int = 40
    slowdown_c: int = 90
    ecc: dict[tuple[int, int], int] = field(default_factory=dict)  # (errorType, counterType) -> count
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)  # corrected, uncorrected, pending, failure
    retired_pending: int = 0
    recovery_action: int = 0  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    energy_mj: int = 1_000_000
    clock_reasons: int = 0
    supported_events: int = _DEFAULT_EVENTS
    lost: bool = False
    removed: bool = False  # gone from the device list (count drops)
    not_supported: set[str] = field(default_factory=set)  # method names that raise NotSupported


class FakeNvml:
    """Per-GPU state, call counters and fault injection behind pynvml's function names."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = list(gpus)
        self.inits = 0
        self.shutdowns = 0
        self.register_error: int | None = None  # e.g. pynvml.NVML_ERROR_NO_PERMISSION
        self.driver_missing = False  # nvmlInit raises LibraryNotFound, as without a driver
        self.waits = 0
        self._lock = threading.Lock()
        self._sets: list[SimpleNamespace] = []

    def __getattr__(self, name: str) -> Any:
        """Constants and exception classes come from the real module."""
        return getattr(pynvml, name)

    @property
    def initialised(self) -> bool:
        return self.inits > self.shutdowns

    @property
    def open_event_sets(self) -> int:
        return len(self._sets)

    def _gpu(self, handle: int, fn: str) -> FakeGpu:
        if not self.initialised:
            raise pynvml.NVMLError_Uninitialized()
        gpu = self.gpus[handle]
        if gpu.lost:
            raise pynvml.NVMLError_GpuIsLost()
        if gpu.removed:
            raise pynvml.NVMLError_NotFound()
        if fn in gpu.not_supported:
            raise pynvml.NVMLError_NotSupported()
        return gpu

    # lifecycle and enumeration
    def nvmlInit(self) -> None:
        if self.driver_missing:
            raise pynvml.NVMLError_LibraryNotFound()
        self.inits += 1

    def nvmlShutdown(self) -> None:
        if not self.initialised:
            raise pynvml.NVMLError_Uninitialized()
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.00-fake"

    def _present(self) -> list[int]:
        return [i for i, g in enumerate(self.gpus) if not g.removed]

    def nvmlDeviceGetCount(self) -> int:
        if not self.initialised:
            raise pynvml.NVMLError_Uninitialized()
        return len(self._present())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        present = self._present()
        if index >= len(present):
            raise pynvml.NVMLError_InvalidArgument()
        handle = present[index]
        self._gpu(handle, "handle")
        return handle

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        for handle, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid and not gpu.removed:
                self._gpu(handle, "handle")
                return handle
        raise pynvml.NVMLError_NotFound()

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle, "uuid").uuid

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle, "name").name

    def nvmlDeviceGetPciInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self._gpu(handle, "pci").bus_id.encode())

    # polled health
    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return self._gpu(handle, "temp").temp_c

    def nvmlDeviceGetTemperatureThreshold(self, handle: int, threshold: int) -> int:
        return self._gpu(handle, "temp_threshold").slowdown_c

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter_type: int) -> int:
        return self._gpu(handle, "ecc").ecc.get((error_type, counter_type), 0)

    def nvmlDeviceGetRemappedRows(self, handle: int) -> tuple[int, int, int, int]:
        return self._gpu(handle, "remap").remapped

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: int) -> int:
        return self._gpu(handle, "retired").retired_pending

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self._gpu(handle, "clocks").clock_reasons

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        gpu = self._gpu(handle, "energy")
        gpu.energy_mj += 1000
        return gpu.energy_mj

    def nvmlDeviceGetFieldValues(self, handle: int, field_ids: list[int]) -> list[SimpleNamespace]:
        gpu = self._gpu(handle, "fields")
        out = []
        for fid in field_ids:
            if fid == pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION and "recovery" not in gpu.not_supported:
                value = SimpleNamespace(uiVal=gpu.recovery_action, ullVal=gpu.recovery_action)
                out.append(
                    SimpleNamespace(
                        fieldId=fid,
                        nvmlReturn=pynvml.NVML_SUCCESS,
                        valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                        value=value,
                    )
                )
            else:
                out.append(
                    SimpleNamespace(fieldId=fid, nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, valueType=0)
                )
        return out

    # events
    def nvmlEventSetCreate(self) -> SimpleNamespace:
        event_set = SimpleNamespace(q=queue.Queue(), handles=set())
        with self._lock:
            self._sets.append(event_set)
        return event_set

    def nvmlDeviceGetSupportedEventTypes(self, handle: int) -> int:
        return self._gpu(handle, "events").supported_events

    def nvmlDeviceRegisterEvents(self, handle: int, mask: int, event_set: SimpleNamespace) -> None:
        gpu = self._gpu(handle, "register")
        if self.register_error is not None:
            raise pynvml.NVMLError(self.register_error)
        if mask & ~gpu.supported_events:
            raise pynvml.NVMLError_NotSupported()
        event_set.handles.add(handle)

    def nvmlEventSetWait_v2(self, event_set: SimpleNamespace, timeout_ms: int) -> Any:
        """Blocks like the real call: an event, `Timeout` after `timeout_ms`, or an injected error."""
        self.waits += 1
        if any(self.gpus[h].lost for h in event_set.handles):
            raise pynvml.NVMLError_GpuIsLost()  # as long as a registered GPU is gone
        try:
            item = event_set.q.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise pynvml.NVMLError_Timeout() from None
        if isinstance(item, Exception):
            raise item
        return item

    nvmlEventSetWait = nvmlEventSetWait_v2

    def nvmlEventSetFree(self, event_set: SimpleNamespace) -> None:
        with self._lock:
            self._sets.remove(event_set)

    # fault injection (test-only API)
    def _deliver(self, handle: int, item: object) -> None:
        with self._lock:
            sets = list(self._sets)
        for event_set in sets:
            if handle in event_set.handles:
                event_set.q.put(item)

    def inject_xid(self, handle: int, xid: int, *, gi: int = ALL_WHOLE_GPU, ci: int = ALL_WHOLE_GPU) -> None:
        """An XID event as the driver would report it (delivered only to registered sets)."""
        self._deliver(
            handle,
            SimpleNamespace(
                device=handle,
                eventType=pynvml.nvmlEventTypeXidCriticalError,
                eventData=xid,
                gpuInstanceId=gi,
                computeInstanceId=ci,
            ),
        )

    def inject_ecc(
        self, handle: int, *, corrected: int = 0, uncorrected: int = 0, event: bool = True
    ) -> None:
        """ECC errors: counters (volatile and aggregate) go up; events are delivered if asked."""
        gpu = self.gpus[handle]
        for error_type, n in (
            (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, corrected),
            (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, uncorrected),
        ):
            if not n:
                continue
            for counter in (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC):
                gpu.ecc[(error_type, counter)] = gpu.ecc.get((error_type, counter), 0) + n
            if event:
                etype = (
                    pynvml.nvmlEventTypeSingleBitEccError
                    if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
                    else pynvml.nvmlEventTypeDoubleBitEccError
                )
                self._deliver(
                    handle,
                    SimpleNamespace(
                        device=handle,
                        eventType=etype,
                        eventData=0,
                        gpuInstanceId=ALL_WHOLE_GPU,
                        computeInstanceId=ALL_WHOLE_GPU,
                    ),
                )

    def set_remap(self, handle: int, *, pending: bool = False, failure: bool = False) -> None:
        corr, unc, _, _ = self.gpus[handle].remapped
        self.gpus[handle].remapped = (corr, unc + int(pending), int(pending), int(failure))

    def set_recovery_action(self, handle: int, action: int) -> None:
        self.gpus[handle].recovery_action = action

    def lose_gpu(self, handle: int) -> None:
        """The GPU falls off the bus: every call on it, and every wait on a set it is in, raises GpuIsLost."""
        self.gpus[handle].lost = True
        with self._lock:
            sets = list(self._sets)
        for event_set in sets:
            event_set.q.put(pynvml.NVMLError_GpuIsLost())  # wakes a waiter at once

    def remove_gpu(self, handle: int) -> None:
        """The GPU disappears from enumeration (device count drops)."""
        self.gpus[handle].removed = True

    def reset_gpu(self, handle: int) -> None:
        """What a GPU reset does: back on the bus, volatile ECC and the energy counter restart,
        pending row remaps and page retirements are applied, the recovery action clears."""
        gpu = self.gpus[handle]
        gpu.lost = gpu.removed = False
        for key in [k for k in gpu.ecc if k[1] == pynvml.NVML_VOLATILE_ECC]:
            gpu.ecc[key] = 0
        corr, unc, _, failure = gpu.remapped
        gpu.remapped = (corr, unc, 0, failure)
        gpu.retired_pending = 0
        gpu.recovery_action = 0
        gpu.energy_mj = 0
