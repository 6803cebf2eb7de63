"""The BSN type (rule 1): nine digits, elfproef, never 000000000; errors never echo the value."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

_NINE_DIGITS = re.compile(r"(?<!\d)\d{9}(?!\d)")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A phone number in international form: a country code (+31, 0031), a space, dash or dot, then the
# number. "+31 6xxxxxxxx" has a run of nine digits, and about one in eleven passes the elfproef.
_PHONE = re.compile(r"(?:\+|(?<!\d)00)\d{1,3}[ .\-]?(?=\d{9}(?!\d))")
BSN_ALLOWED = "9 cijfers (8 cijfers worden met een 0 aangevuld) die de elfproef doorstaan"


def normalise_bsn(value: str) -> str:
    """Strip whitespace and left-pad an 8-digit BSN with a 0; other input is returned as is."""
    stripped = value.strip()
    if len(stripped) == 8 and stripped.isascii() and stripped.isdigit():
        return "0" + stripped
    return stripped


def is_valid_bsn(value: object) -> bool:
    """True when value is (after normalising) a BSN that passes the elfproef."""
    if not isinstance(value, str):
        return False
    bsn = normalise_bsn(value)
    if len(bsn) != 9 or not (bsn.isascii() and bsn.isdigit()) or bsn == "000000000":
        return False
    d = bsn.encode()  # ASCII digits: each is its code point minus 48 ("0")
    total = 9 * d[0] + 8 * d[1] + 7 * d[2] + 6 * d[3] + 5 * d[4] + 4 * d[5] + 3 * d[6] + 2 * d[7] - d[8]
    return (total - 43 * 48) % 11 == 0  # the weights sum to 43: every digit's 48 taken off at once


def contains_bsn(text: str) -> bool:
    """True when text holds a run of nine digits that passes the elfproef (a likely BSN).

    Nine digits inside a UUID are part of an id, not a BSN: about one UUID in nine hundred has such a
    run that passes the elfproef, and a mail naming a handover by its id was refused for it. Nine
    digits right after a country code ("+31 6xxxxxxxx", "0031-6xxxxxxxx") are a phone number: a match
    mail naming a counterpart's phone in that form was refused, and its match went to the DLQ.
    """
    ids = [m.span() for m in _UUID.finditer(text)]
    phones = {m.end() for m in _PHONE.finditer(text)}  # where a number after a country code starts
    return any(
        is_valid_bsn(m.group())
        and m.start() not in phones
        and not any(start <= m.start() < end for start, end in ids)
        for m in _NINE_DIGITS.finditer(text)
    )


def _check_bsn(value: object) -> str:
    # An int would lose its leading zero and hide a typing mistake: only strings are accepted.
    if not isinstance(value, str):
        raise PydanticCustomError(
            "bsn_type", "BSN moet als tekst worden aangeleverd", {"allowed": BSN_ALLOWED}
        )
    if not is_valid_bsn(value):
        raise PydanticCustomError("bsn_invalid", "geen geldig BSN", {"allowed": BSN_ALLOWED})
    return normalise_bsn(value)


Bsn = Annotated[
    str,
    BeforeValidator(_check_bsn),
    WithJsonSchema({"type": "string", "pattern": r"^\s*[0-9]{8,9}\s*$", "description": BSN_ALLOWED}),
]
"""A valid, normalised BSN. Models holding one must set hide_input_in_errors (CanonicalModel does)."""
