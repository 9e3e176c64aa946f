"""The only package that talks to the Kubernetes API (through kubernetes-asyncio's transport).

`api.KubeApi` is the contract the watchers, effects and leader election use; `client.Kube`
implements it (raw JSON, orjson); `errors` maps HTTP statuses to the decisions callers make
(retry, re-read, give up); `retry` backs off with jitter and honours Retry-After;
`ratelimit` keeps every process under its QPS budget.
"""
