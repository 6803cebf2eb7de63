"""The pseudonymous youth key: HMAC-SHA256(secret, BSN), used as Kafka key and in URLs."""

from __future__ import annotations

import hashlib
import hmac


def youth_key(secret: str | bytes, bsn: str) -> str:
    """Hex HMAC-SHA256 of the normalised BSN; no BSN can be read back from it."""
    key = secret.encode() if isinstance(secret, str) else secret
    normalised = bsn.strip().zfill(9)
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()
