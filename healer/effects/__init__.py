"""Doing what the engine decided: the only layer (with `healer.kube`) that writes to the API.

`live.LiveExecutor` carries actions out against a `KubeApi`; `dryrun.DryRunExecutor` logs
what it would do and writes nothing; `recording.RecordingExecutor` remembers actions for
tests. All three satisfy `healer.model.ports.Executor`, so the runtime never knows which
one it holds.
"""
