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
