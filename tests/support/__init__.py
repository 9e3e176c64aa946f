"""Helpers shared by e2e tests and benches: the control-plane wrapper, the Oceanid builder, polling."""
