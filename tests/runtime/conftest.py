"""Runtime tests that need an API run over real HTTP: the fake API server and a real `Kube`."""

from tests.api.fixtures import fake, kube, kubeconfig

__all__ = ["fake", "kube", "kubeconfig"]
