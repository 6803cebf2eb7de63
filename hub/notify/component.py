"""The notifier: a mail to the signal's owner (or their delegate) for every Verwijsindex match."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from hub.audit import AuditEntry
from hub.errors import PermanentError
from hub.notify.borging import borging_loop
from hub.notify.service import NoReachableRecipient, notify_caseworker, resolve_unreachable
from hub.runtime import Hub
from hub.signals.matches import ended_status, match_ignored
from hub.signals.tables import signals
from hub.spine import Tx
from hub.topics import VERWIJSINDEX_MATCH
from schemas._base import Code
from schemas.envelope import Envelope
from schemas.match import Match

GROUP = "notify"
SIGNAL_PURGED = "signal_purged"  # why a match is not mailed: its signal ended and was purged since
PURGED_RESOLUTION = "niet meer nodig: het signaal is beëindigd en gewist"


class MatchNotice(Match):
    """Payload of `verwijsindex.match.v1`: the canonical Match plus the signal's owner."""

    caseworker_id: Code


def match_context(match: MatchNotice) -> dict[str, Any]:
    """What the match template may show (rule 16): contacts, type, our reference. Nothing else."""
    return {
        "match_type": match.type.value,
        "match_id": match.match_id,
        "case_reference": match.signal_id,
        "counterparts": [c.model_dump(mode="json") for c in match.counterparts],
    }


def _match_of_a_purged_signal(match: MatchNotice, youth_key: str | None) -> AuditEntry:
    """The audit entry of a match nobody is told about as its signal is no longer held: purged once it
    ended (rule 18: the index told us something about one of our youths)."""
    return AuditEntry(
        action="verwijsindex.match_ignored",
        user=GROUP,
        youth_key=youth_key,
        objects={
            "signal_id": match.signal_id,
            "match_id": match.match_id,
            "reason": SIGNAL_PURGED,
            "signal_status": None,  # not known any more: the signal's row went with its term
        },
    )


def register_notify(hub: Hub) -> None:
    """Subscribe the match notifier (consumer group `notify`)."""
    assert hub.spine is not None
    spine = hub.spine
    hub.background["borging"] = borging_loop(hub)  # daily check, rule 17 (idempotent)

    @spine.subscribe(
        hub.topic(VERWIJSINDEX_MATCH.name),
        group=hub.group(GROUP),
        dlq=hub.topic(VERWIJSINDEX_MATCH.dlq),
    )
    async def send_match_notification(tx: Tx, message: Envelope) -> None:
        """Mail the signal's owner (the delegate while absent) the counterpart's contact details."""
        if message.type != "Match":
            raise PermanentError(f"unexpected message type {message.type!r} on the match topic")
        try:
            match = MatchNotice.model_validate(message.payload)
        except ValidationError as exc:
            raise PermanentError(f"match payload is not a Match: {exc.error_count()} error(s)") from None
        key = bytes(tx.record.key).decode() if tx.record.key is not None else None
        held = select(signals.c.status, signals.c.end_date, signals.c.caseworker_id).where(
            signals.c.signal_id == match.signal_id
        )
        signal = (await tx.session.execute(held)).first()
        if signal is None:
            # its signal is gone: purged past its term, and so over (rule 16, rule 12), the match a
            # dead letter replayed after the purge or read before it. Nobody is told of it.
            await tx.audit(_match_of_a_purged_signal(match, key))
            await resolve_unreachable(
                tx.session, match.signal_id, tx.transaction_id, PURGED_RESOLUTION, match_id=match.match_id
            )
            return
        ended = ended_status(signal.status, signal.end_date, hub.today())
        if ended is not None:
            # withdrawn or ended after the feed passed the match on: nobody is told about a signal
            # that is over (the feed itself drops matches on signals ended before they came)
            await tx.audit(match_ignored(match.signal_id, match.match_id, key, ended, GROUP))
            # a replayed match that found nobody before needs nobody now: its problem is resolved
            await resolve_unreachable(
                tx.session,
                match.signal_id,
                tx.transaction_id,
                "niet meer nodig: het signaal is beëindigd",
                match_id=match.match_id,
            )
            return
        # The signal's contact now, not when the feed read the match: a contact change or a borging
        # in between moved the signal, and its matches go with it (rule 17).
        owner = signal.caseworker_id
        mail = await notify_caseworker(
            tx.session,
            hub,
            owner,
            "match",
            match_context(match),
            tx.transaction_id,
            case_reference=match.signal_id,
            key=key,
            youth_key=key,
        )
        if mail is None:
            # Recorded as a problem (kept: this handler returns normally), and dead-lettered with
            # the DLQ headers so the match can be replayed once the directory is fixed.
            cause = NoReachableRecipient(
                f"match {match.match_id}: caseworker {owner!r} is away and has no "
                "reachable delegate; fix the directory and replay this dead letter"
            )
            await spine.dead_letter(tx.session, subscription, tx.record, cause, tx.transaction_id)
            return
        # The match is handled: its mail is queued, not yet disclosed. The disclosure is `mail.sent`
        # (the mail connector), to whoever reads the caseworker's mail when it goes out, which may be
        # another person than now. The action keeps its name: the chaos tests count handled matches
        # by it (tests/chaos/test_outages_and_poison.py).
        await tx.audit(
            AuditEntry(
                action="verwijsindex.match_disclosed",
                user=GROUP,
                youth_key=key,
                on_behalf_of=owner,
                objects={
                    "match_id": match.match_id,
                    "signal_id": match.signal_id,
                    "notification_id": mail.notification_id,
                    "mail": "queued",
                    "reader_when_queued": mail.recipient_caseworker_id,
                    "to_disclose": ["counterpart_contact", "match_type", "case_reference"],
                },
            )
        )

    subscription = spine.subscriptions[-1]
