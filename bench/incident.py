"""The styx incident on the real control plane: kubelet stops -> releasable pods Running elsewhere,
with healer, and the API requests healer made for it.

Why: this is the number healer exists for. Upstream Kubernetes alone needs the 50 s node grace
plus the 300 s NoExecute toleration before it even marks the pods for deletion (and never
replaces the StatefulSet pod); `bench/upstream_baseline.py` measures that on the same Oceanid
cluster recipe, same control plane build, same machine, and `bench/run` runs it just before this
one, so the two figures come from one bench run. And healer must stay cheap for the API server:
every request its processes make goes through a counting proxy.

Set-up: hack/cp.sh's control plane with upstream's DEFAULT node timings (its own directory and
ports, see `CP_ENV`), the Oceanid cluster (`tests/support/oceanid.py`), two `healer run`
processes playing the DaemonSet pods on tethys and calypso (shipped rules, leader election),
talking to the API server through `CountingProxy` (plain HTTP on loopback -> the API server
with the admin token). Time zero: styx's kubelet is frozen (SIGSTOP).

Figures (seconds since t0, polled every 0.5 s): styx Ready=Unknown, styx cordoned by healer,
the movable Deployments' pods all Running on other nodes (the old pods gone). Requests: every
request both healers made between t0 and that moment, by verb and resource, and the ones that
are not the Lease (leader election runs regardless of incidents): per remediation = this
incident's requests (one node remediated).

Run: .venv/bin/python bench/incident.py  (about 3-4 minutes; builds the binaries if needed)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import ssl
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402
from kubernetes_asyncio import config  # noqa: E402

from bench import common  # noqa: E402
from tests.e2e.healer_procs import Healer, Healers, ensure_namespace, lease_holder  # noqa: E402
from tests.support.controlplane import UPSTREAM_TIMINGS, ControlPlane  # noqa: E402
from tests.support.kube import is_running, list_pods, node_condition, read_node  # noqa: E402
from tests.support.oceanid import CALYPSO, TETHYS, build_oceanid  # noqa: E402

log = logging.getLogger("incident")
POLL_S = 0.5
CP_ENV = common.CP_ENV  # the benchmarks' own control plane, never the tests' one


class CountingProxy:
    """Loopback HTTP -> the API server (TLS, admin token); counts every request it forwards."""

    def __init__(self, kubeconfig: Path) -> None:
        doc = yaml.safe_load(kubeconfig.read_text())
        cluster = doc["clusters"][0]["cluster"]
        self.upstream = cluster["server"].rstrip("/")
        self.token = doc["users"][0]["user"]["token"]
        self.ssl = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        self.requests: list[tuple[float, str, str, bool]] = []  # (monotonic, verb, resource, watch)
        self.port = 0

    @staticmethod
    def resource(path: str) -> str:
        parts = [p for p in path.split("/") if p]
        # /api/v1/[namespaces/NS/]RES[/NAME[/SUB]] or /apis/G/V/[namespaces/NS/]RES[/NAME[/SUB]]
        rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
            rest = rest[2:]
        if not rest:
            return "/".join(parts)
        return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") in ("true", "1")
        self.requests.append((time.monotonic(), request.method, self.resource(request.path), watch))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "authorization")}
        headers["Authorization"] = f"Bearer {self.token}"
        body = await request.read()
        async with self.session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            ssl=self.ssl,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key in ("Content-Type", "Retry-After"):
                if key in upstream.headers:
                    response.headers[key] = upstream.headers[key]
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientPayloadError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            return response

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.session.close()

    def kubeconfig(self, folder: Path) -> Path:
        path = folder / "kubeconfig-proxy"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "p", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "u", "user": {}}],
                    "contexts": [{"name": "p", "context": {"cluster": "p", "user": "u"}}],
                    "current-context": "p",
                }
            )
        )
        return path

    def between(self, t0: float, t1: float) -> Counter[str]:
        return Counter(
            f"{verb} {res}{' (watch)' if watch else ''}"
            for at, verb, res, watch in self.requests
            if t0 <= at <= t1
        )


async def incident(*, deadline_s: float) -> dict[str, Any]:
    cp_dir = Path(os.environ.get("CP_DIR", CP_ENV["CP_DIR"]))
    ports = {k: os.environ.get(k, v) for k, v in CP_ENV.items() if k != "CP_DIR"}
    cp = ControlPlane(timings=UPSTREAM_TIMINGS, cp_dir=cp_dir, extra_env=ports)
    cp.build()
    cp.up()
    folder = Path(tempfile.mkdtemp(prefix="healer-incident-"))
    try:
        api = await config.new_client_from_config(config_file=str(cp.kubeconfig))
        proxy = CountingProxy(cp.kubeconfig)
        await proxy.start()
        try:
            cluster = await build_oceanid(api, agents=cp)
            styx = cluster.failed_node
            await ensure_namespace(api)
            kubeconfig = proxy.kubeconfig(folder)
            old: dict[str, set[str]] = {}
            for w in cluster.movable_deployments:
                old[w.name] = {
                    p.metadata.uid for p in await list_pods(api, namespace=w.namespace, labels=w.labels)
                }
            with Healers(
                Healer(node=TETHYS, kubeconfig=kubeconfig, log_dir=folder),
                Healer(node=CALYPSO, kubeconfig=kubeconfig, log_dir=folder),
            ):
                t_start = time.monotonic()
                while await lease_holder(api) is None:
                    if time.monotonic() - t_start > 90:
                        raise TimeoutError("no healer took the Lease within 90 s")
                    await asyncio.sleep(POLL_S)
                await asyncio.sleep(5)  # both healers listed and settled: the steady state
                steady_t0 = time.monotonic()
                await asyncio.sleep(10)
                steady = proxy.between(steady_t0, time.monotonic())

                log.info("stopping the kubelet of %s", styx)
                t0 = time.monotonic()
                cp.stop_kubelet(node=styx)
                marks: dict[str, float | None] = {
                    "node_unknown_s": None,
                    "cordoned_s": None,
                    "all_running_s": None,
                }
                while time.monotonic() - t0 < deadline_s:
                    now = time.monotonic() - t0
                    node = await read_node(api, name=styx)
                    if marks["node_unknown_s"] is None and node_condition(node) == "Unknown":
                        marks["node_unknown_s"] = now
                    if marks["cordoned_s"] is None and node.spec.unschedulable:
                        marks["cordoned_s"] = now
                    done = True
                    for w in cluster.movable_deployments:
                        pods = await list_pods(api, namespace=w.namespace, labels=w.labels)
                        uids = {p.metadata.uid for p in pods}
                        moved = [p for p in pods if is_running(p) and p.spec.node_name not in (styx, None)]
                        if uids & old[w.name] or len(moved) < w.replicas:
                            done = False
                    if done:
                        marks["all_running_s"] = now
                        break
                    await asyncio.sleep(POLL_S)
                t1 = time.monotonic()
                during = proxy.between(t0, t1)
        finally:
            await proxy.stop()
            await api.close()
    finally:
        cp.down()
    window = t1 - t0
    lease = sum(n for k, n in during.items() if "leases" in k)
    steady_s = 10.0
    steady_non_lease = sum(n for k, n in steady.items() if "leases" not in k)
    return {
        "marks": marks,
        "window_s": round(window, 1),
        "requests": dict(sorted(during.items())),
        "requests_total": sum(during.values()),
        "requests_lease": lease,
        "requests_for_the_incident": sum(during.values()) - lease,
        "steady_requests_per_s_non_lease": round(steady_non_lease / steady_s, 2),
        "steady_requests": dict(sorted(steady.items())),
        "workloads": [f"{w.kind}/{w.namespace}/{w.name}" for w in cluster.movable_deployments],
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deadline", type=float, default=240.0, help="give up after this many seconds")
    args = p.parse_args(argv)
    result = asyncio.run(incident(deadline_s=args.deadline))
    marks = result["marks"]
    upstream_path = common.RESULTS / "upstream_baseline.json"
    upstream: dict[str, Any] = {}
    if upstream_path.exists():
        doc = json.loads(upstream_path.read_text())
        upstream = {
            "all_running_s": (doc.get("figures_s") or {}).get("deployments_replaced_s"),
            "statefulset_replaced_s": (doc.get("figures_s") or {}).get("statefulset_replaced_s"),
            "source": "bench/results/upstream_baseline.json",
            "when": doc.get("when") or doc.get("machine", {}).get("when"),
        }
    common.table(
        "styx kubelet stopped (t=0), upstream default node timings",
        ["figure", "healer", "upstream alone"],
        [
            ["styx Ready=Unknown", marks["node_unknown_s"], ""],
            ["styx cordoned", marks["cordoned_s"], ""],
            [
                "movable Deployments Running elsewhere",
                marks["all_running_s"],
                upstream.get("all_running_s", "-"),
            ],
        ],
    )
    common.table(
        f"API requests by both healers, t=0 to done ({result['window_s']} s)",
        ["request", "count"],
        [
            *result["requests"].items(),
            ["total", result["requests_total"]],
            ["  of which the Lease", result["requests_lease"]],
        ],
    )
    path = common.write_results(
        "incident",
        inputs={
            "timings": {"node_grace_s": 50, "toleration_s": 300, "lease_s": 40},
            "cluster": "Oceanid (tests/support/oceanid.py) on hack/cp.sh, kubelet death = SIGSTOP",
            "healers": ["tethys", "calypso"],
            "poll_s": POLL_S,
            "workloads": result["workloads"],
        },
        figures={
            "healer": marks,
            "upstream": upstream,
            "requests": result["requests"],
            "requests_total": result["requests_total"],
            "requests_lease": result["requests_lease"],
            "requests_per_remediation": result["requests_for_the_incident"],
            "steady_requests_per_s_non_lease": result["steady_requests_per_s_non_lease"],
            "steady_requests_10s": result["steady_requests"],
        },
    )
    print(f"results: {path.relative_to(REPO_ROOT)}")
    return 0 if marks["all_running_s"] is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
