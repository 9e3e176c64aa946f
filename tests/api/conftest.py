"""Fixtures for API tests: the fake API server and a real `Kube` client on it (tests/api/fixtures.py)."""

from tests.api.fixtures import (
    TOKEN,
    fake,
    fake_tls,
    kube,
    kubeconfig,
    scratch_ca,
    service_account,
    write_kubeconfig,
)

__all__ = [
    "TOKEN",
    "fake",
    "fake_tls",
    "kube",
    "kubeconfig",
    "scratch_ca",
    "service_account",
    "write_kubeconfig",
]
