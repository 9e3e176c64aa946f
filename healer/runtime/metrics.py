"""Prometheus metrics for one daemon, on a registry of its own.

A registry per daemon (rather than the process-global default) lets tests run several
daemons in one process and read each one's counters without cross-talk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import prometheus_client as prom


@dataclass(slots=True)
class Metrics:
    registry: prom.CollectorRegistry = field(
        default_factory=lambda: prom.CollectorRegistry(auto_describe=True)
    )
    events: prom.Counter = field(init=False)
    actions: prom.Counter = field(init=False)
    held: prom.Gauge = field(init=False)
    watch_restarts: prom.Counter = field(init=False)
    leader: prom.Gauge = field(init=False)
    synced: prom.Gauge = field(init=False)
    plans: prom.Counter = field(init=False)
    rule_reloads: prom.Counter = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = prom.Counter("healer_events", "Events received, by kind", ["kind"], registry=r)
        self.actions = prom.Counter(
            "healer_actions", "Actions executed, by verb and outcome", ["verb", "outcome"], registry=r
        )
        self.held = prom.Gauge(
            "healer_held_actions", "Actions guards hold in the latest plan, by guard", ["guard"], registry=r
        )
        self.watch_restarts = prom.Counter(
            "healer_watch_restarts",
            "Watch restarts, by resource and reason (expired, dropped, gone, unreachable, ...)",
            ["resource", "reason"],
            registry=r,
        )
        self.leader = prom.Gauge("healer_leader", "1 while this process holds the leader Lease", registry=r)
        self.synced = prom.Gauge(
            "healer_view_synced", "1 while the view of a scope is complete and current", ["scope"], registry=r
        )
        self.plans = prom.Counter("healer_plans", "Plans evaluated, by scope", ["scope"], registry=r)
        self.rule_reloads = prom.Counter(
            "healer_rule_reloads", "Rule reloads, by result (ok / error)", ["result"], registry=r
        )

    def render(self) -> bytes:
        return prom.generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent): for tests and the storm e2e."""
        return self.registry.get_sample_value(name, labels) or 0.0
