"""The vocabulary every layer shares: the cluster view, events, actions and outcomes.

Frozen dataclasses only; this package imports nothing else from healer and does no I/O.
"""
