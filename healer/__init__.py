"""healer: an event-driven self-healing daemon for Kubernetes nodes, pods and GPUs.

Sources (Kubernetes watches, NVML, snapshot files) feed a pure engine that turns the
cluster view into a plan of typed actions; executors (live or dry-run) carry the plan out.
"""

__version__ = "0.1.0"
