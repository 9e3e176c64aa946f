"""Sources of cluster events: Kubernetes list+watch turned into typed `healer.model.events`.

`resources.watch` is the one entry point; it never ends and never raises for API errors, so
the runtime can run one task per watched resource and trust it to come back after outages.
"""
