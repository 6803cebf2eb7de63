"""Typed errors: one root, split into transient (retry) and permanent (dead letter)."""

from __future__ import annotations


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
