"""API keys: `kh_<key id>_<secret>`, stored as a keyed SHA-256 hash looked up by key id."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from enum import StrEnum

# Why not argon2: a partner key carries 256 random bits, so there is no dictionary or brute-force
# attack for a slow hash to slow down (2^256 guesses stay out of reach at any hash speed). Argon2
# would cost tens of milliseconds of CPU and memory on every partner request for no gain. A keyed
# SHA-256 (HMAC with a fixed domain label and the key id as salt) is preimage-resistant, makes a
# leaked table useless without the keys, and the key id gives an indexed lookup so the hash is
# compared (in constant time) against one row only.
_DOMAIN = b"ketenhub partner api key v1:"
_KEY = re.compile(r"^kh_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class PartnerType(StrEnum):
    """Kinds of partner; a partner may only use the endpoints of its kind."""

    POLITIE = "politie"
    BOA = "boa"
    LEERPLICHT = "leerplicht"
    PREVENTIEF = "preventief"
    JONGERENWERK = "jongerenwerk"
    WIJKTEAM = "wijkteam"
    JEUGDHULP = "jeugdhulp"
    VERSLAVINGSZORG = "verslavingszorg"
    VERWIJSINDEX = "verwijsindex"
    ZAAKSYSTEEM = "zaaksysteem"  # Halt's case system (Aurah) or portal: calls the caseworker API


def new_key() -> tuple[str, str]:
    """A fresh (key id, full key); the key carries 256 random bits."""
    key_id = secrets.token_hex(8)
    return key_id, f"kh_{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key_id: str, key: str) -> str:
    """The stored form of a key."""
    return hmac.new(_DOMAIN + key_id.encode(), key.encode(), hashlib.sha256).hexdigest()


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, or None for anything else."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def matches(key: str, key_id: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with the stored hash."""
    return hmac.compare_digest(hash_key(key_id, key), stored_hash)
