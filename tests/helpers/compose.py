"""deploy/compose.yaml's secrets as a test runs them: each file under /run/secrets/ a service's
environment names is written to a directory of the test's own, with the value its variable would
have in deploy/.env."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SECRETS_DIR = "/run/secrets/"


def with_secret_files(
    env: Mapping[str, str], compose: Mapping[str, Any], into: Path, value_of: Callable[[str], str]
) -> dict[str, str]:
    """`env` with every /run/secrets/<name> path replaced by a file under `into` holding
    `value_of(<the variable compose reads secret <name> from>)`."""
    into.mkdir(parents=True, exist_ok=True)
    out = dict(env)
    for key, value in env.items():
        if value.startswith(SECRETS_DIR):
            secret = value.removeprefix(SECRETS_DIR)
            file = into / secret
            file.write_text(value_of(compose["secrets"][secret]["environment"]))
            out[key] = str(file)
    return out
