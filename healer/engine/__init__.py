"""The pure decision core: cluster view, rules, state and `now` in; a `Plan` out. No I/O.

`planning.plan(...)` is the entry point; `state.EngineState` is the memory the runtime carries
between evaluations; guards, release eligibility and the messages live in their own modules.
"""
