"""`healer run --dry-run` on a GPU node shows the whole GPU chain and writes nothing.

The node agent's `set-condition GPUHealthy=False` is never written in dry-run, yet the node
role plans from a view with it laid over (`healer.effects.dryrun.NodeWrites`), so the
`gpu-hardware-fault` rule shows "would taint / cordon / evict" as the live daemon would do
it; taint and cordon are laid over too, so they are not planned again, a Node update from
the watch keeps all of it, and recovery shows "would untaint / uncordon". The API (FakeApi,
real HTTP) gets no write at all. The shadow alert tells the live alert's story.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from healer.gpu.fake import FakeGpu, FakeNvml
from healer.model import names
from healer.model.actions import Outcome, Plan, Stage
from healer.model.view import ClusterView, ConditionStatus
from healer.notify import stories
from healer.notify.messages import Message
from tests.api.fakeapi import FakeApi
from tests.gpu.harness import GpuNode, fast_rules, gpu_node, gpu_node_obj, until
from tests.gpu.test_node_loop import NODE, pod_obj, write_kubeconfig

OTHER = "calypso-2"  # a second schedulable GPU node: the GPU pod may go (no last-gpu-node hold)
TRITON = "apps/triton-5d8f-abcde"
TIMINGS = stories.Timings(settle_s=0, verify_deadline_s=1, release_wait_s=0, recovery_hold_s=1)


@dataclass
class StoryNotifier:
    """The runtime's notifier contract over the real story tracker; keeps every message."""

    shadow: bool
    messages: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tracker = stories.Tracker(timings=TIMINGS, shadow=self.shadow)

    async def observe(
        self, *, plan: Plan, outcomes: Sequence[Outcome], view: ClusterView, now: datetime
    ) -> None:
        self.messages += self.tracker.observe(plan=plan, outcomes=tuple(outcomes), view=view, now=now)

    async def tick(self, *, view: ClusterView, now: datetime) -> None:
        self.messages += self.tracker.tick(view=view, now=now)

    def opened(self) -> Message | None:
        return next((m for m in self.messages if m.stage is Stage.OPENED and m.key.startswith("gpu/")), None)


def _gpu_cluster(fake: FakeApi) -> None:
    """Two GPU nodes (so this one is not the last) and a GPU pod on this one."""
    fake.put("nodes", gpu_node_obj(NODE))
    fake.put("nodes", gpu_node_obj(OTHER))
    fake.put(
        "pods", pod_obj("triton-5d8f-abcde", namespace="apps", gpus=1, owner=("ReplicaSet", "triton-5d8f"))
    )


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async with FakeApi() as fake:
        _gpu_cluster(fake)
        fake.put("pods", pod_obj("csv-worker-1", namespace="apps", owner=("ReplicaSet", "csv")))
        yield fake


def writes_to_api(api: FakeApi) -> list[str]:
    return [f"{r.method} {r.path}" for r in api.requests if r.method != "GET"]


def done(h: GpuNode) -> list[tuple[str, str, str]]:
    return h.executor.verbs()


def did(h: GpuNode, verb: str, target: str = NODE) -> int:
    return sum(1 for v, t, _ in done(h) if (v, t) == (verb, target))


def gpu_status(h: GpuNode) -> str | None:
    n = h.view().nodes.get(NODE)
    cond = n.condition(names.GPU_CONDITION) if n is not None else None
    return cond.status.value if cond is not None else None


async def test_dry_run_shows_the_gpu_chain_and_writes_nothing(api: FakeApi, tmp_path: Path) -> None:
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090-0")])
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server=api.url)
    notifier = StoryNotifier(shadow=True)
    async with gpu_node(
        kubeconfig=kubeconfig,
        node=NODE,
        rules_dir=fast_rules(tmp_path / "rules"),
        nvml=nvml,
        poll_interval=0.2,
        dry_run=True,
        notifier=notifier,
    ) as h:
        assert h.writes is not None
        await until(lambda: gpu_status(h) == "True", what="GPUHealthy=True (laid over)", timeout_s=20)
        nvml.inject_xid(0, 79)
        nvml.lose_gpu(0)
        await until(lambda: did(h, "evict", TRITON), what="would evict the GPU pod", timeout_s=20)
        assert did(h, "taint") == 1
        assert did(h, "cordon") == 1
        assert ("set-condition", NODE, "skipped") in done(h)
        assert all(status == "skipped" for _, _, status in done(h))
        assert not did(h, "evict", "apps/csv-worker-1")
        assert not any(t == OTHER for _, t, _ in done(h))  # the node role acts on its own node only
        seen = h.view().nodes[NODE]
        cond = seen.condition(names.GPU_CONDITION)
        assert cond is not None
        assert (cond.status, cond.reason) == (ConditionStatus.FALSE, "Xid79")
        assert seen.has_taint(names.GPU_UNHEALTHY_TAINT)
        assert seen.cordoned_by_healer
        assert seen.annotations[names.CORDONED_BY] == "gpu-hardware-fault"

        # a Node update from the watch (a label) replaces the Node; what dry-run wrote stays on it
        rec = h.daemon.node_reconciler
        assert rec is not None
        before = rec.store.view().nodes[NODE].resource_version
        obj = api.get("nodes", ("", NODE))
        assert obj is not None
        api.put(
            "nodes",
            {**obj, "metadata": {**obj["metadata"], "labels": {**obj["metadata"]["labels"], "x": "1"}}},
        )
        await until(
            lambda: rec.store.view().nodes[NODE].resource_version != before,
            what="the Node update",
            timeout_s=10,
        )
        seen = h.view().nodes[NODE]
        assert seen.labels.get("x") == "1"
        assert rec.store.view().nodes[NODE].condition(names.GPU_CONDITION) is None  # never written
        assert gpu_status(h) == "False"
        assert seen.has_taint(names.GPU_UNHEALTHY_TAINT)
        assert seen.unschedulable
        await until(lambda: rec.evaluations > 3, what="more plans", timeout_s=10)
        assert (did(h, "taint"), did(h, "cordon")) == (1, 1)  # not asked for again

        opened = await until(notifier.opened, what="the shadow GPU alert", timeout_s=10)
        text = opened.text()
        assert opened.title.startswith("[would have done] GPU fault on calypso")
        assert "GPU Xid79" in text
        for line in (
            "would have tainted calypso",
            "would have cordoned calypso",
            f"would have evicted {TRITON}",
        ):
            assert line in text

        # recovery: the agent would set GPUHealthy=True; gpu-recovered then lifts the quarantine
        nvml.reset_gpu(0)
        await until(lambda: gpu_status(h) == "True", what="GPUHealthy back to True", timeout_s=20)
        await until(
            lambda: did(h, "uncordon") and did(h, "untaint"), what="would untaint + uncordon", timeout_s=20
        )
        seen = h.view().nodes[NODE]
        assert not seen.unschedulable
        assert not seen.has_taint(names.GPU_UNHEALTHY_TAINT)
        assert names.CORDONED_BY not in seen.annotations
        assert h.writes.written(NODE)["conditions"] == {names.GPU_CONDITION: ("True", "GpuHealthy")}
        await until(
            lambda: any(m.stage is Stage.RESOLVED and m.key == f"gpu/{NODE}" for m in notifier.messages),
            what="the shadow recovery alert",
            timeout_s=10,
        )
    assert writes_to_api(api) == []
    assert api.get("pods", ("apps", "triton-5d8f-abcde")) is not None


_SINCE = re.compile(r"since [0-9-]+ [0-9:]+ UTC \([^)]*\)")


def _story(message: Message) -> dict[str, Any]:
    """The message without what only shadow mode says differently."""
    # when it is told differs (live waits for the evicted pods to run elsewhere), not what
    sections = {s.heading: [_SINCE.sub("since <t>", i.text) for i in s.items] for s in message.sections}
    did_items = sections.pop("What healer would do", None) or sections.pop("What healer did", [])
    sections.pop("Pods", None)  # live: where they went; shadow: "would be evicted"
    return {
        "title": message.title.removeprefix("[would have done] ").split(":")[0],
        "severity": message.severity,
        "did": sorted(t.removeprefix("would have ") for t in did_items),
        **sections,
    }


async def _opened_story(api: FakeApi, tmp_path: Path, *, dry_run: bool) -> dict[str, Any]:
    nvml = FakeNvml([FakeGpu(uuid="GPU-4090-0")])
    kubeconfig = write_kubeconfig(tmp_path / f"kubeconfig-{dry_run}", server=api.url)
    notifier = StoryNotifier(shadow=dry_run)
    async with gpu_node(
        kubeconfig=kubeconfig,
        node=NODE,
        rules_dir=fast_rules(tmp_path / f"rules-{dry_run}"),
        nvml=nvml,
        poll_interval=0.2,
        dry_run=dry_run,
        notifier=notifier,
    ) as h:
        await until(lambda: gpu_status(h) == "True", what="GPUHealthy=True", timeout_s=20)
        nvml.inject_xid(0, 79)
        nvml.lose_gpu(0)
        opened = await until(notifier.opened, what="the GPU alert", timeout_s=20)
    return _story(opened)


async def test_the_shadow_alert_tells_the_live_story(tmp_path: Path) -> None:
    told = {}
    for dry_run in (False, True):
        async with FakeApi() as fake:
            _gpu_cluster(fake)
            told[dry_run] = await _opened_story(fake, tmp_path, dry_run=dry_run)
            assert bool(writes_to_api(fake)) is not dry_run
    assert told[True] == told[False]
    assert told[True]["did"] == [
        "cordoned calypso",
        f"evicted {TRITON}",
        f"tainted calypso ({names.GPU_UNHEALTHY_TAINT}:NoSchedule)",
    ]
