"""What an administrator is told about a mail that went to the dead-letter queue, by why it went there.

Each reason asks for something else before the dead letter is replayed (the console's TO_DO texts):
- `mail_niet_verstuurd_storing`: an outage outlasted the retry ladder (the SMTP server unreachable
  or answering 4xx, or refusing the hub's own SMTP settings: its login, greeting or sender; or the
  hub's store failing on this mail's way time after time): check that it is back, or correct the
  settings the reason names.
- `geen_bereikbare_ontvanger`: when it was to be sent, nobody read the caseworker's mail (away or gone
  without a reachable delegate, or not in the directory): fix the directory. The same kind as a
  notice that found nobody when it was queued (`hub.notify.service.notify_caseworker`).
- `mail_uitkomst_onbekend`: it went out and no answer came; it may have been delivered.
- `mail_inhoud_geweigerd`: the SMTP server refused the message itself (a 5xx on DATA, or too large),
  not its address: the directory is not what needs fixing.
- `mail_niet_bezorgd`: anything else the connector refused for good, an SMTP 5xx on RCPT above all
  (a refused address): correct the directory.

Each is about one notification (its reference is the notification id) and the hub resolves it when
it sees that mail done (`resolve_done`): the SMTP server accepted it (recorded in `mail_sent`, also
when a replay finds it was sent before), or it need not go (a match mail whose signal ended). That is
the one signal trusted: a directory fixed or an SMTP server back says nothing about a dead letter
that nobody replayed. A mail dead-lettered again after a replay is the newer problem, and the older
ones of it are resolved as replaced by it (`resolve_replaced`): what they asked for was done.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from connectors.mail.refusals import (
    CONTENT_REFUSED,
    SETTINGS_REFUSED,
    UNKNOWN_OUTCOME,
    ContentRefused,
    OutcomeUnknown,
)
from hub.directory import CaseworkerNotFound
from hub.errors import TransientError
from hub.notify.problems import resolve_found
from hub.notify.service import NO_RECIPIENT, NoReachableRecipient
from hub.store import store_failed

OUTAGE = "mail_niet_verstuurd_storing"
REFUSED = "mail_niet_bezorgd"
UNKNOWN = "mail_uitkomst_onbekend"
CONTENT = "mail_inhoud_geweigerd"
KINDS = (OUTAGE, REFUSED, UNKNOWN, CONTENT, NO_RECIPIENT)  # of a dead-lettered mail, by notification id
SENT = "de mail is alsnog verstuurd"
WITHHELD = "niet meer nodig: het signaal van deze match is beëindigd, de mail gaat niet"


def problem_kind(exc: BaseException) -> str:
    """The problem a mail is, should `exc` (what its attempt raised) dead-letter it."""
    if isinstance(exc, OutcomeUnknown):
        return UNKNOWN
    if isinstance(exc, ContentRefused):
        return CONTENT
    if isinstance(exc, NoReachableRecipient | CaseworkerNotFound):
        return NO_RECIPIENT
    if isinstance(exc, TransientError) or store_failed(exc):  # the ladder retried both to its end
        return OUTAGE
    return REFUSED


def kind_from_text(error: str) -> str:
    """The problem a dead letter is by its error text alone, for when its attempt is not known."""
    if UNKNOWN_OUTCOME in error:
        return UNKNOWN
    if CONTENT_REFUSED in error:
        return CONTENT
    return OUTAGE if SETTINGS_REFUSED in error else REFUSED


def problem_reason(kind: str, error: str, template: str | None) -> str:
    """The problem's reason (Dutch, as the other problems'), with the error as the ladder stored it."""
    if kind == UNKNOWN:
        return f"mail mogelijk bezorgd, niet opnieuw verstuurd: {error}"
    if kind == OUTAGE and SETTINGS_REFUSED in error:
        return f"mail niet verstuurd, de SMTP-instellingen van de hub werden geweigerd: {error}"
    if kind == OUTAGE:
        return f"mail niet verstuurd, de storing duurde langer dan de herhaalpogingen: {error}"
    if kind == CONTENT:
        return f"mail geweigerd om de mail zelf, niet om het adres: {error}"
    if kind == NO_RECIPIENT:
        return f"geen mail verstuurd ({template or 'onbekend'}): {error}"
    return f"mail niet bezorgd: {error}"


async def resolve_done(
    session: AsyncSession, notification_ids: Sequence[str], withheld: Collection[str], *, by: str
) -> None:
    """The mails of `notification_ids` are done, in the transaction that records them: sent, or (those
    in `withheld`) not to be sent. Their open problems are resolved, saying which."""
    sent = [n for n in notification_ids if n not in withheld]
    stopped = [n for n in notification_ids if n in withheld]
    for done, resolution in ((sent, SENT), (stopped, WITHHELD)):
        if done:
            await resolve_found(session, kinds=KINDS, references=done, resolution=resolution, by=by)


async def resolve_replaced(session: AsyncSession, reference: str, problem_id: int, *, by: str) -> None:
    """The mail of `reference` is dead-lettered again, as problem `problem_id`: its older open problems
    are resolved as replaced by that one."""
    await resolve_found(
        session,
        kinds=KINDS,
        references=(reference,),
        except_id=problem_id,
        resolution=f"vervangen door probleem {problem_id}: de mail is na een replay opnieuw mislukt",
        by=by,
    )
