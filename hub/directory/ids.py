"""The caseworker id as the directory stores it: a `Code` no wider than its columns (64 characters)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from schemas._base import NO_CONTROL, NO_CONTROL_PROBLEM, as_code

# The width of caseworkers.caseworker_id, .delegate_id and caseworker_absences.caseworker_id
# (migration 0004). A `Code` may be 100 long; only PostgreSQL enforced the difference, with a 500.
CASEWORKER_ID_MAX = 64

CaseworkerId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=CASEWORKER_ID_MAX, pattern=NO_CONTROL),
]


def id_problem(value: str) -> str | None:
    """Why a stripped, non-empty `value` cannot be a caseworker id (in Dutch, never quoting it), else None."""
    if len(value) > CASEWORKER_ID_MAX:
        return f"is te lang (maximaal {CASEWORKER_ID_MAX} tekens)"
    return NO_CONTROL_PROBLEM if as_code(value) is None else None
