"""How long upstream Kubernetes, unaided, takes to react when a worker's kubelet dies.

This is the number healer has to beat, measured on a real control plane (hack/cp.sh) with the
upstream DEFAULT timings (50 s node grace, 300 s toleration, 40 s lease), on the recreated
Oceanid cluster. Time zero is the SIGSTOP of styx's kubelet; we poll the API every 0.5 s and
record when (a) styx goes Ready=Unknown, (b) its pods are marked for deletion, (c) the
Deployments' replacements are Running elsewhere, (d) the StatefulSet's replacement is Running
(expected: never, because redis-0 stays Terminating and blocks it). Results go to
bench/results/upstream_baseline.json.

Run: python bench/upstream_baseline.py  (about 8 minutes; builds the binaries first if needed)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from kubernetes_asyncio import client, config  # noqa: E402

from tests.support.controlplane import UPSTREAM_TIMINGS, ControlPlane  # noqa: E402
from tests.support.kube import is_running, is_terminating, list_pods, node_condition, read_node  # noqa: E402
from tests.support.oceanid import OceanidCluster, build_oceanid  # noqa: E402

log = logging.getLogger("upstream_baseline")
RESULTS = REPO_ROOT / "bench" / "results" / "upstream_baseline.json"
POLL_S = 0.5


@dataclass(slots=True)
class Figures:
    """Seconds since the kubelet stopped; None = not observed within the window."""

    node_unknown_s: float | None = None
    unreachable_taint_s: float | None = None
    first_pod_marked_s: float | None = None
    all_pods_marked_s: float | None = None
    deployments_replaced_s: float | None = None
    statefulset_replaced_s: float | None = None
    pinned_replacement_pending_s: float | None = None
    observed_until_s: float = 0.0
    still_terminating_at_end: list[str] = field(default_factory=list)


async def _observe(
    api: client.ApiClient,
    cluster: OceanidCluster,
    *,
    window_after_marked_s: float,
    deadline_s: float,
    stop: float,
) -> Figures:
    styx = cluster.failed_node
    figures = Figures()
    old = {
        w.name: {p.metadata.uid for p in await list_pods(api, namespace=w.namespace, labels=w.labels)}
        for w in cluster.on_failed_node
    }
    while True:
        now = time.monotonic() - stop
        node = await read_node(api, name=styx)
        if figures.node_unknown_s is None and node_condition(node) == "Unknown":
            figures.node_unknown_s = now
        if figures.unreachable_taint_s is None and any(
            t.key == "node.kubernetes.io/unreachable" for t in node.spec.taints or []
        ):
            figures.unreachable_taint_s = now

        pods = {
            w.name: await list_pods(api, namespace=w.namespace, labels=w.labels)
            for w in cluster.on_failed_node
        }
        marked = [
            p
            for w in cluster.on_failed_node
            for p in pods[w.name]
            if p.metadata.uid in old[w.name] and is_terminating(p)
        ]
        if marked and figures.first_pod_marked_s is None:
            figures.first_pod_marked_s = now
        if figures.all_pods_marked_s is None and len(marked) == sum(len(v) for v in old.values()):
            figures.all_pods_marked_s = now
        if figures.deployments_replaced_s is None and all(
            any(is_running(p) and p.spec.node_name != styx for p in pods[w.name])
            for w in cluster.movable_deployments
        ):
            figures.deployments_replaced_s = now
        sts = cluster.statefulset
        if figures.statefulset_replaced_s is None and any(
            p.metadata.uid not in old[sts.name] and is_running(p) for p in pods[sts.name]
        ):
            figures.statefulset_replaced_s = now
        if figures.pinned_replacement_pending_s is None and any(
            p.metadata.uid not in old[cluster.pinned_deployment.name] and p.status.phase == "Pending"
            for p in pods[cluster.pinned_deployment.name]
        ):
            figures.pinned_replacement_pending_s = now

        figures.observed_until_s = now
        done = (
            figures.all_pods_marked_s is not None and now >= figures.all_pods_marked_s + window_after_marked_s
        )
        if done or now >= deadline_s:
            figures.still_terminating_at_end = sorted(
                f"{p.metadata.namespace}/{p.metadata.name}" for p in marked
            )
            return figures
        await asyncio.sleep(POLL_S)


def _machine() -> dict[str, Any]:
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    go = subprocess.run(
        ["go", "env", "GOVERSION"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown",
        ),
        "mem_total_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "go": go,
    }


async def main(*, window_after_marked_s: float, deadline_s: float, write: bool) -> dict[str, Any]:
    cp = ControlPlane.isolated(timings=UPSTREAM_TIMINGS)
    cp.build()
    started = time.monotonic()
    cp.up()
    up_s = time.monotonic() - started
    try:
        api = await config.new_client_from_config(config_file=str(cp.kubeconfig))
        try:
            cluster = await build_oceanid(api, agents=cp)
            rss = cp.rss_bytes()
            log.info("oceanid built; stopping kubelet of %s", cluster.failed_node)
            stop = time.monotonic()
            cp.stop_kubelet(node=cluster.failed_node)
            figures = await _observe(
                api, cluster, window_after_marked_s=window_after_marked_s, deadline_s=deadline_s, stop=stop
            )
        finally:
            await api.close()
    finally:
        cp.down()

    result = {
        "what": "upstream Kubernetes reaction to a dead kubelet (styx), healer absent",
        "machine": _machine(),
        "inputs": {
            "timings": asdict(UPSTREAM_TIMINGS),
            "kubernetes": "v1.33.4 (kube-apiserver, kube-controller-manager, kube-scheduler)",
            "etcd": "v3.5.21",
            "kwok": "v0.7.0, one process per node; kubelet death = SIGSTOP",
            "poll_interval_s": POLL_S,
            "window_after_all_marked_s": window_after_marked_s,
            "deadline_s": deadline_s,
            "workloads_on_styx": [f"{w.kind}/{w.namespace}/{w.name}" for w in cluster.on_failed_node],
        },
        "control_plane": {
            "warm_up_s": round(up_s, 1),
            "rss_mib": {k: round(v / 2**20, 1) for k, v in rss.items()},
            "rss_total_mib": round(sum(rss.values()) / 2**20, 1),
        },
        "figures_note": "seconds after SIGSTOP of styx's kubelet, at 0.5 s poll resolution; "
        "null = not observed before observed_until_s",
        "figures_s": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(figures).items()},
    }
    rows = [
        ("(a) styx Ready=Unknown", figures.node_unknown_s),
        ("    unreachable taint", figures.unreachable_taint_s),
        ("(b) first pod marked for deletion", figures.first_pod_marked_s),
        ("(b) all styx pods marked", figures.all_pods_marked_s),
        ("(c) Deployments Running elsewhere", figures.deployments_replaced_s),
        ("(d) StatefulSet replacement Running", figures.statefulset_replaced_s),
        ("    label-studio replacement Pending", figures.pinned_replacement_pending_s),
    ]
    print(f"\nupstream baseline, t=0 at kubelet SIGSTOP, observed {figures.observed_until_s:.0f}s")
    for label, value in rows:
        print(f"  {label:<40} {'never' if value is None else f'{value:7.1f} s'}")
    print(f"  still Terminating at end: {len(figures.still_terminating_at_end)} pods")
    if write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--window",
        type=float,
        default=60.0,
        help="seconds to keep watching after all pods are marked (default 60)",
    )
    parser.add_argument("--deadline", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    asyncio.run(main(window_after_marked_s=args.window, deadline_s=args.deadline, write=not args.no_write))
