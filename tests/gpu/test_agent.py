"""The node agent's GPU loop end to end without a cluster: FakeNvml -> source -> gpu_health -> executor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from healer.effects.dryrun import DryRunExecutor
from healer.effects.recording import RecordingExecutor
from healer.gpu import agent as gpu_agent
from healer.gpu.fake import FakeGpu, FakeNvml
from healer.gpu.source import NvmlSource
from healer.model import names
from healer.model.actions import Delete, OutcomeStatus, SetCondition
from healer.model.view import ClusterView, Condition, ConditionStatus, Node, Owner, Pod
from healer.rules import schema

NODE = "calypso"
POLICY = schema.GpuPolicy()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def until(
    probe: Callable[[], bool], *, what: str, timeout_s: float = 5.0, changed: asyncio.Event
) -> None:
    """Wait for `probe` on each change the agent reports (bounded by the deadline)."""
    async with asyncio.timeout(timeout_s):
        while not probe():
            changed.clear()
            if probe():
                return
            await changed.wait()
    assert probe(), what


def conditions(executor: RecordingExecutor) -> list[tuple[str, str]]:
    return [(a.status, a.cond_reason) for a in executor.actions if isinstance(a, SetCondition)]


def plugin_pod() -> Pod:
    return Pod(
        namespace="kube-system",
        name="nvidia-device-plugin-daemonset-7x2kq",
        uid="uid-plugin",
        node_name=NODE,
        phase="Running",
        labels={"name": "nvidia-device-plugin-ds"},
        owner=Owner(kind="DaemonSet", name="nvidia-device-plugin-daemonset"),
    )


async def start(
    nvml: FakeNvml, executor: RecordingExecutor, clock: Clock, view: ClusterView
) -> tuple[gpu_agent.GpuAgent, asyncio.Task[None]]:
    source = NvmlSource.open(node=NODE, nvml=nvml, poll_interval=0.05, wait_timeout_ms=50, clock=clock)
    assert source is not None
    agent = gpu_agent.GpuAgent(
        node_name=NODE, policy=POLICY, executor=executor, view=lambda: view, clock=clock, booted=None
    )

    async def run() -> None:
        async with source:
            await agent.run(source)

    return agent, asyncio.create_task(run())


async def test_fatal_xid_publishes_condition_and_recovery_restores_device_plugin() -> None:
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090")])
    executor = RecordingExecutor()
    clock = Clock()
    view = ClusterView.of(nodes=[Node(name=NODE, gpu_capacity=1, gpu_allocatable=0)], pods=[plugin_pod()])
    agent, task = await start(nvml, executor, clock, view)
    try:
        await until(
            lambda: conditions(executor) == [("True", "GpuHealthy")], what="initial", changed=agent.changed
        )
        nvml.inject_xid(0, 79)
        nvml.lose_gpu(0)
        await until(lambda: ("False", "Xid79") in conditions(executor), what="fault", changed=agent.changed)
        (fault,) = [a for a in executor.actions if isinstance(a, SetCondition) and a.status == "False"]
        assert "GPU 0 GPU-4090 Xid79 class=reboot" in fault.message
        assert "reboot" in fault.message.split("to do:")[1]

        # the GPU comes back (reset), and stays healthy past recovery.healthy_for
        nvml.reset_gpu(0)
        await until(
            lambda: bool(agent.state and agent.state.faults[0].reset_seen),
            what="reset",
            changed=agent.changed,
        )
        assert conditions(executor)[-1] == ("False", "Xid79")
        clock.now += POLICY.recovery.healthy_for + timedelta(seconds=1)
        await until(
            lambda: conditions(executor)[-1] == ("True", "GpuHealthy"), what="recovery", changed=agent.changed
        )
        deletes = [a for a in executor.actions if isinstance(a, Delete)]
        assert [(d.target.namespace, d.target.name) for d in deletes] == [
            ("kube-system", "nvidia-device-plugin-daemonset-7x2kq")
        ]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not nvml.initialised


async def test_application_xid_is_only_logged_but_repeats_escalate() -> None:
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090")])
    executor = RecordingExecutor()
    clock = Clock()
    agent, task = await start(nvml, executor, clock, ClusterView.of(nodes=[Node(name=NODE)]))
    try:
        await until(lambda: len(conditions(executor)) == 1, what="initial", changed=agent.changed)
        with structlog.testing.capture_logs() as logs:
            nvml.inject_xid(0, 13)
            await until(
                lambda: any(e["event"] == "gpu application fault" for e in logs),
                what="logged",
                changed=agent.changed,
            )
        assert conditions(executor) == [("True", "GpuHealthy")]
        nvml.inject_xid(0, 13)
        nvml.inject_xid(0, 13)
        await until(
            lambda: conditions(executor)[-1] == ("False", "Xid13"), what="escalation", changed=agent.changed
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_restart_keeps_the_fault_the_node_already_carries() -> None:
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090")])
    executor = RecordingExecutor()
    clock = Clock()
    message = "GPU 0 GPU-4090 Xid48 class=reset: XID 48; to do: reset the GPU"
    node = Node(
        name=NODE,
        conditions=(
            Condition(
                type=names.GPU_CONDITION,
                status=ConditionStatus.FALSE,
                reason="Xid48",
                message=message,
                last_transition=clock.now - timedelta(hours=1),
            ),
        ),
    )
    agent, task = await start(nvml, executor, clock, ClusterView.of(nodes=[node]))
    try:
        clock.now += timedelta(hours=1)  # healthy polls for a long time, but no reset seen
        await until(lambda: nvml.waits > 5, what="polls", changed=agent.changed, timeout_s=10)
        # never declared healthy without a reset (the message may be rewritten in full, still False)
        assert {status for status, _ in conditions(executor)} <= {"False"}
        assert agent.state is not None
        assert agent.state.faults[0].reason == "Xid48"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_dry_run_executor_writes_nothing_and_is_asked_again() -> None:
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090")])
    source = NvmlSource.open(node=NODE, nvml=nvml, poll_interval=0.05, wait_timeout_ms=50)
    assert source is not None
    agent = gpu_agent.GpuAgent(node_name=NODE, policy=POLICY, executor=DryRunExecutor())
    async with source:
        it = source.signals()
        agent.state = None
        task = asyncio.create_task(agent.run(source))
        try:
            await until(lambda: len(agent.outcomes) >= 1, what="dry run", changed=agent.changed)
            assert agent.outcomes[0].status is OutcomeStatus.SKIPPED
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await it.aclose()


async def test_run_gpu_agent_without_driver_returns_after_one_warning() -> None:
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090")])
    nvml.driver_missing = True
    executor = RecordingExecutor()
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(
            gpu_agent.run_gpu_agent(node_name=NODE, policy=POLICY, executor=executor, nvml=nvml), 5
        )
    assert executor.actions == []
    assert [e["log_level"] for e in logs] == ["warning"]


def test_boot_time_reads_btime(tmp_path: object) -> None:
    from pathlib import Path

    stat = Path(str(tmp_path)) / "stat"
    stat.write_text("cpu  1 2 3\nbtime 1764216000\nprocesses 5\n")
    assert gpu_agent.boot_time(stat) == datetime.fromtimestamp(1764216000, UTC)
    assert gpu_agent.boot_time(Path(str(tmp_path)) / "missing") is None
