"""Import time of what `healer run` loads, and start-up time of `healer run` until /readyz is 200.

Why: a DaemonSet pod that takes long to become ready slows every rollout of healer across the
fleet, and the node agent restarts on every node upgrade; import time is also where most of a
Python daemon's start-up goes.

Every pod connects in-cluster (KUBERNETES_SERVICE_HOST/PORT, the service-account folder, https;
`healer.kube.incluster`), which never imports kubernetes-asyncio: that is the headline. The
`--kubeconfig` path (kubernetes-asyncio's loader and transport) is measured beside it in the
same run, the two interleaved run by run so that machine noise falls on both alike.

Figures (wall time, best and median of --runs, each in a fresh interpreter):
  imports   a fresh `python -c pass` (spawn and interpreter start), then cumulatively what
            `healer run` imports: the CLI, the daemon (runtime, engine, rules, notify), the
            lazily imported effects/leader/kube/GPU modules (all a pod loads, in-cluster), and
            kubernetes-asyncio's client and config (loaded only with --kubeconfig). Plus the ten
            packages slowest to import for each path (`-X importtime` self times summed).
  ready     `healer run --node N` (shipped rules, leader election on, as in production; see
            `bench/agent_process.py`) spawned against `tests/api/fakeapi.FakeApi` serving the
            node and 110 realistic pods: spawn to the first /readyz 200 (both watches listed,
            the Lease won and the cluster view listed). In-cluster: https with a scratch CA and
            a pod's variables and service-account folder (`ready_s`); --kubeconfig: plain http
            (`ready_kubeconfig_s`).

healer's own modules are byte-compiled first (`compileall`), as pip does when it installs the
wheel into the image: a development tree under PYTHONDONTWRITEBYTECODE=1 would otherwise
compile changed modules from source on every start and overstate both paths.

Run: .venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench import agent_process, common  # noqa: E402

PODS = 110
HIDE = f"import sys; sys.modules.update(dict.fromkeys({agent_process.DEV_ONLY!r}))"
# What `healer run` imports in a pod: in-cluster configuration, no notification URLs.
RUN_IMPORTS = (
    "import healer.cli, healer.runtime.daemon, healer.effects.live, healer.effects.dryrun, "
    "healer.runtime.leader, healer.kube.client, healer.gpu.agent"
)
# What `kube.client.connect` adds with --kubeconfig.
KUBECONFIG_IMPORTS = (
    f"{RUN_IMPORTS}; from kubernetes_asyncio import client, config; "
    "from kubernetes_asyncio.client import rest"
)
IN_CLUSTER_STEP = "+ effects, leader, kube, gpu (in-cluster: all a pod loads)"
KUBECONFIG_STEP = "+ kubernetes_asyncio client/config (only with --kubeconfig)"
# cumulative: each step imports everything before it too
STEPS: tuple[tuple[str, str], ...] = (
    ("python -c pass", "pass"),
    ("+ healer.cli", "import healer.cli"),
    ("+ healer.runtime.daemon", "import healer.cli, healer.runtime.daemon"),
    (IN_CLUSTER_STEP, RUN_IMPORTS),
    (KUBECONFIG_STEP, KUBECONFIG_IMPORTS),
)
PATHS = ("in-cluster", "--kubeconfig")


def _python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", f"{HIDE}; {code}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )


def time_imports(runs: int) -> dict[str, list[float]]:
    """Seconds for a whole fresh interpreter running each step (spawn and interpreter start
    included); the steps take turns within each round, so noise spreads over all of them."""
    out: dict[str, list[float]] = {label: [] for label, _ in STEPS}
    for _ in range(runs):
        for label, code in STEPS:
            t0 = time.perf_counter()
            _python(code)
            out[label].append(time.perf_counter() - t0)
    return out


def slowest_packages(code: str, n: int = 10) -> list[tuple[str, float]]:
    """Top-level packages by the summed self time (ms) of their modules, from `-X importtime`."""
    err = _python(code, "-X", "importtime").stderr
    totals: dict[str, float] = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            own = int(parts[0].split(":")[1].strip())
        except ValueError:
            continue
        top = parts[2].strip().split(".")[0]
        totals[top] = totals.get(top, 0.0) + own / 1000
    return sorted(totals.items(), key=lambda kv: -kv[1])[:n]


async def ready_times(runs: int) -> dict[str, list[float]]:
    """Spawn to /readyz 200, in-cluster and with --kubeconfig taking turns, each against its
    own fake API (both serving the same node and pods)."""
    out: dict[str, list[float]] = {path: [] for path in PATHS}
    async with contextlib.AsyncExitStack() as stack:
        env = await stack.enter_async_context(agent_process.fake_cluster_in_cluster(pods=PODS))
        kubeconfig = await stack.enter_async_context(agent_process.fake_cluster(pods=PODS))
        for _ in range(runs):
            async with agent_process.healer_run(env=env) as agent:
                out["in-cluster"].append(agent.ready_s)
            async with agent_process.healer_run(kubeconfig=kubeconfig) as agent:
                out["--kubeconfig"].append(agent.ready_s)
    return out


def _stats_s(values: list[float]) -> dict[str, float]:
    return {
        "best": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "worst": round(max(values), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)

    compileall.compile_dir(REPO_ROOT / "healer", quiet=1)  # the image ships bytecode (pip compiles)
    timed = time_imports(args.runs)
    imports = {
        label: {
            "best_ms": round(min(times) * 1000, 1),
            "median_ms": round(statistics.median(times) * 1000, 1),
        }
        for label, times in timed.items()
    }
    common.table(
        "imports (cumulative; a fresh interpreter each, spawn included; wall)",
        ["step", "best ms", "median ms"],
        [[label, v["best_ms"], v["median_ms"]] for label, v in imports.items()],
    )
    slow = {"in-cluster": slowest_packages(RUN_IMPORTS), "--kubeconfig": slowest_packages(KUBECONFIG_IMPORTS)}
    for way, rows in slow.items():
        common.table(
            f"slowest packages to import, {way} (-X importtime, self time summed per package)",
            ["package", "ms"],
            rows,
        )

    ready = asyncio.run(ready_times(args.runs))
    common.table(
        f"healer run --node to /readyz 200 ({PODS} pods, fake API; the two paths interleaved)",
        ["path", "runs", "best s", "median s", "worst s"],
        [[way, len(v), min(v), statistics.median(v), max(v)] for way, v in ready.items()],
    )
    in_cluster, kubeconfig = ready["in-cluster"], ready["--kubeconfig"]
    saved_s = statistics.median(kubeconfig) - statistics.median(in_cluster)
    print(f"in-cluster is ready {saved_s:.2f} s sooner (median) than --kubeconfig")
    path = common.write_results(
        "startup",
        inputs={
            "runs": args.runs,
            "pods_on_node": PODS,
            "api": "tests/api/fakeapi.FakeApi on loopback",
            "ready_s": "in-cluster, as every DaemonSet pod: https (scratch CA), KUBERNETES_SERVICE_HOST/"
            "PORT, HEALER_SERVICE_ACCOUNT_DIR; ready_kubeconfig_s: --kubeconfig over http; interleaved",
            "dev_only_hidden": list(agent_process.DEV_ONLY),
            "timing": "wall time; fresh interpreter per run",
        },
        figures={
            "imports": imports,
            "imports_best_ms": {
                "in_cluster": imports[IN_CLUSTER_STEP]["best_ms"],
                "kubeconfig": imports[KUBECONFIG_STEP]["best_ms"],
            },
            "slowest_packages_ms": {k: round(v, 1) for k, v in slow["in-cluster"]},
            "slowest_packages_kubeconfig_ms": {k: round(v, 1) for k, v in slow["--kubeconfig"]},
            "ready_s": _stats_s(in_cluster),
            "ready_kubeconfig_s": _stats_s(kubeconfig),
            "ready_saved_by_in_cluster_s": round(saved_s, 3),
        },
    )
    print(f"results: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
