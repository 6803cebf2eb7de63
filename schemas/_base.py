"""The base of our own strict models and the small constrained string types they share."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError


class CanonicalModel(BaseModel):
    """Strict base for the hub's own messages: unknown fields are refused, inputs never echoed."""

    # hide_input_in_errors: a ValidationError would otherwise print the offending value, which
    # may be a BSN or a name.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


# No control characters in text: PostgreSQL cannot store a NUL, and the others are never part of a
# name, a code or a description. Tab, line breaks, vertical tab and form feed may stay (whitespace
# at the ends is stripped anyway); the document carries the same pattern, so what it calls valid is.
NO_CONTROL = r"^[^\x00-\x08\x0e-\x1f\x7f]*$"
NO_CONTROL_PROBLEM = "bevat een stuurteken (zoals NUL)"
NO_CONTROL_ALLOWED = "tekst zonder stuurtekens U+0000-U+0008, U+000E-U+001F en U+007F"
# In a partner's format, a name or a code is one line: a line break in one is two values run together
# (a CSV cell whose stray '"' took in the next row) or a paste gone wrong. Only there: the canonical
# Name and Code keep NO_CONTROL, as rows stored before read back. Whitespace at the ends, line breaks
# too, is stripped before the pattern is checked, so the document allows it there (Python's \s is
# what str.strip takes away).
ONE_LINE = r"^\s*[^\x00-\x1f\x7f]*\s*$"
ONE_LINE_PROBLEM = NO_CONTROL_PROBLEM  # a line break is one; what is allowed says so
ONE_LINE_ALLOWED = "één regel tekst, zonder regeleinden, tabs en andere stuurtekens (U+0000-U+001F, U+007F)"
# A valid UTF-8 multi-byte sequence: in a file that is not valid UTF-8 it betrays mixed encodings.
UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # from a JSON escape; no database driver can store one
CODE_MAX = 100
TOKEN_MAX = 200


def as_code(value: object) -> str | None:
    """`value` as a `Code` holds it (stripped, 1-100 characters, no control character), else None.

    For references read from input that failed validation: a reference that does not fit is not
    used at all, rather than refused a second time where nobody can answer for it.
    """
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not 0 < len(value) <= CODE_MAX or _CONTROL.search(value) or _SURROGATE.search(value):
        return None
    return value


def is_token(value: object) -> bool:
    """True when `value` is a `Token`: for an opaque value from a partner checked before it is stored."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= TOKEN_MAX
        and not _CONTROL.search(value)
        and not _SURROGATE.search(value)
    )


def readable(text: str) -> str:
    """Text with every control character (line breaks and tabs too) shown as U+FFFD: for a field
    name taken from the partner's own input, which may be echoed in an answer or a log line."""
    return _ANY_CONTROL.sub("\ufffd", text)


Plain = Annotated[str, StringConstraints(pattern=NO_CONTROL)]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_CONTROL)
]
Code = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_CONTROL)
]
# An opaque value a partner hands out and takes back as it was (a feed cursor): not stripped, up to
# 200 characters, no control character.
Token = Annotated[str, StringConstraints(min_length=1, max_length=TOKEN_MAX, pattern=NO_CONTROL)]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000, pattern=NO_CONTROL)
]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254, pattern=EMAIL_PATTERN)]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=40, pattern=r"^[0-9 +()\-]{4,40}$")
]

# A moment a partner or caseworker reports (a joint meeting, a grantor's answer): with its UTC
# offset, within this century.
# Outside it a time is a typing error, and one near either end of the calendar cannot be stored on
# PostgreSQL (converted to UTC it falls off the calendar).
MOMENT_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MOMENT_BEFORE = datetime(2100, 1, 1, tzinfo=UTC)
MOMENT_ALLOWED = "een datum en tijd met UTC-offset volgens ISO 8601, zoals 2026-03-01T10:30:00+01:00"
NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def is_number(value: object) -> bool:
    """A number, or text that is one: what a date and time field must not take."""
    return isinstance(value, int | float) or (isinstance(value, str) and NUMBER.fullmatch(value) is not None)


def _moment_as_text(value: object) -> object:
    # pydantic reads a number as seconds since 1970: 9 was 1970-01-01T00:00:09Z, where the document
    # allows only a date and time written out (a number there is another field's value, or a typo)
    if is_number(value):
        raise PydanticCustomError(
            "datetime_type", "moet een datum en tijd zijn, geen getal", {"allowed": MOMENT_ALLOWED}
        )
    return value


Moment = Annotated[
    AwareDatetime,
    Field(
        ge=MOMENT_EARLIEST,
        lt=MOMENT_BEFORE,
        description="a date and time with its UTC offset, from 2000-01-01T00:00:00Z up to (not "
        "including) 2100-01-01T00:00:00Z",
        examples=["2026-03-01T10:30:00+01:00"],
    ),
    # last, so that the bounds stay the datetime's own (their wording, the document's schema): a
    # before-validator runs first wherever it stands
    BeforeValidator(_moment_as_text),
]
