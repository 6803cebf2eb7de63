"""deploy/compose.yaml's secrets as a test runs them: each file under /run/secrets/ a service's
environment names is written to a directory of the test's own, as deploy/secrets/ would hold it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

SECRETS_DIR = "/run/secrets/"


def with_secret_files(env: Mapping[str, str], into: Path, value_of: Callable[[str], str]) -> dict[str, str]:
    """`env` with every /run/secrets/<name> path replaced by a file under `into` holding
    `value_of(<name>)`, and a line break after it, as `openssl rand -hex 32 > file` writes."""
    into.mkdir(parents=True, exist_ok=True)
    out = dict(env)
    for key, value in env.items():
        if value.startswith(SECRETS_DIR):
            secret = value.removeprefix(SECRETS_DIR)
            file = into / secret
            file.write_text(value_of(secret) + "\n")
            out[key] = str(file)
    return out
