"""Run every benchmark in `bench/`, one after another, and print one summary table.

Why: figures only guard against regressions if anyone can reproduce all of them with one
command, on any machine, within a coffee break. Each benchmark runs as its own process (its
import and memory state never leaks into the next) under a time limit, writes its own
`bench/results/<name>.json`, and this runner reads those files back for the summary (and
writes `bench/results/summary.json`).

The control-plane benchmarks (`upstream_baseline`, `incident`) need hack/cp.sh's binaries;
they run when those are built (or with --cp), and are skipped with a note otherwise. They get
their own control plane (`CP_ENV`: another directory and other ports), so a bench run never
restarts a control plane someone else's tests are using. `gpu_latency` runs against the fake
API (its default).

Run: bench/run [--quick] [--only NAME ...] [--cp | --no-cp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench import common  # noqa: E402


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # arguments for --quick
    timeout_s: float = 300.0
    needs_cp: bool = False
    results: str = field(default="")  # results file name if not <name>.json

    @property
    def script(self) -> Path:
        return REPO_ROOT / "bench" / f"{self.name}.py"


BENCHES: tuple[Bench, ...] = (
    Bench(
        "watch_decode",
        args=("--repeats", "7"),
        quick=("--events", "3000", "--upstream-events", "200", "--repeats", "3"),
        timeout_s=180,
    ),
    Bench(
        "engine_scale", args=("--events", "2000"), quick=("--nodes", "500", "--events", "1000"), timeout_s=420
    ),
    Bench("memory", args=("--settle", "2"), quick=("--nodes", "500"), timeout_s=360),
    Bench("startup", args=("--runs", "5"), quick=("--runs", "1"), timeout_s=240),
    Bench("gpu_latency", args=("--runs", "5"), quick=("--runs", "2"), timeout_s=180),
    # --window 10: watch 10 s (not 60) after styx's pods are marked; the figures are reached before
    Bench("upstream_baseline", args=("--window", "10"), timeout_s=900, needs_cp=True),
    Bench("incident", timeout_s=900, needs_cp=True),
)


CP_ENV = common.CP_ENV  # the benchmarks' own control plane, never the tests' one


def control_plane_built() -> bool:
    cache = Path(os.environ.get("CP_CACHE", Path.home() / ".cache" / "healer-cp"))
    return any(cache.glob("bin/*/.complete"))


def _get(doc: dict[str, Any], *path: str) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text}{unit}"


def _mib(kib: Any) -> Any:
    return kib / 1024 if isinstance(kib, int | float) else None


# name -> rows of (figure, value, target)
Summaries = Callable[[dict[str, Any]], list[tuple[str, str, str]]]


def _watch(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    f = d.get("figures", {})
    return [
        ("healer vs kubernetes-asyncio (same events)", _fmt(f.get("speedup_x"), "x faster"), ">= 20x"),
        ("healer events/s per core (decode + store)", _fmt(f.get("events_per_s_per_core")), ">= 20,000"),
    ]


def _engine(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    f, i = d.get("figures", {}), d.get("inputs", {})
    lat = f.get("latency", {})
    rows = [
        (
            f"plan, {_fmt(i.get('nodes'))} nodes / {_fmt(i.get('pods'))} pods",
            _fmt(_get(f, "plan_cluster_ms", "best"), " ms"),
            "",
        ),
        ("view snapshot (Store.view)", _fmt(_get(f, "view_ms", "best"), " ms"), ""),
    ]
    for label, stats in lat.items():
        rows.append((f"p99 decision latency, {label}", _fmt(stats.get("p99_ms"), " ms"), "< 50 ms"))
    return rows


def _memory(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    f = d.get("figures", {})
    leader = f.get("leader", {})
    rows = [
        ("node agent RSS (in-cluster, 110 pods)", _fmt(f.get("agent_rss_mib"), " MiB"), "<= 64 MiB"),
        (
            f"leader RSS, {_fmt(_get(d, 'inputs', 'leader_pods'))} pods held",
            _fmt(_mib(leader.get("filled_rss_kib")), " MiB"),
            "report, halve",
        ),
        ("leader bytes per pod held", _fmt(leader.get("bytes_per_pod"), " B"), ""),
    ]
    if "agent_kubeconfig_rss_mib" in f:  # results from before the in-cluster path lack it
        kubeconfig = _fmt(f["agent_kubeconfig_rss_mib"], " MiB")
        rows.insert(1, ("  with --kubeconfig (kubernetes-asyncio)", kubeconfig, ""))
    before = f.get("leader_before_sharing")
    if before:
        rows.append(("  before value sharing in decode", _fmt(before.get("bytes_per_pod"), " B"), ""))
    return rows


def _startup(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    f = d.get("figures", {})
    if "ready_kubeconfig_s" not in f:  # results from before the in-cluster path: --kubeconfig only
        imports = f.get("imports", {})
        last = list(imports.values())[-1] if imports else {}
        return [
            ("import everything healer run loads", _fmt(_get(last, "best_ms"), " ms"), ""),
            ("healer run to /readyz 200 (fake API)", _fmt(_get(f, "ready_s", "median"), " s"), ""),
        ]
    return [
        (
            "import all healer run loads (in-cluster)",
            _fmt(_get(f, "imports_best_ms", "in_cluster"), " ms"),
            "",
        ),
        (
            "  with --kubeconfig (kubernetes-asyncio)",
            _fmt(_get(f, "imports_best_ms", "kubeconfig"), " ms"),
            "",
        ),
        ("healer run to /readyz 200 (in-cluster, fake API)", _fmt(_get(f, "ready_s", "median"), " s"), ""),
        ("  with --kubeconfig", _fmt(_get(f, "ready_kubeconfig_s", "median"), " s"), ""),
    ]


def _gpu(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """gpu_latency keeps one result per target ("fake", "cp"); older files held one."""
    by_target = {k: v for k, v in d.items() if k in ("fake", "cp") and isinstance(v, dict)} or {"": d}
    return [
        (
            f"XID 79 -> taint seen, p95 ({target or d.get('target', '?')} API)",
            _fmt(_get(r, "summary", "seen", "p95"), " s"),
            "<= 2 s",
        )
        for target, r in by_target.items()
    ]


def _upstream(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    f = d.get("figures_s", {})
    return [
        ("upstream: Deployments Running elsewhere", _fmt(f.get("deployments_replaced_s"), " s"), ""),
        ("upstream: StatefulSet replacement Running", _fmt(f.get("statefulset_replaced_s") or "never"), ""),
    ]


def _incident(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    f = d.get("figures", {})
    return [
        ("healer: releasable pods Running elsewhere", _fmt(_get(f, "healer", "all_running_s"), " s"), ""),
        ("upstream alone (upstream_baseline.json)", _fmt(_get(f, "upstream", "all_running_s"), " s"), ""),
        ("API requests per remediation", _fmt(f.get("requests_per_remediation")), ""),
    ]


SUMMARIES: dict[str, Summaries] = {
    "watch_decode": _watch,
    "engine_scale": _engine,
    "memory": _memory,
    "startup": _startup,
    "gpu_latency": _gpu,
    "upstream_baseline": _upstream,
    "incident": _incident,
}


def run_one(bench: Bench, *, quick: bool) -> dict[str, Any]:
    if not bench.script.exists():
        return {"status": "absent"}
    argv = [sys.executable, str(bench.script), *(bench.quick if quick else bench.args)]
    print(f"\n=== {bench.name}: {' '.join(argv[1:])}", flush=True)
    t0 = time.perf_counter()
    try:
        env = {**os.environ, **(CP_ENV if bench.needs_cp else {})}
        done = subprocess.run(argv, cwd=REPO_ROOT, env=env, timeout=bench.timeout_s, check=False)
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {bench.timeout_s:.0f}s"
    return {"status": status, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run, not for the README)")
    p.add_argument("--only", nargs="*", default=None, help="run only these benchmarks")
    cp = p.add_mutually_exclusive_group()
    cp.add_argument("--cp", dest="cp", action="store_true", default=None, help="run control-plane benchmarks")
    cp.add_argument("--no-cp", dest="cp", action="store_false", help="skip control-plane benchmarks")
    args = p.parse_args(argv)
    with_cp = control_plane_built() if args.cp is None else args.cp

    started = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    for bench in BENCHES:
        if args.only is not None and bench.name not in args.only:
            continue
        if bench.needs_cp and not with_cp:
            runs[bench.name] = {"status": "skipped: control plane not built (hack/cp.sh build)"}
            continue
        runs[bench.name] = run_one(bench, quick=args.quick)
    total = time.perf_counter() - started

    rows: list[list[str]] = []
    for name, run in runs.items():
        results = common.RESULTS / f"{name}.json"
        figures: list[tuple[str, str, str]] = []
        if run["status"] == "ok" and results.exists():
            try:
                figures = SUMMARIES[name](json.loads(results.read_text()))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                figures = [("(could not summarise)", f"{type(e).__name__}: {e}", "")]
        if not figures:
            figures = [(run["status"], "", "")]
        for i, (figure, value, target) in enumerate(figures):
            rows.append([name if i == 0 else "", figure, value, target])
    print()
    common.table(
        f"healer benchmarks ({total / 60:.1f} min{', quick' if args.quick else ''})",
        ["bench", "figure", "value", "target"],
        rows,
    )
    (common.RESULTS / "summary.json").write_text(
        json.dumps(
            {
                "machine": common.machine(),
                "quick": args.quick,
                "minutes": round(total / 60, 1),
                "runs": runs,
                "table": rows,
            },
            indent=2,
        )
        + "\n"
    )
    failed = [
        n
        for n, r in runs.items()
        if r["status"] not in ("ok", "absent") and not r["status"].startswith("skipped")
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
