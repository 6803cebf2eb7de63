"""Masking personal data in dead letters: BSN-like numbers, names, birth dates, e-mail, phone; keys."""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "•••"
# Keys whose values are personal data whatever they look like (Dutch and English spellings).
_PERSONAL_KEYS = re.compile(
    r"bsn|burgerservice|naam|name|voornaam|achternaam|tussenvoegsel|voorvoegsel|initialen|geboorte|birth|"
    r"e-?mail|telefoon|phone|mobiel|adres|address|straat|street|postcode|zip|huisnummer|"
    r"woonplaats|geslacht|gender",
    re.IGNORECASE,
)
# Keys too short to look for inside others ("lat" is in "relatie"): personal only as the whole key.
# A BOA record's GPS position pins where the youth was stopped, to the house.
_PERSONAL_WHOLE_KEYS = {"lat", "lon", "lng", "latitude", "longitude"}


def _personal(key: str) -> bool:
    return bool(_PERSONAL_KEYS.search(key)) or key.lower() in _PERSONAL_WHOLE_KEYS


# The hub's own record key: HMAC-SHA256 of a BSN in hex (the test hub.ops.parked uses too). It names no
# one; any other key is whatever its sender used, even a BSN, and is personal data.
_YOUTH_KEY = re.compile(r"[0-9a-f]{64}")
# Envelope fields are ids and times, never personal data: shown as they are.
_SAFE_KEYS = {"message_id", "transaction_id", "correlation_id", "occurred_at", "type", "version", "source"}
_PATTERNS = (
    re.compile(r"\b\d{8,9}\b"),  # BSN-like
    # e-mail; starting only where a run of name characters starts: tried at every position of a long
    # run, the search took quadratic time (a 40 KB run of letters held the event loop 4 s)
    re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(\.[\w-]+)+"),
    re.compile(r"(\+31|0031|\b0)[\s-]?\d(?:[\s-]?\d){7,9}\b"),  # Dutch phone numbers
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[-/]\d{1,2}[-/]\d{4}\b"),  # dates (birth dates)
)


# A "key": value pair in text that is not (readable) JSON, such as a partner record cut off or
# nested too deep: the value of a personal key is masked as it would be in parsed JSON. A string
# value may run to the end of the text (cut off in the middle).
_KEYED = re.compile(
    r'"((?:[^"\\]|\\.){0,64})"(\s*:\s*)'  # a key (a partner's keys are short) and its colon
    r'("(?:[^"\\]|\\.)*(?:"|$)'  # a string, perhaps cut off
    r'|\[(?:[^\[\]{}"]|"(?:[^"\\]|\\.)*(?:"|$))*(?:\]|$)'  # a flat array (given names), perhaps cut off
    r'|[^\s,\]}{\["]+)'  # a number or a word
)


def _mask_keyed(match: re.Match[str]) -> str:
    key, colon, value = match.groups()
    if not _personal(key) or value in ("null", '""', "true", "false"):
        return match.group(0)
    return f'"{key}"{colon}"{MASK}"'


def mask_text(text: str) -> str:
    """A string with everything that looks like personal data replaced."""
    text = _KEYED.sub(_mask_keyed, text)
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def is_youth_key(key: str | None) -> bool:
    """True for the hub's own pseudonymous youth key (64 lowercase hex characters)."""
    return key is not None and _YOUTH_KEY.fullmatch(key) is not None


def show_key(key: str | None, *, unmasked: bool) -> str | None:
    """A record key for an operator: a youth key as it is; any other masked unless allowed."""
    return key if key is None or unmasked or is_youth_key(key) else MASK


def mask_value(value: Any, *, key: str = "") -> Any:
    """A JSON value with personal fields and personal-looking strings masked, structure kept."""
    if isinstance(value, dict):
        return {k: v if k in _SAFE_KEYS else mask_value(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(v, key=key) for v in value]
    if key and _personal(key) and value not in (None, "", True, False):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) in (8, 9):
        return MASK
    return value


MAX_DEPTH = 200  # the answer nests the payload a level or two deeper; its encoder stops at 255


def show_payload(raw: bytes, *, unmasked: bool) -> Any:
    """The payload for an operator: parsed JSON (masked unless allowed), else masked text.

    JSON nested deeper than `MAX_DEPTH` is shown as text too: masking walks it as deep as it is
    nested, and the answer's encoder refuses it (both were a 500).
    """
    try:
        value = json.loads(raw)
        if _depth(value) <= MAX_DEPTH:
            return value if unmasked else mask_value(value)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, an overlong integer, too deep
        pass
    text = raw.decode("utf-8", "replace")
    return text if unmasked else mask_text(text)


def _depth(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value, counted without recursion."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level + 1)
            todo.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
