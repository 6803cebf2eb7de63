"""Masking personal data in dead-letter payloads: BSN-like numbers, names, birth dates, e-mail, phone."""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "•••"
# Keys whose values are personal data whatever they look like (Dutch and English spellings).
_PERSONAL_KEYS = re.compile(
    r"bsn|burgerservice|naam|name|voornaam|achternaam|tussenvoegsel|initialen|geboorte|birth|"
    r"e-?mail|telefoon|phone|mobiel|adres|address|straat|street|postcode|zip|huisnummer",
    re.IGNORECASE,
)
# Envelope fields are ids and times, never personal data: shown as they are.
_SAFE_KEYS = {"message_id", "transaction_id", "correlation_id", "occurred_at", "type", "version", "source"}
_PATTERNS = (
    re.compile(r"\b\d{8,9}\b"),  # BSN-like
    re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"),  # e-mail
    re.compile(r"(\+31|0031|\b0)[\s-]?\d(?:[\s-]?\d){7,9}\b"),  # Dutch phone numbers
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[-/]\d{1,2}[-/]\d{4}\b"),  # dates (birth dates)
)


# A "key": value pair in text that is not (readable) JSON, such as a partner record cut off or
# nested too deep: the value of a personal key is masked as it would be in parsed JSON. A string
# value may run to the end of the text (cut off in the middle).
_KEYED = re.compile(r'"((?:[^"\\]|\\.){0,200})"(\s*:\s*)("(?:[^"\\]|\\.)*(?:"|$)|[^\s,\]}{\["]+)')


def _mask_keyed(match: re.Match[str]) -> str:
    key, colon, value = match.groups()
    if not _PERSONAL_KEYS.search(key) or value in ("null", '""', "true", "false"):
        return match.group(0)
    return f'"{key}"{colon}"{MASK}"'


def mask_text(text: str) -> str:
    """A string with everything that looks like personal data replaced."""
    text = _KEYED.sub(_mask_keyed, text)
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def mask_value(value: Any, *, key: str = "") -> Any:
    """A JSON value with personal fields and personal-looking strings masked, structure kept."""
    if isinstance(value, dict):
        return {k: v if k in _SAFE_KEYS else mask_value(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(v, key=key) for v in value]
    if key and _PERSONAL_KEYS.search(key) and value not in (None, "", True, False):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) in (8, 9):
        return MASK
    return value


def show_payload(raw: bytes, *, unmasked: bool) -> Any:
    """The payload for an operator: parsed JSON (masked unless allowed), else masked text."""
    try:
        value = json.loads(raw)
        # masking walks the value as deep as it is nested: JSON that json.loads could only just
        # read is shown as text, like JSON it could not read at all
        return value if unmasked else mask_value(value)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, an overlong integer, too deep
        text = raw.decode("utf-8", "replace")
        return text if unmasked else mask_text(text)
