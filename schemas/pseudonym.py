"""The pseudonymous youth key: HMAC-SHA256(secret, BSN), used as Kafka key and in URLs; and the
receiver's reference, the pseudonym a receiving organisation gets in its place."""

from __future__ import annotations

import hashlib
import hmac
import re

# The hub's own record key, `youth_key` in hex. It names no one; any other key is whatever its sender
# used, even a BSN, and is personal data.
_YOUTH_KEY = re.compile(r"[0-9a-f]{64}")


def youth_key(secret: str | bytes, bsn: str) -> str:
    """Hex HMAC-SHA256 of the normalised BSN; no BSN can be read back from it."""
    key = secret.encode() if isinstance(secret, str) else secret
    normalised = bsn.strip().zfill(9)
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()


def is_youth_key(key: str | None) -> bool:
    """True for the hub's own pseudonymous youth key (64 lowercase hex characters)."""
    return key is not None and _YOUTH_KEY.fullmatch(key) is not None


def youth_ref(secret: str | bytes, organisation: str, key: str) -> str:
    """Hex HMAC-SHA256 of `<organisation>:<youth key>`: the youth as one receiving organisation knows
    it. Stable per receiver and youth, another at every other receiver, so two receivers cannot join
    what each got on it (and what one got under a consent covering the BSN on what another did not);
    the youth key itself stays in the hub. The youth key is always 64 characters, at the end: no two
    (organisation, key) pairs give the same text."""
    secret_bytes = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(secret_bytes, f"{organisation}:{key}".encode(), hashlib.sha256).hexdigest()


def receiver_ref(secret: str | bytes, organisation: str, kind: str, value: str) -> str:
    """Hex HMAC-SHA256 of `<organisation>:<kind>:<value>`: one of the hub's own ids (a referral's, a
    consent's) as one receiving organisation knows it. Stable per receiver, another at every other:
    two receivers of one referral cannot join what each got on the hub's id, as with `youth_ref`."""
    secret_bytes = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(secret_bytes, f"{organisation}:{kind}:{value}".encode(), hashlib.sha256).hexdigest()
