"""The mail connector against a local SMTP server, beside a raw aiokafka + aiosmtplib baseline.

python -m bench.mail [--n 2000] [--smtp thread|process]

N match mails are queued the way the hub queues them (`notify_caseworker`: rendered, in the
outbox, audited) and published to `notification.mail.v1` by the hub's own outbox relay, before
anything is timed; the same records (key, value, headers) are copied to a topic of the baseline.
The SMTP server is the repo's sink (aiosmtpd, mails kept in memory) on its own thread, event loop
and loopback port (`--smtp process`: as its own process, off this process's GIL), the same server
for both runs.

- hub: `Hub` with the `mail` component as `ketenhub run --components mail` wires it (mail
  connector + notifier), SQLite in a temporary directory; timed from `hub.start()` until the SMTP
  server has received the N-th distinct Message-ID.
- baseline: a plain aiokafka consumer in a group reading the copy, sending each mail with aiosmtplib
  (the connector's library) over one kept connection, one mail at a time (the connector's policy:
  one connection behind a lock), committing after each batch. It builds each mail with the same
  `build_message` from the payload, so both put the same bytes on the wire and the ratio shows
  what the hub adds around the send (spine, store, retry ladder, inbox, audit).

Each Message-ID must arrive exactly once, else the run raises.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import aiosmtplib
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, insert, select

from bench.data import bsn
from bench.harness import Result, create, peak_rss_mb
from bench.harness import run as bench_run
from bench.run import SECRET, _row, hub_settings
from bench.smtp_sink import SmtpServer, Tally, make_server
from connectors.mail.component import register_mail
from connectors.mail.message import build_message, message_id_for
from hub.config import Settings
from hub.directory import upsert_caseworker
from hub.embedded import EmbeddedKafka
from hub.kafka import make_producer
from hub.logging import setup_logging
from hub.notify.component import MatchNotice, match_context, register_notify
from hub.notify.service import notify_caseworker
from hub.notify.tables import mail_sent
from hub.runtime import Hub
from hub.signals.service import new_signal_row
from hub.signals.tables import signals
from hub.spine import Relay
from hub.store import Store
from hub.store.tables import outbox
from hub.topics import NOTIFICATION_MAIL
from schemas.caseworker import Caseworker, ContactDetails, Team
from schemas.envelope import new_id, utcnow
from schemas.notification import MailNotification
from schemas.pseudonym import youth_key
from schemas.referral import Gender
from schemas.signal import SignalYouth, VerwijsindexSignal

SENDER = "ketenhub@halt.nl"
Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


# -- the commands: queued by notify, published by the hub's relay, copied for the baseline -------
def caseworkers(count: int = 10) -> list[Caseworker]:
    """The recipients: present Halt-medewerkers (no delegates needed)."""
    return [
        Caseworker(
            caseworker_id=f"cw-bench-{i}",
            name=f"Medewerker {i}",
            email=f"medewerker{i}@halt.nl",
            phone="070 123 4567",
            team=Team.DEN_HAAG,
            meldingsbevoegd=True,
        )
        for i in range(count)
    ]


def match_notice(i: int, caseworker_id: str) -> MatchNotice:
    """The i-th match, as the Verwijsindex connector hands it to the notifier."""
    contact = ContactDetails(
        name="K. Jansen",
        organisation="Jeugdbescherming west",
        email="k.jansen@jbwest.nl",
        phone="070 765 4321",
    )
    return MatchNotice.model_validate(
        {
            "match_id": f"M-{i:07d}",
            "signal_id": f"SIG-{i:07d}",
            "type": "GEZINSMATCH" if i % 5 == 0 else "CLIENTMATCH",
            "counterparts": [contact],
            "caseworker_id": caseworker_id,
        }
    )


def signal_of(i: int, contact: Caseworker) -> VerwijsindexSignal:
    """The i-th match's signal (`match_notice`), active for a year, `contact` its contact."""
    today = utcnow().date()
    return VerwijsindexSignal(
        signal_id=f"SIG-{i:07d}",
        youth=SignalYouth(
            bsn=bsn(i), given_names="Test", surname="Jongere", birth_date=date(2010, 1, 1),
            gender=Gender.MAN, municipality="Den Haag",
        ),
        organisation="Halt Den Haag",
        caseworker=ContactDetails(name=contact.name, organisation="Halt Den Haag", email=contact.email),
        caseworker_id=contact.caseworker_id,
        created=today,
        end_date=today + timedelta(days=365),
        youth_informed_at=today,
        parent_letter_sent_at=today,
    )  # fmt: skip


@dataclass
class Commands:
    """N mail commands on the hub's topic, their copy for the baseline, and what must arrive."""

    db_url: str
    records: list[Record]
    message_ids: set[str]
    recipients: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (address, name)


async def queue_mails(bootstrap: str, topic: str, db_url: str, n: int) -> Commands:
    """Store the caseworkers, queue n match mails through notify_caseworker, publish them with the
    hub's relay (untimed); return the records as published."""
    store = Store(db_url)
    await store.migrate()
    people = caseworkers()
    notification_ids: list[str] = []
    try:
        async with store.transaction() as session:
            for cw in people:
                await upsert_caseworker(session, cw)
        for start in range(0, n, 500):
            async with store.transaction() as session:
                # the signals the matches are on, active, their contact the mail's recipient: a match
                # mail on a signal the hub does not hold (purged) is withheld, not sent
                held = [
                    new_signal_row(signal_of(i, people[i % len(people)]), youth_key(SECRET, bsn(i)))
                    for i in range(start, min(n, start + 500))
                ]
                await session.execute(insert(signals), held)
                for i in range(start, min(n, start + 500)):
                    notice = match_notice(i, people[i % len(people)].caseworker_id)
                    key = youth_key(SECRET, bsn(i))  # the notifier keys match mails by youth
                    mail = await notify_caseworker(
                        session, topic, notice.caseworker_id, "match", match_context(notice), new_id(),
                        case_reference=notice.signal_id, key=key, youth_key=key,
                    )  # fmt: skip
                    assert mail is not None
                    notification_ids.append(mail.notification_id)
        producer = make_producer({"bootstrap_servers": bootstrap})
        await producer.start()
        try:
            relay = Relay(store, producer)
            while await relay.publish_once():
                pass
        finally:
            await producer.stop()
        async with store.connect() as conn:
            q = select(outbox.c.key, outbox.c.value, outbox.c.headers).where(outbox.c.topic == topic)
            rows = (await conn.execute(q.order_by(outbox.c.id))).all()
    finally:
        await store.close()
    records: list[Record] = [
        (r.key.encode() if r.key else None, r.value, [(k, str(v).encode()) for k, v in r.headers.items()])
        for r in rows
    ]
    return Commands(
        db_url,
        records,
        {message_id_for(nid, SENDER) for nid in notification_ids},
        {cw.caseworker_id: (cw.email, cw.name) for cw in people},
    )


async def copy_records(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Produce the records (key, value, headers) to `topic` and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=k, headers=h) for k, v, h in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# -- the two runs -------------------------------------------------------------------------------
@dataclass
class Run:
    """One run's end-to-end result and its steady part (first to last mail)."""

    result: Result
    steady: Result
    check: str


def _run(name: str, n: int, t0: float, tally: Tally, check: str) -> Run:
    assert tally.first_at is not None and tally.last_at is not None
    return Run(
        Result(name, n, tally.last_at - t0),
        Result(f"{name}, first to last mail", n - 1, tally.last_at - tally.first_at),
        check,
    )


async def raw_baseline(bootstrap: str, topic: str, smtp: SmtpServer, commands: Commands) -> Run:
    """Consume the copy in a group, send each mail over one kept aiosmtplib connection, commit after."""
    n = len(commands.records)
    tally = smtp.tally = Tally(commands.message_ids)
    t0 = time.monotonic()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"rawmail{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port, timeout=10)
    await client.connect()

    async def send_all() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=1000)
            for records in batch.values():
                for r in records:
                    mail = MailNotification.model_construct(**json.loads(r.value)["payload"])
                    address, name = commands.recipients[mail.recipient_caseworker_id]
                    msg = build_message(mail, to_addr=address, to_name=name, sender=SENDER, now=utcnow())
                    await client.sendmail(msg.sender, msg.recipients, msg.data)
            if batch:
                await consumer.commit()

    task = asyncio.create_task(send_all())
    try:
        await asyncio.wait_for(_done_or_failed(tally, task), timeout=_timeout(n))
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.quit(), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)
    name = f"raw aiokafka + aiosmtplib, one connection ({smtp.name})"
    return _run(name, n, t0, tally, tally.verify("baseline"))


def _timeout(n: int) -> float:
    return max(120.0, n / 5)  # far below any rate worth measuring


async def _done_or_failed(tally: Tally, task: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(tally.done.wait())
    await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        waiter.cancel()
        task.result()  # raises what stopped the sender
        raise RuntimeError("the sender stopped before every mail arrived")


def _settings(bootstrap: str, db_url: str, prefix: str, smtp_port: int) -> Settings:
    """As bench.run's, with the mail component and the SMTP server."""
    smtp = {"host": "127.0.0.1", "port": smtp_port, "sender": SENDER, "timeout_s": 10}
    return hub_settings(bootstrap, db_url, prefix, ["mail"], smtp=smtp)


async def hub_mail(bootstrap: str, prefix: str, smtp: SmtpServer, commands: Commands) -> Run:
    """Start the hub over the pre-loaded topic; time it until the SMTP server has every mail."""
    n = len(commands.records)
    # As hub/app.py wires `--components mail`: the connector (default retry policy) and the notifier.
    hub = Hub(
        _settings(bootstrap, commands.db_url, prefix, smtp.port),
        registrars={"mail": [register_mail, register_notify]},
    )
    tally = smtp.tally = Tally(commands.message_ids)
    print(f"hub mail run: pid {os.getpid()}, {n:,} mails", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        await hub.start()
        await asyncio.wait_for(tally.done.wait(), timeout=_timeout(n))
    finally:
        await hub.stop()  # before the check: whatever it sends while stopping is counted too
    check = tally.verify("hub")
    store = Store(commands.db_url)
    try:
        async with store.connect() as conn:
            sent = int((await conn.execute(select(func.count()).select_from(mail_sent))).scalar_one())
    finally:
        await store.close()
    if sent != n:
        raise RuntimeError(f"hub: {sent} rows in mail_sent for {n} mails")
    name = f"hub mail connector, sqlite ({smtp.name})"
    return _run(name, n, t0, tally, f"{check}; {sent} rows in mail_sent")


async def mail_runs(kafka: EmbeddedKafka, n: int, smtp_where: str = "thread") -> list[Run]:
    """Baseline, then hub, over the same N commands and the same SMTP server."""
    prefix = f"m{uuid.uuid4().hex[:6]}."
    topic, copy = prefix + NOTIFICATION_MAIL.name, f"rawmail{uuid.uuid4().hex[:6]}.in"
    await create(kafka.bootstrap, topic, copy, partitions=NOTIFICATION_MAIL.partitions)
    smtp = make_server(smtp_where)
    smtp.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db_url = f"sqlite+aiosqlite:///{Path(tmp) / 'mail.db'}"
            commands = await queue_mails(kafka.bootstrap, topic, db_url, n)
            await copy_records(kafka.bootstrap, copy, commands.records)
            raw = await raw_baseline(kafka.bootstrap, copy, smtp, commands)
            smtp.tally = None
            hub = await hub_mail(kafka.bootstrap, prefix, smtp, commands)
            smtp.tally = None
    finally:
        smtp.stop()
    if smtp.strays:
        raise RuntimeError(f"{smtp.strays} mails arrived outside a run")
    return [raw, hub]


async def bench_mail(kafka: EmbeddedKafka, n: int, smtp: str = "thread") -> list[Result]:
    """For bench.run: the baseline and the hub, end to end (start to the N-th mail)."""
    raw, hub = await mail_runs(kafka, n, smtp)
    return [raw.result, hub.result]


async def main() -> None:
    """Run both and print Markdown table rows."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="mails per run (default 2000)")
    p.add_argument(
        "--smtp",
        choices=["thread", "process"],
        default="thread",
        help="run the SMTP sink on a thread of this process (default) or as its own process",
    )
    args = p.parse_args()
    setup_logging("INFO")  # as `ketenhub run` logs
    kafka = EmbeddedKafka()
    kafka.start()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; broker: embedded tansu; SMTP: aiosmtpd sink "
        f"({args.smtp}); n={args.n:,}"
    )
    try:
        raw, hub = await mail_runs(kafka, args.n, args.smtp)
    finally:
        kafka.stop()
    print("| run | records | time | rate | vs raw / latency |\n|---|---|---|---|---|")
    rows = [_row(raw.result), _row(hub.result, raw.result), _row(raw.steady), _row(hub.steady, raw.steady)]
    print("\n".join(rows))
    print(f"{raw.check}\n{hub.check}")
    print(f"peak RSS of the benchmark process (hub, baseline, SMTP sink if a thread): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    bench_run(main())
