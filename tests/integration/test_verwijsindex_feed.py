"""The match feed against a partner that answers broken pages, on both stores, over real HTTP.

One broken match is skipped (the others stored, the cursor past it, an administrator told, nothing
of its values logged); a broken cursor refuses the page whole, with an error that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select

from connectors.verwijsindex.client import VerwijsindexClient
from connectors.verwijsindex.feed import MAX_BACKOFF_S, MAX_RETRY_AFTER_S, MatchFeed, index_of
from hub.clock import today
from hub.errors import PermanentError, TransientError
from hub.metrics import Metrics
from hub.notify.service import list_problems
from hub.signals import store_signal
from hub.signals.matches import read_cursor, write_cursor
from hub.signals.tables import matches
from hub.signals.tables import signals as signal_rows
from hub.spine import add_to_outbox
from hub.store import Store
from hub.store.tables import audit_log, outbox
from tests.helpers.http import serving
from tests.helpers.kafka import wait_for
from tests.integration.test_verwijsindex_connector import a_signal

pytestmark = pytest.mark.integration

TOPIC = "t.verwijsindex.match.v1"
BSN, NAME = "999990044", "Sanne"  # a youth's: never in a log line, a problem or an error
END = "c-0003"


@dataclass
class Partner:
    """A Verwijsindex that answers each `vanaf` with a prepared body; unknown cursors get a 400."""

    pages: dict[str | None, bytes] = field(default_factory=dict)
    asked: list[str | None] = field(default_factory=list)
    gate: asyncio.Event | None = None  # set: answers wait until it opens

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/api/v1/matches")
        async def feed(request: Request) -> Response:
            vanaf = request.query_params.get("vanaf")
            self.asked.append(vanaf)
            if self.gate is not None:
                await self.gate.wait()
            if vanaf not in self.pages:
                return JSONResponse({"titel": "Bad Request", "detail": "unknown cursor"}, status_code=400)
            return Response(self.pages[vanaf], media_type="application/json")

        return app


def page(entries: list[dict[str, Any]], volgende: str) -> bytes:
    """The page as JSON; a NUL or a lone surrogate in a value becomes its \\u escape."""
    return json.dumps({"matches": entries, "volgende": volgende}).encode()


def entry(n: int, signal_id: str) -> dict[str, Any]:
    return {
        "match_id": f"m-{n}",
        "cursor": f"c-{n:04d}",
        "type": "CLIENTMATCH",
        "signaal_id": signal_id,
        "organisatie_code": "halt-den-haag",
        "tegenpartij": {
            "organisatie": {"code": "jeugdhulp-haaglanden", "naam": "Jeugdhulp Haaglanden"},
            "contactpersoon": {"naam": "Kees de Wit", "email": "kees@jeugdhulp.nl"},
        },
        "ontstaan_op": "2026-01-15T09:00:00+00:00",
    }


@pytest.fixture
async def signals(store: Store) -> list[str]:
    """Three of our signals in the store, one per match of the page."""
    ids = [f"sig-{n}-{uuid.uuid4().hex[:8]}" for n in (1, 2, 3)]
    for signal_id in ids:
        async with store.transaction() as session:
            await store_signal(
                session, "t.verwijsindex.signal.v1", a_signal(BSN, signal_id), youth_key=f"yk-{signal_id}",
                user="cw-ilse", transaction_id=str(uuid.uuid4()),
            )  # fmt: skip
    return ids


@pytest.fixture
async def partner() -> AsyncIterator[tuple[Partner, VerwijsindexClient]]:
    vendor = Partner()
    # A long timeout: a gated answer must outwait the deadlines of the test that holds it (a poll
    # given up on would end its transaction and hide one held while waiting for the index).
    async with (
        serving(vendor.app()) as port,
        VerwijsindexClient(f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        yield vendor, client


def a_feed(store: Store, client: VerwijsindexClient) -> MatchFeed:
    return MatchFeed(store, client, topic=TOPIC, interval_s=60, metrics=Metrics())


async def stored(store: Store) -> dict[str, Any]:
    """What the feed left in the store: matches, their messages and audit entries, cursor, problems."""
    async with store.connect() as conn:
        match_ids = set((await conn.execute(select(matches.c.match_id))).scalars())
        messages = (await conn.execute(select(func.count()).where(outbox.c.topic == TOPIC))).scalar()
        audited = (
            await conn.execute(
                select(func.count()).where(audit_log.c.action == "verwijsindex.match_received")
            )
        ).scalar()
        refusals = (
            await conn.execute(
                select(audit_log.c.youth_key, audit_log.c.objects).where(
                    audit_log.c.action == "verwijsindex.match_refused"
                )
            )
        ).all()
    async with store.transaction() as session:
        cursor = await read_cursor(session)
        problems = await list_problems(session)
    return {
        "matches": match_ids,
        "messages": messages,
        "audited": audited,
        "cursor": cursor,
        "problems": problems,
        "refusals_audited": [(r.youth_key, r.objects) for r in refusals],
    }


def refused(feed: MatchFeed) -> float | None:
    assert feed.metrics is not None
    labels = {"topic": TOPIC, "outcome": "refused"}
    return feed.metrics.registry.get_sample_value("ketenhub_messages_total", labels)


def _nul_in_match_id(bad: dict[str, Any]) -> None:
    bad["match_id"] = "m-2\x00"


def _nul_in_a_name(bad: dict[str, Any]) -> None:
    bad["tegenpartij"]["contactpersoon"]["naam"] = f"{NAME}\x00de Vries"


def _lone_surrogate_in_a_name(bad: dict[str, Any]) -> None:
    bad["tegenpartij"]["contactpersoon"]["naam"] = f"{NAME} \ud800"


def _youth_data_outside_the_contract(bad: dict[str, Any]) -> None:
    # A field the contract does not know is ignored (never stored, logged or told); the unknown
    # type is what refuses the entry.
    bad["type"] = "ONBEKEND"
    bad["jeugdige"] = {"bsn": BSN, "voornamen": NAME}


BROKEN_MATCHES = {
    # (break the entry, the field an administrator is told about, the reference kept)
    "nul-in-match-id": (_nul_in_match_id, "match_id", None),
    "nul-in-a-name": (_nul_in_a_name, "name", "m-2"),
    "lone-surrogate-in-a-name": (_lone_surrogate_in_a_name, "naam", "m-2"),
    "youth-data-outside-the-contract": (_youth_data_outside_the_contract, "type", "m-2"),
}


@pytest.mark.parametrize("kind", list(BROKEN_MATCHES))
async def test_a_broken_match_is_skipped_and_the_rest_of_the_page_stored(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient], kind: str
) -> None:
    vendor, client = partner
    brake, problem_field, reference = BROKEN_MATCHES[kind]
    entries = [entry(n, signal_id) for n, signal_id in enumerate(signals, start=1)]
    brake(entries[1])
    vendor.pages = {None: page(entries, END), END: page([], END)}
    feed = a_feed(store, client)

    with structlog.testing.capture_logs() as logs:
        assert await feed.poll_once() == 3

    after = await stored(store)
    assert after["matches"] == {"m-1", "m-3"}
    assert (after["messages"], after["audited"]) == (2, 2)
    assert after["cursor"] == END  # past the broken one
    assert feed.published == 2
    assert refused(feed) == 1
    (problem,) = after["problems"]
    assert problem["kind"] == "match_overgeslagen"
    assert problem["reference"] == reference
    assert problem["caseworkerId"] == "cw-ilse"  # whose signal missed a match
    assert "positie 1" in problem["reason"] and problem_field in problem["reason"]
    # audited on the youth's key: the index told about one of our youths, and it was not passed on
    assert after["refusals_audited"] == [
        (f"yk-{signals[1]}", {"match_id": reference, "signal_id": signals[1]})
    ]
    (warning,) = [line for line in logs if line["log_level"] == "warning"]
    assert warning["position"] == 1 and any(problem_field in p for p in warning["problems"])
    told = json.dumps([logs, after["problems"]], default=str)
    assert BSN not in told and NAME not in told and "\\u0000" not in told and "\\ud800" not in told
    assert "Jansen" not in told  # the surname a_signal stores for our youth

    assert await feed.poll_once() == 0  # the next poll starts after it: not seen again
    assert vendor.asked == [None, END]
    again = await stored(store)
    assert again["matches"] == {"m-1", "m-3"} and len(again["problems"]) == 1
    assert refused(feed) == 1


BROKEN_CURSORS = {
    "nul": ("c-\x00", "contains a control character (such as NUL)"),
    "lone-surrogate": ("c-\ud800", "is no valid Unicode text (a lone surrogate)"),
    "too-long": ("c" * 201, "String should have at most 200 characters"),
}


@pytest.mark.parametrize("kind", list(BROKEN_CURSORS))
async def test_a_broken_cursor_refuses_the_page_whole_and_says_why(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient], kind: str
) -> None:
    vendor, client = partner
    volgende, why = BROKEN_CURSORS[kind]
    vendor.pages = {None: page([entry(1, signals[0]), entry(2, signals[1])], volgende)}
    feed = a_feed(store, client)

    with pytest.raises(PermanentError) as caught:
        await feed.poll_once()
    assert "breaks the contract" in str(caught.value)
    assert f"volgende: {why}" in str(caught.value)

    nothing = {
        "matches": set(), "messages": 0, "audited": 0, "cursor": None, "problems": [], "refusals_audited": []
    }  # fmt: skip
    assert await stored(store) == nothing  # not half-written
    assert feed.published == 0

    # The connector's status says the same, in storable text and without the value.
    running = asyncio.create_task(feed.run())
    try:
        await wait_for(lambda: feed.last_error)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert feed.last_error is not None and f"volgende: {why}" in feed.last_error
    assert feed.last_error.encode("utf-8").decode("utf-8") == feed.last_error  # no lone surrogate
    assert "\x00" not in feed.last_error and "c" * 201 not in feed.last_error
    assert await stored(store) == nothing
    assert vendor.asked == [None, None]  # still from the start: the page is asked for again


UNREADABLE_PAGES = {
    "not-json": (b'{"matches": [', "no JSON"),
    "too-deep": (b'{"matches": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "JSON nested too deeply"),
    "overlong-number": (b'{"matches": [], "volgende": ' + b"7" * 5000 + b"}", "a number of too many digits"),
}


@pytest.mark.parametrize("kind", list(UNREADABLE_PAGES))
async def test_a_page_that_cannot_be_read_is_refused_and_says_why(
    store: Store, partner: tuple[Partner, VerwijsindexClient], kind: str
) -> None:
    """JSON the standard library cannot read (nesting deeper than Python recurses, an integer of
    more than 4,300 digits) is a broken contract like any other, not an unexplained error."""
    vendor, client = partner
    body, why = UNREADABLE_PAGES[kind]
    vendor.pages = {None: body}
    feed = a_feed(store, client)
    with pytest.raises(PermanentError) as caught:
        await feed.poll_once()
    assert str(caught.value).endswith(f"breaks the contract: {why}")
    assert feed.published == 0 and vendor.asked == [None]


@pytest.mark.parametrize(
    "cursor",
    ["", "c-\x00", "c-\ud800", "c" * 201],
    ids=["empty", "nul", "lone-surrogate", "too-long"],
)
async def test_the_store_keeps_no_cursor_it_could_not_send_back(store: Store, cursor: str) -> None:
    with pytest.raises(ValueError, match="feed cursor"):
        async with store.transaction() as session:
            await write_cursor(session, cursor)
    async with store.transaction() as session:
        assert await read_cursor(session) is None


async def test_an_opaque_cursor_is_kept_and_sent_back_as_it_was_handed_out(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient]
) -> None:
    """The cursor is the index's own token: a long one, or one with spaces at its ends, is neither
    refused nor trimmed, or the feed would stop, or ask for the wrong page, for good."""
    vendor, client = partner
    token = " " + "eyJvZmZzZXQiOjN9" * 12 + " "  # 194 characters, padded
    vendor.pages = {None: page([entry(1, signals[0])], token), token: page([], token)}
    feed = a_feed(store, client)
    assert await feed.poll_once() == 1
    async with store.transaction() as session:
        assert await read_cursor(session) == token
    assert await feed.poll_once() == 0
    assert vendor.asked == [None, token]


async def test_a_broken_match_sent_again_is_told_once_and_a_page_that_does_not_move_is_not_followed(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient]
) -> None:
    """An index that hands out the same full page and the same cursor again (a bug on its side)
    is asked at the poll interval, not in a loop, and its broken match is told about once."""
    vendor, client = partner
    entries = [entry(n, signal_id) for n, signal_id in enumerate(signals, start=1)]
    _nul_in_a_name(entries[1])
    vendor.pages = {None: page(entries, END), END: page(entries, END)}
    feed = MatchFeed(store, client, topic=TOPIC, interval_s=60, page_size=3, metrics=Metrics())
    running = asyncio.create_task(feed.run())
    try:
        await wait_for(lambda: len(vendor.asked) >= 2, timeout_s=10)
        await asyncio.sleep(0.3)  # a feed following a page that did not move asks again within ms
        assert vendor.asked == [None, END]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    after = await stored(store)
    assert after["matches"] == {"m-1", "m-3"} and after["cursor"] == END
    assert len(after["problems"]) == 1 and len(after["refusals_audited"]) == 1


async def test_a_slow_index_holds_no_write_transaction_and_a_page_is_taken_once(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient]
) -> None:
    """The poller held a write transaction while it waited for the index: on SQLite, whose one
    writer every component shares, a slow index stopped every write of the hub for up to the
    client's timeout, each poll. Two polls that asked for the same page take it once."""
    vendor, client = partner
    vendor.pages = {None: page([entry(n, s) for n, s in enumerate(signals, start=1)], END)}
    vendor.gate = asyncio.Event()
    feed = a_feed(store, client)
    polls = [asyncio.create_task(feed.poll_once()) for _ in range(2)]
    try:
        # On SQLite both ask and wait for the answer; on PostgreSQL the second finds the poller's
        # lock taken and returns without asking.
        asking = 2 if store.dialect == "sqlite" else 1
        await wait_for(lambda: len(vendor.asked) == asking)
        await wait_for(lambda: sum(p.done() for p in polls) == 2 - asking)
        async with asyncio.timeout(20), store.transaction() as session:  # another component writes
            await add_to_outbox(session, "t.other", b"meanwhile", key="k")
        assert sum(not p.done() for p in polls) == asking
    finally:
        vendor.gate.set()
    assert sorted(await asyncio.gather(*polls)) == [0, 3]  # one took the page, the other saw it taken
    after = await stored(store)
    assert after["matches"] == {"m-1", "m-2", "m-3"} and after["messages"] == 3
    assert after["cursor"] == END


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_quiet_poll_takes_no_write_transaction(
    store: Store, partner: tuple[Partner, VerwijsindexClient]
) -> None:
    """The usual poll finds nothing new: it waits for no writer (SQLite has one for the whole hub)."""
    vendor, client = partner
    async with store.transaction() as session:
        await write_cursor(session, END)
    vendor.pages = {END: page([], END)}
    holding, release = asyncio.Event(), asyncio.Event()

    async def busy_writer() -> None:  # another component's long write transaction
        async with store.transaction():
            holding.set()
            await release.wait()

    writer = asyncio.create_task(busy_writer())
    await holding.wait()
    try:
        assert await asyncio.wait_for(a_feed(store, client).poll_once(), 20) == 0
        assert vendor.asked == [END]
    finally:
        release.set()
        await writer


async def test_a_match_on_a_signal_the_hub_ended_is_audited_as_ignored_and_not_passed_on(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient]
) -> None:
    """The index matched signals the hub had withdrawn or let run out (its withdrawal still on the
    retry ladder, say): the matches were stored and queued, and their caseworkers mailed. Now only
    the match on the active signal goes on; the others are audited on the youth's key as ignored."""
    vendor, client = partner
    withdrawn, ended, _active = signals
    async with store.transaction() as session:
        await session.execute(
            signal_rows.update()
            .where(signal_rows.c.signal_id == withdrawn)
            .values(status="INGETROKKEN_ONTERECHT", withdrawal_reason="ONTERECHT")
        )
        await session.execute(
            signal_rows.update()
            .where(signal_rows.c.signal_id == ended)
            .values(end_date=today() - timedelta(days=1))
        )
    entries = [entry(n, signal_id) for n, signal_id in enumerate(signals, start=1)]
    vendor.pages = {None: page(entries, END), END: page([], END)}
    feed = a_feed(store, client)
    assert await feed.poll_once() == 3

    after = await stored(store)
    assert after["matches"] == {"m-3"}
    assert (after["messages"], after["audited"]) == (1, 1)
    assert after["cursor"] == END and feed.published == 1
    assert after["problems"] == []  # nothing for an administrator to fix
    async with store.connect() as conn:
        ignored = (
            await conn.execute(
                select(audit_log.c.youth_key, audit_log.c.objects)
                .where(audit_log.c.action == "verwijsindex.match_ignored")
                .order_by(audit_log.c.id)
            )
        ).all()
    assert [(r.youth_key, r.objects["match_id"], r.objects["signal_status"]) for r in ignored] == [
        (f"yk-{withdrawn}", "m-1", "INGETROKKEN_ONTERECHT"),
        (f"yk-{ended}", "m-2", "VERLOPEN"),
    ]
    assert BSN not in str([r.objects for r in ignored]) and NAME not in str([r.objects for r in ignored])


async def test_a_feed_pointed_at_another_index_starts_at_its_beginning(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient]
) -> None:
    """The simulator's cursor sent to the real index (configured after a demo) was refused at every
    poll, and no match read again. The cursor is kept with the index that handed it out."""
    vendor, client = partner
    vendor.pages = {None: page([entry(1, signals[0])], "c-0001"), "c-0001": page([], "c-0001")}
    simulator = MatchFeed(store, client, topic=TOPIC, interval_s=60, index=index_of(None))
    assert await simulator.poll_once() == 1  # its cursor now c-0001, the simulator's

    vendor.pages = {None: page([entry(1, signals[0]), entry(2, signals[1])], "r-2"), "r-2": page([], "r-2")}
    real = MatchFeed(store, client, topic=TOPIC, interval_s=60, index=index_of("https://vi.example/api"))
    with structlog.testing.capture_logs() as logs:
        assert await real.poll_once() == 2
    assert vendor.asked[-1] is None  # the new index from its beginning, not c-0001
    assert any("another Verwijsindex" in line["event"] for line in logs)
    after = await stored(store)
    assert after["cursor"] == "r-2" and after["matches"] == {"m-1", "m-2"}
    assert after["messages"] == 2  # m-1, stored already, not passed on again

    # The same index (its address written otherwise) goes on from its own cursor.
    again = MatchFeed(store, client, topic=TOPIC, interval_s=60, index=index_of("https://VI.example/api/"))
    assert await again.poll_once() == 0 and vendor.asked[-1] == "r-2"


async def test_a_cursor_kept_before_its_index_was_is_taken_as_the_configured_indexs(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient]
) -> None:
    vendor, client = partner
    async with store.transaction() as session:
        await write_cursor(session, "c-0001")  # as an earlier version kept it: no index beside it
    vendor.pages = {"c-0001": page([entry(2, signals[1])], "c-0002"), "c-0002": page([], "c-0002")}
    feed = MatchFeed(store, client, topic=TOPIC, interval_s=60, index=index_of("https://vi.example/api"))
    assert await feed.poll_once() == 1 and vendor.asked == ["c-0001"]
    assert await feed.poll_once() == 0 and vendor.asked == ["c-0001", "c-0002"]


async def test_a_cursor_kept_before_its_index_was_and_refused_starts_the_feed_at_the_beginning(
    store: Store, signals: list[str], partner: tuple[Partner, VerwijsindexClient]
) -> None:
    """An install that kept the simulator's cursor with an earlier version, then pointed at the real
    index: the index refuses that cursor (400) at every poll, and no match was read again."""
    vendor, client = partner
    async with store.transaction() as session:
        await write_cursor(session, "1712000000-0000000042")  # the simulator's, no index beside it
    vendor.pages = {None: page([entry(1, signals[0])], "r-1"), "r-1": page([], "r-1")}
    feed = MatchFeed(store, client, topic=TOPIC, interval_s=60, index=index_of("https://vi.example/api"))
    with structlog.testing.capture_logs() as logs:
        assert await feed.poll_once() == 1
    assert vendor.asked == ["1712000000-0000000042", None]
    assert any("refuses the feed's cursor" in line["event"] for line in logs)
    assert await feed.poll_once() == 0 and vendor.asked[-1] == "r-1"  # its own cursor from here on
    again = MatchFeed(store, client, topic=TOPIC, interval_s=60, index=index_of("https://vi.example/api"))
    assert await again.poll_once() == 0 and vendor.asked[-1] == "r-1"  # and kept with its index


class FailingIndex:
    """An index whose feed fails every time: refused (a 400) or rate-limited (429, Retry-After)."""

    def __init__(self, retry_after: float | None) -> None:
        self.retry_after, self.calls = retry_after, 0
        self.first_at: float | None = None  # the loop's time of the first call

    async def matches(self, *_: object) -> tuple[list[Any], str]:
        self.calls += 1
        if self.first_at is None:
            self.first_at = asyncio.get_running_loop().time()
        if self.retry_after is not None:
            raise TransientError(
                "verwijsindex matches: HTTP 429: Too Many Requests", retry_after=self.retry_after
            )
        raise PermanentError("verwijsindex matches: HTTP 400: vanaf is not a cursor this index handed out")


@pytest.mark.parametrize(
    ("retry_after", "at_most"), [(5.0, 1), (None, 5)], ids=["retry-after", "failing-in-a-row"]
)
async def test_a_failing_feed_backs_off(store: Store, retry_after: float | None, at_most: int) -> None:
    """It polled at the interval whatever the index said: through a Retry-After of minutes, and a
    refusal that repeats (2 s apart, for ever). Now it waits the Retry-After, and doubles its wait
    with each failure in a row (0.02, 0.04, 0.08, 0.16 s: five polls in 0.4 s at most, the sixth at
    0.62 s; about 20 before)."""
    index = FailingIndex(retry_after)
    feed = MatchFeed(store, index, topic=TOPIC, interval_s=0.02)  # type: ignore[arg-type]
    running = asyncio.create_task(feed.run())
    try:
        # 0.4 s from the first call (the feed's start on a busy machine is no part of its backoff)
        await wait_for(lambda: index.first_at is not None)
        assert index.first_at is not None
        await asyncio.sleep(index.first_at + 0.4 - asyncio.get_running_loop().time())
        assert 1 <= index.calls <= at_most, index.calls
        assert feed.last_error is not None and "HTTP" in feed.last_error
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert feed.backoff(PermanentError("x"), 30) == MAX_BACKOFF_S  # never longer, but for a Retry-After
    assert feed.backoff(TransientError("x", retry_after=900), 1) == 900
    assert feed.backoff(TransientError("x", retry_after=86_400), 1) == MAX_RETRY_AFTER_S  # not a day


def test_a_feed_is_its_index_and_its_organisations() -> None:
    url = "https://vi.example/api"
    assert index_of(url, "halt-den-haag") != index_of(url, "halt-rotterdam") != index_of(url)
    assert index_of("https://user:secret@VI.example/api/?x=1", "halt-den-haag") == index_of(
        url, "halt-den-haag"
    )
    assert index_of(None) != index_of(url)
