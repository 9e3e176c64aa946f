"""The only package that talks to the Kubernetes API (raw JSON over aiohttp).

`api.KubeApi` is the contract the watchers, effects and leader election use; `client.Kube`
implements it (raw JSON, orjson), configured by `incluster` in a pod and by kubernetes-asyncio's
loader from a kubeconfig; `errors` maps HTTP statuses to the decisions callers make
(retry, re-read, give up); `retry` backs off with jitter and honours Retry-After;
`ratelimit` keeps every process under its QPS budget.
"""
