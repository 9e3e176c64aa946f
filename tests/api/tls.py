"""A throwaway certificate authority (trustme) for https tests and benchmarks.

The in-cluster configuration speaks only https and verifies the API server against the
service account's `ca.crt`, as a pod does. `ScratchCA` issues the fake API's server
certificate (127.0.0.1, ::1, localhost) and gives the PEM a pod would find in its
service-account folder (laid out by `tests.support.serviceaccount.write_service_account`).
"""

from __future__ import annotations

import ssl

import trustme


class ScratchCA:
    def __init__(self) -> None:
        self._ca = trustme.CA()
        self._server = self._ca.issue_cert("127.0.0.1", "::1", "localhost")

    @property
    def pem(self) -> bytes:
        """The CA certificate, as `ca.crt` holds it."""
        return self._ca.cert_pem.bytes()

    def server_context(self) -> ssl.SSLContext:
        """For `FakeApi(ssl_context=...)`."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.configure_cert(context)
        return context
