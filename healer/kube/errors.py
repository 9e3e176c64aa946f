"""API errors, split by what the caller does about them.

    ApiError
     ├── ClientError          4xx: the request was wrong or is not allowed now
     │    ├── NotFound        404: the object is gone (often: nothing left to do)
     │    ├── Conflict        409: re-read and retry (stale resourceVersion, UID precondition)
     │    ├── Gone            410: the watch's resourceVersion is too old: relist
     │    ├── Invalid         422
     │    └── TooManyRequests 429: back off (retry_after); for evictions, a PDB said no
     ├── ServerError          5xx: back off and retry
     └── Unreachable          no HTTP answer at all (refused, reset, timeout): back off

    ConfigError               no usable kubeconfig or in-cluster configuration (before any request)

Bodies are truncated so that nothing large (or secret) ends up in logs.
"""

from __future__ import annotations


class ApiError(Exception):
    status: int = 0

    def __init__(self, message: str, *, status: int = 0, reason: str = "", retry_after: float | None = None):
        super().__init__(message[:256])
        self.status = status or type(self).status
        self.reason = reason
        self.retry_after = retry_after


class ClientError(ApiError):
    status = 400


class NotFound(ClientError):
    status = 404


class Conflict(ClientError):
    status = 409


class Gone(ClientError):
    status = 410


class Invalid(ClientError):
    status = 422


class TooManyRequests(ClientError):
    status = 429


class Forbidden(ClientError):
    status = 403


class ServerError(ApiError):
    status = 500


class Unreachable(ApiError):
    status = 0


class ConfigError(Exception):
    """No usable kubeconfig or in-cluster configuration; the message is one line naming what is wrong."""


_BY_STATUS: dict[int, type[ApiError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def for_status(status: int) -> type[ApiError]:
    """The error class for an HTTP status (5xx -> ServerError, other 4xx -> ClientError)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ClientError
