"""Executor tests run over real HTTP: the fake API server and a real `Kube` (tests/api/fixtures.py)."""

from tests.api.fixtures import fake, kube, kubeconfig

__all__ = ["fake", "kube", "kubeconfig"]
