"""Typed errors: one root, split into transient (retry) and permanent (dead letter)."""

from __future__ import annotations

import errno
import socket

# A plain OSError with one of these numbers is a connect that found no way to its peer.
_UNREACHABLE = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
)


def connect_failed(exc: BaseException) -> bool:
    """Whether `exc` says a connection to a dependency could not be made or was lost: refused, reset,
    timed out, a name that did not resolve, no route; or the "Multiple exceptions: ..." OSError that
    asyncio and uvloop raise when every address of a name failed. Any other OSError (a file the hub's
    own package lacks, a permission) is not: it fails the same way when tried again."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    return type(exc) is OSError and (exc.errno in _UNREACHABLE or str(exc).startswith("Multiple exceptions"))


class HubError(Exception):
    """Root of every error the hub raises on purpose. Messages never carry a BSN or a name."""


class TransientError(HubError):
    """Worth retrying: timeouts, 5xx, 429, connection errors, SMTP 4xx."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(HubError):
    """Retrying cannot help: validation errors, 4xx other than 408/429. Goes to the DLQ at once."""


class ConfigError(HubError):
    """A setting or configuration file is wrong; names the setting."""


class DependencyDown(ConnectionError):
    """A service a read or an action needs (the brokers, say) is down or did not answer in time. The
    message says which and why, in the hub's own words, and is shown as it is (a 503's detail)."""
