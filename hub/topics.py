"""Every topic of the hub, declared once, versioned, with partitions and retention."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    """A topic: name with version suffix, partitions, retention, and its dead-letter topic."""

    name: str
    partitions: int = 4
    retention_ms: int = 7 * DAY_MS
    description: str = ""

    @property
    def dlq(self) -> str:
        """The dead-letter topic: `<area>.<name>.dlq.v<N>`."""
        base, _, version = self.name.rpartition(".")
        return f"{base}.dlq.{version}"

    @property
    def retry(self) -> str:
        """The parking topic of the retry ladder: `<area>.<name>.retry.v<N>`."""
        base, _, version = self.name.rpartition(".")
        return f"{base}.retry.{version}"


POLITIE_REFERRAL = Topic("partner.politie.referral.v1", description="police systems publish referrals")
POLITIE_DECISION = Topic("partner.politie.decision.v1", description="intake decisions back to the police")
REFERRAL_RECEIVED = Topic("referral.received.v1", description="canonical referrals from every connector")
REFERRAL_DECIDED = Topic("referral.decided.v1", description="intake decisions")
HANDOVER_REQUESTED = Topic("handover.requested.v1", description="caseworker asks for a warm handover")
# No receiver may write this one: a record here names its sender only in its envelope, which nobody
# checks. Routing dead-letters whatever arrives; answers go on `handover_answers(<type>)`.
HANDOVER_STATUS = Topic("handover.status.v1", description="retired: answers go on handover.answers.<type>.v1")
HANDOVER_DISPATCH = Topic("handover.dispatch.v1", description="consent-checked handovers to deliver")
VERWIJSINDEX_SIGNAL = Topic("verwijsindex.signal.v1", description="signal commands to the Verwijsindex")
VERWIJSINDEX_MATCH = Topic("verwijsindex.match.v1", description="matches from the Verwijsindex")
VERWIJSINDEX_GROUP = "verwijsindex"  # the component whose consumer group takes VERWIJSINDEX_SIGNAL in
NOTIFICATION_MAIL = Topic("notification.mail.v1", description="mails to caseworkers")

# The retry ladders by name (`retry_parked.ladder`), and the topic each delivers from: an operator's
# view of the parked messages needs the store's rows per retry topic, in a process without the
# ladders (hub.retry.wiring checks each ladder against this).
RETRY_LADDERS = {
    "verwijsindex": VERWIJSINDEX_SIGNAL,
    "receivers-webhook": HANDOVER_DISPATCH,
    "mail": NOTIFICATION_MAIL,
}

HANDOVER_RECEIVERS = ("jongerenwerk", "wijkteam", "jeugdhulp", "verslavingszorg")


def handover_outbound(receiver: str) -> Topic:
    """The topic a Kafka-speaking handover receiver reads."""
    return Topic(f"handover.outbound.{receiver}.v1", description=f"warm handovers to {receiver}")


def handover_answers(receiver: str) -> Topic:
    """The topic a Kafka-speaking handover receiver answers on: only the principal that reads
    `handover_outbound(receiver)` may write it (deploy/ ACLs), so the topic says who answers."""
    return Topic(f"handover.answers.{receiver}.v1", description=f"answers of the {receiver} receiver")


# Topics a component consumes get a DLQ; those behind the retry ladder also get a retry topic.
CONSUMED: tuple[Topic, ...] = (
    POLITIE_REFERRAL,
    REFERRAL_RECEIVED,
    HANDOVER_REQUESTED,
    HANDOVER_STATUS,
    *(handover_answers(r) for r in HANDOVER_RECEIVERS),
    HANDOVER_DISPATCH,
    VERWIJSINDEX_SIGNAL,
    VERWIJSINDEX_MATCH,
    NOTIFICATION_MAIL,
)
WITH_RETRY: tuple[Topic, ...] = (VERWIJSINDEX_SIGNAL, NOTIFICATION_MAIL, HANDOVER_DISPATCH)


def all_topics() -> list[Topic]:
    """Every topic the hub needs, DLQ and retry topics included (DLQs kept 30 days)."""
    base = [
        POLITIE_REFERRAL,
        POLITIE_DECISION,
        REFERRAL_RECEIVED,
        REFERRAL_DECIDED,
        HANDOVER_REQUESTED,
        HANDOVER_STATUS,
        HANDOVER_DISPATCH,
        VERWIJSINDEX_SIGNAL,
        VERWIJSINDEX_MATCH,
        NOTIFICATION_MAIL,
        *(handover_outbound(r) for r in HANDOVER_RECEIVERS),
        *(handover_answers(r) for r in HANDOVER_RECEIVERS),
    ]
    extra = [
        Topic(t.dlq, retention_ms=30 * DAY_MS, description=f"dead letters of {t.name}") for t in CONSUMED
    ]
    extra += [Topic(t.retry, description=f"parked retries of {t.name}") for t in WITH_RETRY]
    return base + extra


def prefixed(topics: Iterable[Topic], prefix: str) -> list[Topic]:
    """The same topics under a prefix (tests use a unique prefix per test)."""
    return [Topic(prefix + t.name, t.partitions, t.retention_ms, t.description) for t in topics]


def inbox_term(topics: Iterable[Topic] | None = None) -> timedelta:
    """How long a consumer remembers a message id: while any of `topics` (default: the hub's) may
    still hold, and deliver again, the message (the longest retention the hub gives a topic), and a
    week beyond it for the broker's segment roll. A topic kept longer by its operators needs
    `KETENHUB_KAFKA__INBOX_KEEP_DAYS`. A dead letter replayed on its last day has its inbox entry
    removed by the replay anyway."""
    longest = max(t.retention_ms for t in (all_topics() if topics is None else topics))
    return timedelta(milliseconds=longest) + timedelta(days=7)
