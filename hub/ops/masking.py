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


def mask_text(text: str) -> str:
    """A string with everything that looks like personal data replaced."""
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
    except (ValueError, UnicodeDecodeError):
        text = raw.decode("utf-8", "replace")
        return text if unmasked else mask_text(text)
    return value if unmasked else mask_value(value)
