"""A dispatch message as its receiver gets it: the receiver's reference in place of the youth key."""

from __future__ import annotations

from hub.errors import PermanentError
from schemas.envelope import Envelope
from schemas.pseudonym import receiver_ref, youth_ref

YOUTH_KEY = "youth_key"  # the hub's own pseudonym: routing, case locks, ladder keys, audit log
YOUTH_REF = "youth_ref"  # the receiver's: HMAC of organisation and youth key (schemas.pseudonym)
# the hub's ids that two receivers of one youth would share, each in its place as the receiver's own
HUB_IDS = {"referral_id": ("referral_ref", "referral"), "consent_id": ("consent_ref", "consent")}


def for_receiver(message: Envelope, secret: str) -> Envelope:
    """`message` with `youth_ref` where the hub's dispatch message has `youth_key`, and `referral_ref`
    and `consent_ref` where it has `referral_id` and `consent_id`, each in its place; every other
    field, the handover's and envelope's ids and `occurred_at` too, as it was. The youth key, the
    referral's and the consent's ids are the same for every receiver: two of them (one under a consent
    covering the BSN, one not) could join on them. The same message gives the same bytes at every
    attempt and replay: receivers de-duplicate by message id."""
    key = message.payload.get(YOUTH_KEY)
    organisation = message.payload.get("receiver_organisation")
    if not isinstance(key, str) or not isinstance(organisation, str):
        raise PermanentError("a dispatch message without youth_key or receiver_organisation")
    payload: dict[str, object] = {}
    for name, value in message.payload.items():
        if name == YOUTH_KEY:
            payload[YOUTH_REF] = youth_ref(secret, organisation, key)
        elif name in HUB_IDS:
            ref_name, kind = HUB_IDS[name]
            ref = None if value is None else receiver_ref(secret, organisation, kind, str(value))
            payload[ref_name] = ref
        else:
            payload[name] = value
    return message.model_copy(update={"payload": payload})
