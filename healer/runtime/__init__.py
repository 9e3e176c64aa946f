"""The daemon: wires watch sources into the pure engine and its plans into an executor.

Everything here is plumbing with one job each: `store` keeps the view, `daemon` runs the
loops, `leader` elects the one cluster-wide actor, `server` answers health and metrics,
`reload` keeps the rules current, `settings` and `logs` configure the process.
"""
