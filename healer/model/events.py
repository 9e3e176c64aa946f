"""Events that flow from the sources (watches, NVML, timers) into the runtime.

A watch event updates the view and names the subjects worth re-planning; a GPU signal
comes from the node agent's NVML source; `Tick` lets time-based conditions (`for: 60s`)
fire without any new API event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from healer.model.view import Node, PersistentVolume, PersistentVolumeClaim, Pod, PodDisruptionBudget


class Change(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeEvent:
    change: Change
    node: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class PodEvent:
    change: Change
    pod: Pod


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageEvent:
    change: Change
    obj: PersistentVolume | PersistentVolumeClaim | PodDisruptionBudget


@dataclass(frozen=True, slots=True, kw_only=True)
class Listed:
    """A list (or relist after 410) finished: the store for `resource` is complete again."""

    resource: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected:
    """The watch for `resource` lost the API; the view is stale until the next `Listed`."""

    resource: str
    error: str


class GpuSignalKind(StrEnum):
    XID = "xid"
    ECC_DBE = "ecc-dbe"  # double-bit (uncorrectable) ECC
    ECC_SBE = "ecc-sbe"  # single-bit (corrected) ECC
    ROW_REMAP_PENDING = "row-remap-pending"
    ROW_REMAP_FAILURE = "row-remap-failure"
    RETIRED_PAGES_PENDING = "retired-pages-pending"
    GPU_LOST = "gpu-lost"
    THERMAL = "thermal"
    THROTTLE = "throttle"
    RECOVERY_ACTION = "recovery-action"
    HEALTHY = "healthy"  # a poll found the GPU healthy
    # evidence the GPU was reset since the last fault: it answered again after being lost,
    # volatile ECC counters went down, a pending row remap / page retirement cleared, or the
    # recovery action went back to 0. Reset-class faults recover only after one.
    RESET = "reset"


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuSignal:
    node: str
    gpu_index: int
    gpu_uuid: str
    kind: GpuSignalKind
    at: datetime
    xid: int | None = None
    value: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    at: datetime


Event = NodeEvent | PodEvent | StorageEvent | Listed | Disconnected | GpuSignal | Tick
