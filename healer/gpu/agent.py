"""The node agent's GPU loop: NVML signals -> `gpu_health` -> actions, through an injected executor.

Every healer pod runs this for its own node (the runtime calls `run_gpu_agent`). It
publishes the `GPUHealthy` condition on the node and, when a GPU recovers while the node
offers fewer `nvidia.com/gpu` than it has, restarts the NVIDIA device plugin pod there. The
quarantine itself (taint, cordon, evicting GPU pods, keeping them on the last GPU node) is
the engine's node-scoped GPU rules reacting to that condition, planned and executed by the
runtime like any other rule, so dry-run, guards and alerts work the same for GPUs.

Without a driver or GPUs the agent logs one warning (in `NvmlSource.open`) and returns:
healer runs on without a GPU watcher. Errors in one batch are logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from healer.engine import gpu_health
from healer.gpu.source import Clock, NvmlSource, utcnow
from healer.model.actions import Outcome
from healer.model.events import GpuSignal
from healer.model.ports import Executor
from healer.model.view import ClusterView, Node, Pod
from healer.rules import schema

log = structlog.get_logger(__name__)

PolicySource = schema.GpuPolicy | Callable[[], schema.GpuPolicy]
ViewSource = Callable[[], ClusterView]


def boot_time(stat: Path = Path("/proc/stat")) -> datetime | None:
    """When the node booted (`btime`: the host's, also inside a container); None if unreadable."""
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("btime "):
                return datetime.fromtimestamp(int(line.split()[1]), UTC)
    except (OSError, ValueError):
        return None
    return None


class GpuAgent:
    """One node's GPU loop. `run_gpu_agent` is the entry point; tests may drive this directly."""

    def __init__(
        self,
        *,
        node_name: str,
        policy: PolicySource,
        executor: Executor,
        view: ViewSource | None = None,
        clock: Clock = utcnow,
        booted: datetime | None = None,
    ) -> None:
        self.node_name = node_name
        self.state: gpu_health.GpuHealth | None = None
        self.outcomes: list[Outcome] = []  # every outcome, in order (for tests and `healer plan`-like output)
        self._policy_source = policy
        self._policy_cache: tuple[schema.GpuPolicy, gpu_health.GpuPolicy] | None = None
        self._executor = executor
        self._view = view
        self._clock = clock
        self._booted = booted
        self.changed = asyncio.Event()  # set after every batch is handled

    def policy(self) -> gpu_health.GpuPolicy:
        rules = self._policy_source() if callable(self._policy_source) else self._policy_source
        if self._policy_cache is None or self._policy_cache[0] is not rules:
            self._policy_cache = (rules, gpu_health.from_rules(rules))
        return self._policy_cache[1]

    def _node(self) -> tuple[Node | None, tuple[Pod, ...]]:
        if self._view is None:
            return None, ()
        view = self._view()
        return view.nodes.get(self.node_name), view.pods_on(self.node_name)

    async def wait_for_node(self, *, timeout_s: float) -> None:
        """Give the runtime's own-node watch a moment, so a condition from an earlier run is seen."""
        if self._view is None:
            return
        for _ in range(max(1, int(timeout_s / 0.2))):
            if self._node()[0] is not None:
                return
            await asyncio.sleep(0.2)  # the view is a plain callable: nothing to await on
        log.warning("gpu agent starting without its node in view", node=self.node_name)

    async def run(self, source: NvmlSource) -> None:
        node, _ = self._node()
        self.state = gpu_health.start(
            node=self.node_name,
            gpus=[gpu_health.Gpu(index=g.index, uuid=g.uuid) for g in source.gpus],
            now=self._clock(),
            current=node,
            events=source.events,
            boot_time=self._booted,
        )
        if self.state.faults:
            log.info(
                "gpu faults carried over from the node condition",
                node=self.node_name,
                faults=[f.describe() for f in self.state.faults],
            )
        async for batch in source.signals():
            try:
                await self.handle(batch)
            except Exception:  # one bad batch must not end GPU watching
                log.exception("gpu batch failed", node=self.node_name)

    async def handle(self, batch: tuple[GpuSignal, ...]) -> None:
        assert self.state is not None
        node, pods = self._node()
        result = gpu_health.step(
            state=self.state, signals=batch, policy=self.policy(), now=self._clock(), node=node, pods=pods
        )
        for note in result.notes:
            getattr(log, note.level, log.info)(note.event, node=self.node_name, **dict(note.fields))
        outcomes = []
        for action in result.actions:
            outcome = await self._executor.execute(action)
            outcomes.append(outcome)
            log.info(
                "gpu action",
                node=self.node_name,
                action=action.verb,
                target=action.target.key,
                status=outcome.status.value,
                detail=outcome.detail,
            )
        self.outcomes.extend(outcomes)
        self.state = gpu_health.after(result.state, outcomes=outcomes)
        self.changed.set()


async def run_gpu_agent(
    *,
    node_name: str,
    policy: PolicySource,
    executor: Executor,
    view: ViewSource | None = None,
    nvml: Any = None,
    clock: Clock = utcnow,
    poll_interval: float = 5.0,
    wait_timeout_ms: int = 500,
    node_wait_s: float = 30.0,
    booted: datetime | None = None,
) -> None:
    """Watch this node's GPUs until cancelled; return at once (one warning) when there are none.

    `policy` is the rules' `gpu:` section, or a callable returning the current one (rule
    reloads); `view` returns the runtime's view holding this node and its pods (the agent
    reads the node's GPUHealthy condition at start, and allocatable GPUs and the device plugin
    pod on recovery); `executor` carries out SetCondition and Delete (live or dry-run).
    """
    source = await asyncio.to_thread(
        NvmlSource.open,
        node=node_name,
        nvml=nvml,
        poll_interval=poll_interval,
        wait_timeout_ms=wait_timeout_ms,
    )
    if source is None:
        return
    agent = GpuAgent(
        node_name=node_name,
        policy=policy,
        executor=executor,
        view=view,
        clock=clock,
        booted=booted if booted is not None else boot_time(),
    )
    async with source:
        await agent.wait_for_node(timeout_s=node_wait_s)
        await agent.run(source)
