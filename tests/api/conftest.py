"""Fixtures for API tests: the fake API server and a real `Kube` client on it (tests/api/fixtures.py)."""

from tests.api.fixtures import TOKEN, fake, kube, kubeconfig, write_kubeconfig

__all__ = ["TOKEN", "fake", "kube", "kubeconfig", "write_kubeconfig"]
