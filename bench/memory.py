"""Resident memory: a node agent on a 110-pod node, and a leader holding 5,000 nodes / 150,000 pods.

Why: the agent runs on every node, so its memory is paid N times and its limit must stay small
(goal: RSS <= 64 MiB; node-problem-detector asks 80 Mi). The leader holds the whole cluster's
view: at 150,000 pods a careless object layout costs gigabytes (a full pod dict is ~23 KiB).

Figures (KiB from /proc/<pid>/status, VmRSS and VmHWM = peak):
  agent    a real `healer run --node N` process (see `bench/agent_process.py`: shipped rules,
           leader election on, no notification URLs, development-only packages hidden as in
           the image) against the fake API serving its node and 110 realistic pods: RSS once
           /readyz is 200, and again after it has run for --settle seconds. It connects as a
           DaemonSet pod does: in-cluster (KUBERNETES_SERVICE_HOST/PORT, a service-account
           folder, https with a scratch CA), so kubernetes-asyncio is never imported. The same
           process with `--kubeconfig` (the kubernetes-asyncio path) is measured in the same
           run for comparison (`agent_kubeconfig`). Being the only candidate it also wins the
           Lease, so this includes the (tiny) cluster view too: an upper bound for a non-leader.
  imports  the same process's import set layer by layer, in a fresh interpreter: what each
           layer adds to RSS (where a smaller agent would come from), then what apprise
           (notification URLs configured) and kubernetes-asyncio (--kubeconfig) would add
  leader   a fresh interpreter imports what `healer run` imports in a pod, then decodes a
           synthetic 5,000-node / 150,000-pod cluster into the runtime's `Store`
           (`bench/synth.py`) and takes one `Store.view()` snapshot: RSS before, after filling
           (and per pod), after the snapshot.
  leader, listed through the watchers
           the same cluster listed as the leader lists it: pages of 500 raw objects through the
           watchers' own list-and-diff code, whose bookkeeping (what it yielded, for the next
           relist) stays alive as in the leader: RSS per pod, the whole cost of a pod held.

Run: .venv/bin/python bench/memory.py [--nodes 5000] [--pods-per-node 30] [--settle 3]
     [--only leader]   (the leader parts alone; their figures replace those in the results file)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench import agent_process, common  # noqa: E402

# The leader measured by this bench at 6d2415c, before decode shared repeated values (fc11101);
# kept so the JSON shows before and after side by side.
LEADER_BEFORE_SHARING = {
    "commit": "6d2415c",
    "when": "2026-11-27T04:53:45+00:00",
    "imports_rss_kib": 95208,
    "filled_rss_kib": 375940,
    "snapshot_rss_kib": 389488,
    "bytes_per_pod": 1916,
}
# The leader at 3add44f, before decode kept only the volumes healer reads and the watchers
# shared the store's objects and keys: the store alone, and listed through the watchers
# (measured at 5,000 nodes / 150,000 pods with this bench's harness on that commit's code).
LEADER_BEFORE_SLIM = {"commit": "3add44f", "bytes_per_pod": 1098, "watched_bytes_per_pod": 1403}
LEADER_GOAL_BYTES_PER_POD = LEADER_BEFORE_SHARING["bytes_per_pod"] // 2  # "halve it" (issue 8)
AGENT_PODS = 110
AGENT_GOAL_MIB = 64.0
HIDE = f"import sys; sys.modules.update(dict.fromkeys({agent_process.DEV_ONLY!r}))"
# What `healer run` imports in a pod: in-cluster configuration, no notification URLs.
RUN_IMPORTS = (
    "import healer.cli, healer.runtime.daemon, healer.effects.live, healer.effects.dryrun, "
    "healer.runtime.leader, healer.kube.client, healer.gpu.agent"
)
LAYERS: tuple[tuple[str, str], ...] = (
    ("python", "pass"),
    ("asyncio, aiohttp, orjson, structlog", "import asyncio, aiohttp, orjson, structlog"),
    ("+ rules (pydantic, yaml)", "import healer.rules.loading"),
    ("+ prometheus_client", "import prometheus_client"),
    ("+ healer.runtime.daemon (notify, apprise not loaded)", "import healer.cli, healer.runtime.daemon"),
    ("+ effects, leader, kube, gpu: in-cluster, no kubernetes_asyncio", RUN_IMPORTS),
    ("+ apprise (only with notification URLs)", "import apprise"),
    (
        "+ kubernetes_asyncio client/config (only with --kubeconfig)",
        "from kubernetes_asyncio import client, config; from kubernetes_asyncio.client import rest",
    ),
)

_RSS = "int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"


def _run(code: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", f"{HIDE}\n{code}"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_layers() -> list[tuple[str, int, int]]:
    """(layer, RSS KiB after it, modules loaded) in one fresh interpreter, layer by layer."""
    code = "import json, sys\nrows = []\n"
    for label, stmt in LAYERS:
        code += f"{stmt}\nrows.append(({label!r}, {_RSS}, len(sys.modules)))\n"
    code += "print(json.dumps(rows))"
    return [tuple(r) for r in _run(code)]


LEADER = """
import gc, json, sys, time
sys.path.insert(0, {root!r})
{imports}
from bench import synth
from healer.runtime.store import Store
from healer.runtime.daemon import CLUSTER_RESOURCES
def rss():
    return {rss}
gc.collect()
before = rss()
store = Store(resources=CLUSTER_RESOURCES)
t0 = time.process_time()
if {watched}:  # the watchers' states (their bookkeeping) stay alive to the end, as in a leader
    counts, states = synth.fill_store_watched(store, nodes={nodes}, pods_per_node={ppn}, not_ready={nr})
else:
    counts = synth.fill_store(store, nodes={nodes}, pods_per_node={ppn}, not_ready={nr})
fill_cpu = time.process_time() - t0
gc.collect()
filled = rss()
view = store.view()
gc.collect()
snap = rss()
peak = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
out = dict(before=before, filled=filled, snapshot=snap, peak=peak, counts=counts, fill_cpu_s=fill_cpu)
print(json.dumps(out))
"""


def leader(nodes: int, pods_per_node: int, *, watched: bool = False) -> dict[str, Any]:
    code = LEADER.format(
        watched=watched,
        root=str(REPO_ROOT),
        imports=RUN_IMPORTS,
        rss=_RSS,
        nodes=nodes,
        ppn=pods_per_node,
        nr=max(1, nodes // 100),
    )
    result: dict[str, Any] = _run(code)
    return result


async def agent(settle_s: float, *, in_cluster: bool = True) -> dict[str, int | float]:
    """`healer run` in-cluster (as in a pod), or with `--kubeconfig` (kubernetes-asyncio's path)."""
    async with contextlib.AsyncExitStack() as stack:
        if in_cluster:
            env = await stack.enter_async_context(agent_process.fake_cluster_in_cluster(pods=AGENT_PODS))
            a = await stack.enter_async_context(agent_process.healer_run(env=env))
        else:
            kubeconfig = await stack.enter_async_context(agent_process.fake_cluster(pods=AGENT_PODS))
            a = await stack.enter_async_context(agent_process.healer_run(kubeconfig=kubeconfig))
        ready = agent_process.proc_status(a.pid)
        await asyncio.sleep(settle_s)
        settled = agent_process.proc_status(a.pid)
    return {
        "ready_rss_kib": ready["VmRSS"],
        "settled_rss_kib": settled["VmRSS"],
        "peak_rss_kib": settled["VmHWM"],
        "rss_anon_kib": settled["RssAnon"],
        "rss_file_kib": settled["RssFile"],
        "threads": settled["Threads"],
        "ready_s": round(a.ready_s, 3),
    }


def mib(kib: float) -> float:
    return kib / 1024


def leader_part(nodes: int, pods_per_node: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Both leader runs, their table; (inputs, figures, targets) for the results file."""
    ld = leader(nodes, pods_per_node)
    lw = leader(nodes, pods_per_node, watched=True)
    pods = ld["counts"]["pods"]
    per_pod = (ld["filled"] - ld["before"]) * 1024 / pods
    watched_per_pod = (lw["filled"] - lw["before"]) * 1024 / lw["counts"]["pods"]
    met = per_pod <= LEADER_GOAL_BYTES_PER_POD
    common.table(
        f"leader: {ld['counts']['nodes']:,} nodes / {pods:,} pods in the Store",
        ["stage", "RSS MiB"],
        [
            ["imports done", mib(ld["before"])],
            ["store filled", mib(ld["filled"])],
            ["+ one view snapshot", mib(ld["snapshot"])],
            ["peak", mib(ld["peak"])],
            [f"bytes per pod (filled - imports; goal <= {LEADER_GOAL_BYTES_PER_POD})", per_pod],
            [f"  before slimming ({LEADER_BEFORE_SLIM['commit']})", LEADER_BEFORE_SLIM["bytes_per_pod"]],
            [f"  before sharing ({LEADER_BEFORE_SHARING['commit']})", LEADER_BEFORE_SHARING["bytes_per_pod"]],
            ["listed through the watchers: store filled", mib(lw["filled"])],
            ["  bytes per pod (store, watchers' bookkeeping, list pages' leftovers)", watched_per_pod],
            [
                f"  before slimming ({LEADER_BEFORE_SLIM['commit']})",
                LEADER_BEFORE_SLIM["watched_bytes_per_pod"],
            ],
        ],
    )
    inputs = {"leader_nodes": ld["counts"]["nodes"], "leader_pods": pods, "leader_pvcs": ld["counts"]["pvcs"]}
    figures = {
        "leader": {
            "imports_rss_kib": ld["before"],
            "filled_rss_kib": ld["filled"],
            "snapshot_rss_kib": ld["snapshot"],
            "peak_rss_kib": ld["peak"],
            "bytes_per_pod": round(per_pod),
            "fill_cpu_s": round(ld["fill_cpu_s"], 1),
        },
        "leader_watched": {
            "what": "listed in pages of 500 through healer.watch.resources._list, watchers' states kept",
            "imports_rss_kib": lw["before"],
            "filled_rss_kib": lw["filled"],
            "peak_rss_kib": lw["peak"],
            "bytes_per_pod": round(watched_per_pod),
            "fill_cpu_s": round(lw["fill_cpu_s"], 1),
        },
        "leader_before_slim": LEADER_BEFORE_SLIM,
        "leader_before_sharing": LEADER_BEFORE_SHARING,
        "leader_saved_fraction": round(1 - per_pod / LEADER_BEFORE_SHARING["bytes_per_pod"], 2),
    }
    return inputs, figures, {"leader_bytes_per_pod": LEADER_GOAL_BYTES_PER_POD, "leader_met": met}


def leader_only(nodes: int, pods_per_node: int) -> int:
    """`--only leader`: the leader figures replace those in the existing results file."""
    l_inputs, l_figures, l_targets = leader_part(nodes, pods_per_node)
    old = json.loads((common.RESULTS / "memory.json").read_text())
    path = common.write_results(
        "memory",
        inputs={**old["inputs"], **l_inputs},
        figures={**old["figures"], **l_figures},
        targets={**old.get("targets", {}), **l_targets},
    )
    print(f"results: {path.relative_to(REPO_ROOT)} (leader figures only)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--only", choices=("leader",), help="run only the leader parts")
    args = p.parse_args(argv)
    if args.only == "leader":
        return leader_only(args.nodes, args.pods_per_node)

    ag = asyncio.run(agent(args.settle))
    ag_kubeconfig = asyncio.run(agent(args.settle, in_cluster=False))
    met = mib(ag["settled_rss_kib"]) <= AGENT_GOAL_MIB
    common.table(
        f"node agent: healer run, {AGENT_PODS} pods (goal <= {AGENT_GOAL_MIB:.0f} MiB)",
        ["when", "RSS MiB", "peak MiB", "goal"],
        [
            ["in-cluster, ready", mib(ag["ready_rss_kib"]), "", ""],
            [
                f"in-cluster, after {args.settle:g}s",
                mib(ag["settled_rss_kib"]),
                mib(ag["peak_rss_kib"]),
                "met" if met else "NOT MET",
            ],
            [
                f"--kubeconfig, after {args.settle:g}s",
                mib(ag_kubeconfig["settled_rss_kib"]),
                mib(ag_kubeconfig["peak_rss_kib"]),
                "",
            ],
        ],
    )
    layers = import_layers()
    rows, prev = [], 0
    for label, kib, mods in layers:
        rows.append([label, mib(kib), mib(kib - prev) if prev else "", mods])
        prev = kib
    common.table(
        "import layers of healer run (fresh interpreter)", ["layer", "RSS MiB", "+MiB", "modules"], rows
    )

    l_inputs, l_figures, l_targets = leader_part(args.nodes, args.pods_per_node)
    path = common.write_results(
        "memory",
        inputs={
            "agent_pods": AGENT_PODS,
            "agent_config": "in-cluster (https, service-account folder); agent_kubeconfig: --kubeconfig",
            "settle_s": args.settle,
            **l_inputs,
            "dev_only_hidden": list(agent_process.DEV_ONLY),
            "units": "KiB from /proc/<pid>/status",
        },
        figures={
            "agent": ag,
            "agent_rss_mib": round(mib(ag["settled_rss_kib"]), 1),
            "agent_kubeconfig": ag_kubeconfig,
            "agent_kubeconfig_rss_mib": round(mib(ag_kubeconfig["settled_rss_kib"]), 1),
            "import_layers_kib": {label: {"rss": kib, "modules": mods} for label, kib, mods in layers},
            **l_figures,
        },
        targets={"agent_rss_mib": AGENT_GOAL_MIB, "met": met, **l_targets},
    )
    print(f"results: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
