"""The only package that talks to the Kubernetes API (through kubernetes-asyncio's transport).

`api.KubeApi` is the contract the watchers, effects and leader election use; `errors` maps
HTTP statuses to the decisions callers make (retry, re-read, give up).
"""
