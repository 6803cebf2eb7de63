"""A dispatch message as its receiver gets it: the receiver's reference in place of the youth key."""

from __future__ import annotations

from hub.errors import PermanentError
from schemas.envelope import Envelope
from schemas.pseudonym import youth_ref

YOUTH_KEY = "youth_key"  # the hub's own pseudonym: routing, case locks, ladder keys, audit log
YOUTH_REF = "youth_ref"  # the receiver's: HMAC of organisation and youth key (schemas.pseudonym)


def for_receiver(message: Envelope, secret: str) -> Envelope:
    """`message` with `youth_ref` where the hub's dispatch message has `youth_key`, in its place; every
    other field, the ids and `occurred_at` too, as it was. The youth key is the same for every
    receiver: two of them (one under a consent covering the BSN, one not) could join on it. The same
    message gives the same bytes at every attempt and replay: receivers de-duplicate by message id."""
    key = message.payload.get(YOUTH_KEY)
    organisation = message.payload.get("receiver_organisation")
    if not isinstance(key, str) or not isinstance(organisation, str):
        raise PermanentError("a dispatch message without youth_key or receiver_organisation")
    ref = youth_ref(secret, organisation, key)
    payload = {
        (YOUTH_REF if name == YOUTH_KEY else name): (ref if name == YOUTH_KEY else value)
        for name, value in message.payload.items()
    }
    return message.model_copy(update={"payload": payload})
