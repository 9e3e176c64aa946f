"""`healer run`: every part wired together in one asyncio TaskGroup.

    watch(own node, own pods, other GPU nodes) ──> node Reconciler ─┐
    leader only: watch(all nodes, pods, PVs, PVCs, PDBs)           ├─> executor ─> API
                              ──> cluster Reconciler (scope=cluster)┘      └─> notifier
    RulesHolder (hot reload) · HealthServer (/healthz /readyz /metrics) · Lease election

Why it is shaped like this:
- Every pod runs the node role for its own node (field-selected watches: the API cost does
  not grow with the cluster; with the GPU watcher on, also the other GPU-labelled Nodes, so
  the engine knows whether GPU pods could run elsewhere); only the elected leader watches
  everything and runs the cluster role, because a dead node cannot heal itself and N racing
  peers would act N times.
- The cluster role lives in its own task: losing the Lease cancels it at once, mid-action if
  need be (every action is idempotent, so the next leader simply finds it done or not).
- SIGTERM drains: the reconcilers finish the action in flight and stop, the Lease is
  released so a peer takes over without waiting for it to expire, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from healer.engine import planning, state
from healer.kube import api as kube_api
from healer.model.events import Disconnected, Event, Listed
from healer.model.ports import Executor
from healer.model.view import ClusterView
from healer.notify import notifier as notify
from healer.rules import loading
from healer.runtime import leader
from healer.runtime.metrics import Metrics
from healer.runtime.reconciler import Notifier, Overlay, Reconciler
from healer.runtime.reload import RulesHolder
from healer.runtime.server import HealthServer
from healer.runtime.settings import Settings
from healer.runtime.store import Store
from healer.watch import resources

if TYPE_CHECKING:
    from healer.kube import client

log = structlog.get_logger(__name__)

NODE_RESOURCES = ("nodes", "pods")
GPU_NODES = "gpu-nodes"  # the other GPU nodes' watch, listed on its own (see `_watch_gpu_nodes`)
GPU_PRESENT_SELECTOR = "nvidia.com/gpu.present=true"  # labelSelector (GPU feature discovery)
CLUSTER_RESOURCES = ("nodes", "pods", "persistentvolumes", "persistentvolumeclaims", "poddisruptionbudgets")
DRAIN_TIMEOUT_S = 20.0
RESTART_DELAY_S = 1.0
LEASE_QPS = 5.0  # the elector's own token bucket (a renewal every 2 s needs far less)
LEASE_BURST = 5

Lead = Callable[[], Awaitable[None]]
GpuAgent = Callable[[str], Coroutine[Any, Any, None]]


class DryRunWrites(Overlay, Protocol):
    """`healer.effects.dryrun.NodeWrites` as the daemon uses it."""

    def subscribe(self, callback: Callable[[str], None]) -> None: ...


class Elector(Protocol):
    """Campaigns for the Lease; while it holds it, runs `lead()` (cancelled at once on loss).

    `run` returns only when cancelled; on the way out it releases a Lease it holds.
    """

    async def run(self, lead: Lead) -> None: ...


class Daemon:
    def __init__(
        self,
        *,
        settings: Settings,
        api: kube_api.KubeApi,
        executor: Executor,
        notifier: Notifier,
        rules: RulesHolder[Any],
        metrics: Metrics,
        elector: Elector | None,
        gpu_agent: GpuAgent | None = None,
        overlay: DryRunWrites | None = None,
    ) -> None:
        """`gpu_agent(node)` runs the node's GPU watcher when `settings.gpu` (default: NVML).

        `overlay` (dry-run only: `healer.effects.dryrun.NodeWrites`, the one its executor records
        into) is laid over every view the roles and the GPU agent read; a change re-plans, as
        the watch event of a real write would.
        """
        self.settings = settings
        self._api = api
        self._executor = executor
        self._notifier = notifier
        self.rules = rules
        self.metrics = metrics
        self._elector = elector
        self._run_gpu_agent: GpuAgent = gpu_agent or self._gpu_agent
        self.overlay = overlay
        if overlay is not None:
            overlay.subscribe(lambda _node: self.poke())
        self.node_reconciler: Reconciler | None = None
        self.cluster_reconciler: Reconciler | None = None
        self.leading = False
        self._stopping = asyncio.Event()
        self._not_leading = asyncio.Event()
        self._not_leading.set()
        self.server = HealthServer(
            metrics=metrics, ready=self.ready, host=settings.http_host, port=settings.http_port
        )

    # --- sources ----------------------------------------------------------------------------

    def _on_restart(self, resource: str, reason: str) -> None:
        self.metrics.watch_restarts.labels(resource=resource, reason=reason).inc()

    def _watch_own_node(self) -> list[AsyncIterator[Event]]:
        node = self.settings.node
        assert node is not None
        return [
            resources.watch(
                self._api,
                kind="nodes",
                field_selector=resources.node_selector(node),
                on_restart=self._on_restart,
            ),
            resources.watch(
                self._api,
                kind="pods",
                field_selector=resources.pods_on_node_selector(node),
                on_restart=self._on_restart,
            ),
        ]

    def _watch_gpu_nodes(self) -> AsyncIterator[Event]:
        """The other GPU nodes (Nodes only, label-selected): whether GPU pods could run elsewhere.

        The engine keeps GPU pods on the last GPU node; a node role that saw only its own Node
        would think every GPU node the last. Our own Node is left out (its own watch has it), so
        the two watches never disagree about one object; the stream's Listed/Disconnected are
        renamed so the store waits for both lists and marks either outage.
        """
        node = self.settings.node
        assert node is not None
        return _renamed(
            resources.watch(
                self._api,
                kind="nodes",
                field_selector=f"metadata.name!={node}",
                label_selector=GPU_PRESENT_SELECTOR,
                on_restart=self._on_restart,
            ),
            resource=GPU_NODES,
        )

    def _watch_cluster(self) -> list[AsyncIterator[Event]]:
        return [
            resources.watch(self._api, kind=kind, on_restart=self._on_restart) for kind in CLUSTER_RESOURCES
        ]

    # --- roles ------------------------------------------------------------------------------

    def _reconciler(self, *, scope: str, node: str | None, resources_: tuple[str, ...]) -> Reconciler:
        return Reconciler(
            scope=scope,
            node=node,
            store=Store(resources=resources_),
            rules=lambda: self.rules.current,
            planner=planning.plan,
            state=state.EngineState(),
            executor=self._executor,
            notifier=self._notifier,
            metrics=self.metrics,
            tick_s=self.settings.tick_s,
            debounce_s=self.settings.debounce_s,
            overlay=self.overlay,
        )

    async def _lead(self) -> None:
        """The cluster role, for as long as we hold the Lease (cancelled when we lose it).

        A crash of the role is logged and the role restarted: a leader that holds the Lease
        but does nothing would be worse than no leader at all.
        """
        self._not_leading.clear()
        self.leading = True
        self.metrics.leader.set(1)
        log.info("leading: cluster-wide remediation on", identity=self.settings.identity)
        try:
            while not self._stopping.is_set():
                rec = self._reconciler(scope="cluster", node=None, resources_=CLUSTER_RESOURCES)
                self.cluster_reconciler = rec
                try:
                    await rec.run(self._watch_cluster())
                except Exception:
                    log.exception("cluster role failed; restarting it", identity=self.settings.identity)
                    await asyncio.sleep(RESTART_DELAY_S)
        finally:
            self.leading = False
            self.metrics.leader.set(0)
            self.metrics.synced.labels(scope="cluster").set(0)
            self.cluster_reconciler = None
            self._not_leading.set()
            log.info("not leading: cluster-wide remediation off", identity=self.settings.identity)

    async def _gpu_agent(self, node: str) -> None:
        """The node's GPU watcher (returns at once on a node without GPUs); never takes us down."""
        from healer.gpu import agent

        def view() -> ClusterView:
            rec = self.node_reconciler
            return rec.view() if rec is not None else ClusterView(synced=False)

        try:
            await agent.run_gpu_agent(
                node_name=node,
                policy=lambda: self.rules.current.gpu,
                executor=self._executor,
                view=view,
            )
        except Exception:
            log.exception("gpu agent failed; healer runs on without it", node=node)

    def ready(self) -> bool:
        """Ready when the node view is synced (and, while leading, the cluster view too)."""
        for rec in (self.node_reconciler, self.cluster_reconciler):
            if rec is not None and not rec.store.synced:
                return False
        return self.node_reconciler is not None or self.cluster_reconciler is not None

    def poke(self) -> None:
        for rec in (self.node_reconciler, self.cluster_reconciler):
            if rec is not None:
                rec.poke()

    def stop(self) -> None:
        """Begin the drain (SIGTERM)."""
        if not self._stopping.is_set():
            log.info("stopping: finishing the action in flight")
        self._stopping.set()

    # --- the process ------------------------------------------------------------------------

    async def run(self) -> int:
        await self.server.start()
        log.info(
            "healer started",
            node=self.settings.node,
            identity=self.settings.identity,
            dry_run=self.settings.dry_run,
            rules=str(self.rules.directory),
            http_port=self.server.port,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                roles: list[asyncio.Task[None]] = []
                if self.settings.node:
                    gpu = self.settings.gpu
                    sources = self._watch_own_node() + ([self._watch_gpu_nodes()] if gpu else [])
                    self.node_reconciler = self._reconciler(
                        scope="node",
                        node=self.settings.node,
                        resources_=NODE_RESOURCES + ((GPU_NODES,) if gpu else ()),
                    )
                    roles.append(tg.create_task(self.node_reconciler.run(sources)))
                # not drained with the roles: it watches until cancelled (its condition writes
                # are idempotent), so waiting for it would hold every stop for DRAIN_TIMEOUT_S
                gpu_task = (
                    tg.create_task(self._run_gpu_agent(self.settings.node))
                    if self.settings.node and self.settings.gpu
                    else None
                )
                election = tg.create_task(self._elector.run(self._lead)) if self._elector else None
                reload = tg.create_task(self.rules.watch(changed=self.poke))
                await self._stopping.wait()
                # drain: the reconcilers finish the action in flight and return
                for rec in (self.node_reconciler, self.cluster_reconciler):
                    if rec is not None:
                        rec.stop()
                waiting = [t for t in roles if not t.done()]
                if waiting:
                    await asyncio.wait(waiting, timeout=DRAIN_TIMEOUT_S)
                if election is not None:
                    await self._drain_election(election)
                reload.cancel()
                for task in roles:
                    task.cancel()
                if gpu_task is not None:
                    gpu_task.cancel()
        finally:
            with contextlib.suppress(Exception):
                await self.server.stop()
        log.info("healer stopped")
        return 0

    async def _drain_election(self, election: asyncio.Task[None]) -> None:
        """Let a leading cluster role finish its action, then cancel the elector (it releases)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self._not_leading.wait()
        await leader.cancel_and_wait(election)


async def _renamed(events: AsyncIterator[Event], *, resource: str) -> AsyncIterator[Event]:
    """`events` with Listed/Disconnected reporting `resource` (objects pass unchanged)."""
    async for event in events:
        match event:
            case Listed():
                yield Listed(resource=resource)
            case Disconnected(error=error):
                yield Disconnected(resource=resource, error=error)
            case _:
                yield event


def install_signal_handlers(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)


def load_rules_holder(settings: Settings, metrics: Metrics) -> RulesHolder[Any]:
    """The first load must succeed (raises `RuleError`); later reloads keep the last good rules."""

    def on_reload(ok: bool, _error: str) -> None:
        metrics.rule_reloads.labels(result="ok" if ok else "error").inc()

    return RulesHolder(directory=settings.rules_dir, load=loading.load_rules, on_reload=on_reload)


def lease_elector(
    api: client.Kube, *, settings: Settings, metrics: Metrics, timings: leader.Timings | None = None
) -> leader.LeaseElector:
    """The elector on a sibling client: same session, its own token bucket.

    Renewals must not queue behind a burst of evictions on the main bucket (60 writes at
    5 QPS is 12 s, past the 10 s renew deadline: leadership lost mid-incident).
    """
    return leader.LeaseElector(
        api.sibling(qps=LEASE_QPS, burst=LEASE_BURST),
        namespace=settings.namespace,
        name=settings.lease_name,
        identity=settings.identity,
        timings=timings,
        on_change=lambda leading: metrics.leader.set(1 if leading else 0),
    )


async def run(settings: Settings) -> int:
    """`healer run`: exit 0 after a clean drain, 2 on unusable rules or configuration."""
    from healer.effects.dryrun import DryRunExecutor, NodeWrites
    from healer.effects.live import LiveExecutor
    from healer.kube import client

    metrics = Metrics()
    try:
        rules = load_rules_holder(settings, metrics)
    except loading.RuleError as e:
        log.error("rules unusable", directory=str(settings.rules_dir), problems=list(e.problems))
        return 2
    notifier = notify.from_environment(shadow=settings.dry_run)
    try:
        async with client.connect(
            kubeconfig=settings.kubeconfig, service_account_dir=settings.service_account_dir
        ) as api:
            # dry-run: what would have been written on Nodes is laid over healer's own views
            writes = NodeWrites() if settings.dry_run else None
            executor: Executor = (
                DryRunExecutor(writes=writes)
                if settings.dry_run
                else LiveExecutor(api, instance=settings.identity)
            )
            elector = lease_elector(api, settings=settings, metrics=metrics) if settings.elect else None
            daemon = Daemon(
                settings=settings,
                api=api,
                executor=executor,
                notifier=notifier,
                rules=rules,
                metrics=metrics,
                elector=elector,
                overlay=writes,
            )
            install_signal_handlers(daemon)
            return await daemon.run()
    except client.ConfigError as e:
        log.error("no usable cluster configuration", error=str(e))
        return 2
    finally:
        with contextlib.suppress(Exception):
            await notifier.close(timeout_s=5.0)
