"""Import time of what `healer run` loads, and start-up time of `healer run` until /readyz is 200.

Why: a DaemonSet pod that takes long to become ready slows every rollout of healer across the
fleet, and the node agent restarts on every node upgrade; import time is also where most of a
Python daemon's start-up goes.

Figures (wall time, best and median of --runs, each in a fresh interpreter):
  imports   a fresh `python -c pass` (spawn and interpreter start), then cumulatively what
            `healer run` imports: the CLI, the daemon
            (runtime, engine, rules, notify), the lazily imported effects/leader/kube/GPU modules,
            and kubernetes-asyncio's client and config (imported by `kube.client.connect`).
            Plus the ten packages slowest to import (`-X importtime` self times summed).
  ready     `healer run --node N` (shipped rules, leader election on, as in production) spawned
            against `tests/api/fakeapi.FakeApi` serving the node and 110 realistic pods: spawn to
            the first /readyz 200 (both watches listed, the Lease won and the cluster view listed).

Run: .venv/bin/python bench/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
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
# cumulative: each step imports everything before it too
STEPS: tuple[tuple[str, str], ...] = (
    ("python -c pass", "pass"),
    ("+ healer.cli", "import healer.cli"),
    ("+ healer.runtime.daemon", "import healer.cli, healer.runtime.daemon"),
    (
        "+ effects, leader, kube, gpu",
        "import healer.cli, healer.runtime.daemon, healer.effects.live, healer.effects.dryrun, "
        "healer.runtime.leader, healer.kube.client, healer.gpu.agent",
    ),
    (
        "+ kubernetes_asyncio (connect)",
        "import healer.cli, healer.runtime.daemon, healer.effects.live, healer.effects.dryrun, "
        "healer.runtime.leader, healer.kube.client, healer.gpu.agent; "
        "from kubernetes_asyncio import client, config; from kubernetes_asyncio.client import rest",
    ),
)


def _python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", f"{HIDE}; {code}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )


def time_import(code: str, runs: int) -> list[float]:
    """Seconds for a whole fresh interpreter running `code`: spawn and interpreter start included."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        _python(code)
        out.append(time.perf_counter() - t0)
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


async def ready_times(runs: int) -> list[float]:
    out = []
    async with agent_process.fake_cluster(pods=PODS) as kubeconfig:
        for _ in range(runs):
            async with agent_process.healer_run(kubeconfig=kubeconfig) as agent:
                out.append(agent.ready_s)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)

    imports: dict[str, dict[str, float]] = {}
    rows = []
    for label, code in STEPS:
        times = time_import(code, args.runs)
        imports[label] = {
            "best_ms": round(min(times) * 1000, 1),
            "median_ms": round(statistics.median(times) * 1000, 1),
        }
        rows.append([label, min(times) * 1000, statistics.median(times) * 1000])
    common.table(
        "imports (cumulative; a fresh interpreter each, spawn included; wall)",
        ["step", "best ms", "median ms"],
        rows,
    )
    slow = slowest_packages(STEPS[-1][1])
    common.table(
        "slowest packages to import (-X importtime, self time summed per package)", ["package", "ms"], slow
    )

    ready = asyncio.run(ready_times(args.runs))
    common.table(
        f"healer run --node to /readyz 200 ({PODS} pods, fake API)",
        ["runs", "best s", "median s", "worst s"],
        [[len(ready), min(ready), statistics.median(ready), max(ready)]],
    )
    path = common.write_results(
        "startup",
        inputs={
            "runs": args.runs,
            "pods_on_node": PODS,
            "api": "tests/api/fakeapi.FakeApi on loopback",
            "dev_only_hidden": list(agent_process.DEV_ONLY),
            "timing": "wall time; fresh interpreter per run",
        },
        figures={
            "imports": imports,
            "slowest_packages_ms": {k: round(v, 1) for k, v in slow},
            "ready_s": {
                "best": round(min(ready), 3),
                "median": round(statistics.median(ready), 3),
                "worst": round(max(ready), 3),
            },
        },
    )
    print(f"results: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
