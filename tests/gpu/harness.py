"""One GPU node's healer, wired as in production, for tests and the latency bench.

The node role of `healer.runtime.daemon.Daemon` (own-node watches, node-scoped engine, live
executor) runs next to the GPU agent (`healer.gpu.agent.GpuAgent` on an `NvmlSource` over
`FakeNvml`, in place of the daemon's own agent on the real pynvml), both talking real HTTP
to whatever API the kubeconfig names: the real control plane in e2e,
`tests/api/fakeapi.FakeApi` otherwise. The agent reads the node role's view (its node's
GPUHealthy condition, allocatable GPUs, the device plugin pod) as the runtime wires it.
`TimedExecutor` stamps every outcome with a monotonic time so the bench can measure
XID -> quarantine. `dry_run=True` wires it as `healer run --dry-run` does: the dry-run
executor, its Node writes laid over the node role's view (`healer.effects.dryrun.NodeWrites`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from healer.effects.dryrun import DryRunExecutor, NodeWrites
from healer.effects.live import LiveExecutor
from healer.gpu.agent import GpuAgent
from healer.gpu.fake import FakeNvml
from healer.gpu.source import NvmlSource, utcnow
from healer.kube import client
from healer.model.actions import Action, Outcome
from healer.model.view import ClusterView
from healer.runtime.daemon import Daemon, load_rules_holder
from healer.runtime.metrics import Metrics
from healer.runtime.settings import Settings

REPO_RULES = Path(__file__).resolve().parents[2] / "rules"


class QuietNotifier:
    """Alerts are another engineer's tests; here they only must not get in the way."""

    async def observe(self, **_: Any) -> None:
        return None

    async def tick(self, **_: Any) -> None:
        return None


def fast_rules(into: Path, *, healthy_for: str = "2s", recovered_for: str = "1s") -> Path:
    """The shipped rules with GPU recovery times short enough for a test."""
    into.mkdir(parents=True, exist_ok=True)
    for f in REPO_RULES.glob("*.yaml"):
        shutil.copy(f, into / f.name)
    gpu = into / "gpu.yaml"
    text = gpu.read_text()
    assert "healthy_for: 5m" in text
    assert "for: 1m" in text
    gpu.write_text(
        text.replace("healthy_for: 5m", f"healthy_for: {healthy_for}").replace(
            "for: 1m", f"for: {recovered_for}"
        )
    )
    return into


@dataclass(slots=True)
class Stamped:
    action: Action
    outcome: Outcome
    at: float  # time.monotonic() when the write returned


@dataclass(slots=True)
class TimedExecutor:
    inner: Any
    done: list[Stamped] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def execute(self, action: Action) -> Outcome:
        outcome = await self.inner.execute(action)
        self.done.append(Stamped(action=action, outcome=outcome, at=time.monotonic()))
        self.changed.set()
        return outcome

    def verbs(self) -> list[tuple[str, str, str]]:
        return [(s.action.verb, s.action.target.key, s.outcome.status.value) for s in self.done]


@dataclass(slots=True)
class GpuNode:
    daemon: Daemon
    agent: GpuAgent
    nvml: FakeNvml
    executor: TimedExecutor
    api: Any
    writes: NodeWrites | None = None  # dry-run only

    def view(self) -> ClusterView:
        """What the node role plans from (with dry-run's Node writes), as the daemon gives the agent."""
        rec = self.daemon.node_reconciler
        return rec.view() if rec is not None else ClusterView()


def gpu_node_obj(name: str, *, gpus: int = 1, allocatable: int | None = None) -> dict[str, Any]:
    """A Ready Node with `gpus` nvidia.com/gpu (allocatable may be lower: a device the plugin marked bad)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true"},
        },
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "capacity": {"cpu": "6", "nvidia.com/gpu": str(gpus)},
            "allocatable": {"cpu": "6", "nvidia.com/gpu": str(gpus if allocatable is None else allocatable)},
        },
    }


@contextlib.asynccontextmanager
async def gpu_node(
    *,
    kubeconfig: Path,
    node: str,
    rules_dir: Path,
    nvml: FakeNvml,
    poll_interval: float = 0.5,
    clock: Callable[[], datetime] = utcnow,
    wait_timeout_ms: int = 100,
    debounce_s: float = 0.02,
    tick_s: float = 0.5,
    dry_run: bool = False,
    notifier: Any = None,
) -> AsyncIterator[GpuNode]:
    """Run the node role and the GPU agent for `node` until the block ends (then drain both)."""
    async with client.connect(kubeconfig=kubeconfig) as api:
        writes = NodeWrites() if dry_run else None
        inner: Any = (
            DryRunExecutor(writes=writes) if dry_run else LiveExecutor(api, instance=f"healer-{node}")
        )
        executor = TimedExecutor(inner)
        metrics = Metrics()
        settings = Settings(
            node=node,
            rules_dir=rules_dir,
            elect=False,
            gpu=True,  # production wiring (other GPU nodes watched); the agent is ours, on FakeNvml
            http_port=0,
            http_host="127.0.0.1",
            identity=f"healer-{node}",
            debounce_s=debounce_s,
            tick_s=tick_s,
            dry_run=dry_run,
        )
        rules = load_rules_holder(settings, metrics)
        daemon = Daemon(
            settings=settings,
            api=api,
            executor=executor,
            notifier=notifier if notifier is not None else QuietNotifier(),
            rules=rules,
            metrics=metrics,
            elector=None,
            gpu_agent=lambda _node: run_agent(),
            overlay=writes,
        )
        source = NvmlSource.open(
            node=node, nvml=nvml, poll_interval=poll_interval, wait_timeout_ms=wait_timeout_ms, clock=clock
        )
        assert source is not None
        harness = GpuNode(daemon=daemon, agent=None, nvml=nvml, executor=executor, api=api, writes=writes)  # type: ignore[arg-type]
        agent = GpuAgent(
            node_name=node,
            policy=lambda: rules.current.gpu,
            executor=executor,
            view=harness.view,
            clock=clock,
            booted=None,
        )
        harness.agent = agent

        async def run_agent() -> None:
            async with source:
                await agent.wait_for_node(timeout_s=30)
                await agent.run(source)

        daemon_task = asyncio.create_task(daemon.run())  # runs run_agent() as its GPU watcher
        try:
            yield harness
        finally:
            daemon.stop()
            await asyncio.wait([daemon_task], timeout=30)
            daemon_task.cancel()
            await asyncio.gather(daemon_task, return_exceptions=True)


async def until(probe: Callable[[], Any], *, what: str, timeout_s: float, interval_s: float = 0.05) -> Any:
    """Poll `probe` (sync or async) until truthy, within the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval_s)
