"""Operators and dead letters over the API: login, roles, list/show masked, discard, replay, 500 replays."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import insert, select

from hub.embedded import EmbeddedKafka
from hub.ops.api import NOT_KEPT
from hub.ops.auth import COOKIE, add_operator
from hub.ops.console import console_of
from hub.ops.dlq import REPLAYED_FROM
from hub.ops.dlq_records import parse_id
from hub.ops.lag import BrokersUnavailable
from hub.ops.masking import MASK
from hub.ops.tables import dlq_actions
from hub.runtime import Hub
from hub.spine.dlq import DLQ_TOPIC, KEY_PSEUDONYM
from hub.store import Store
from hub.store.tables import audit_log
from schemas.envelope import H_MESSAGE_ID, Envelope
from schemas.pseudonym import youth_key as pseudonym
from tests.conftest import TEST_SECRET, make_settings
from tests.helpers.kafka import headers_of, produce, read_topic, wait_for
from tests.integration.test_ops_lag import (
    IN,
    OUT,
    PASSWORD,
    Cure,
    health_of,
    ops_hub,
    poisonable_echo,
    refusing_address,
)

pytestmark = pytest.mark.integration


def youth_key(name: str) -> str:
    """A key shaped as the hub's own youth keys (64 hex characters, as HMAC-SHA256 gives)."""
    return hashlib.sha256(name.encode()).hexdigest()


async def _depth(client: httpx.AsyncClient, hub: Hub) -> int:
    """Dead letters not yet replayed or discarded; -1 while the health API answers 503 (under load)."""
    health = await health_of(client)
    return -1 if health is None else int(health["dlq_depth"].get(hub.topic(IN.dlq), -1))


async def _depth_now(client: httpx.AsyncClient, hub: Hub) -> int:
    """The depth from the next answer of the health API, waiting out a 503."""
    health = await wait_for(lambda: health_of(client), timeout_s=30)
    return int(health["dlq_depth"].get(hub.topic(IN.dlq), -1))


async def _actions(hub: Hub, prefix: str) -> list[str]:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        rows = await conn.execute(select(audit_log.c.action).where(audit_log.c.action.like(f"{prefix}%")))
        return sorted(rows.scalars())


async def test_anonymous_and_viewers_are_kept_out(kafka: EmbeddedKafka, db_url: str, unique: str) -> None:
    async with ops_hub(make_settings(kafka, db_url, unique)) as (hub, client):
        assert hub.store is not None
        await add_operator(hub.store, "vera", PASSWORD, "viewer")
        anon = httpx.AsyncClient(transport=client._transport, base_url="http://hub")
        assert (await anon.get("/ops/api/health")).status_code == 401
        assert (await anon.get("/ops/api/dlq")).json()["status"] == 401
        # a cookie whose signature is not ASCII (a raw byte \xe9): comparing it raised TypeError, a 500
        for cookie in (b"ketenhub_ops=abc.\xe9", b"ketenhub_ops=abc.%C3%A9"):
            odd = await anon.get("/ops/api/health", headers={"Cookie": cookie})
            assert odd.status_code == 401, (cookie, odd.status_code)
        page = await anon.get("/ops/")
        assert page.status_code == 303 and page.headers["location"] == "/ops/login"
        bad = await anon.post("/ops/login", json={"username": "vera", "password": "wrong password!"})
        assert bad.status_code == 401
        # not a JSON object, or JSON Python cannot read (an integer of 5,000 digits, nesting deeper
        # than it recurses): a 400, each was a 500
        too_long, too_deep = b'{"username": ' + b"7" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000
        for body in (b"\x00", b"[]", b'"vera"', too_long, too_deep):
            broken = await anon.post("/ops/login", content=body, headers={"content-type": "application/json"})
            assert broken.status_code == 400 and broken.json()["status"] == 400
        for name in ("vera\x00", "ve\x1bra"):  # no operator has such a name; PostgreSQL answered 500
            odd = await anon.post("/ops/login", json={"username": name, "password": PASSWORD})
            assert odd.status_code == 401
        lone_surrogates = (
            b'{"username": "\\ud800", "password": "x"}',
            b'{"username": "vera", "password": "\\ud800"}',
        )
        for raw in lone_surrogates:
            lone = await anon.post("/ops/login", content=raw, headers={"content-type": "application/json"})
            assert lone.status_code == 401  # a lone surrogate could not be looked up: it was a 500
        half_form = await anon.post("/ops/login", data={"password": PASSWORD})  # a redirect, not a 400
        assert half_form.status_code == 400
        form = await anon.post("/ops/login", data={"username": "vera", "password": PASSWORD})
        assert form.status_code == 303
        cookie = form.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        await wait_for(lambda: health_of(anon), timeout_s=30)  # a 200 (a 503 under load is waited out)
        assert (await anon.get("/ops/api/dlq")).status_code == 403  # viewers see health only
        assert (await anon.get("/ops/")).status_code == 200
        token = anon.cookies[COOKIE]
        anon.cookies.set(COOKIE, token[:-2] + ("00" if not token.endswith("00") else "11"))
        assert (await anon.get("/ops/api/health")).status_code == 401  # a tampered signature
        anon.cookies.set(COOKIE, token)
        await anon.post("/ops/logout")
        anon.cookies.set(COOKIE, token)
        assert (await anon.get("/ops/api/health")).status_code == 401  # the session ended server side


@pytest.mark.timeout(240)  # its own deadlines add up to 110 s, near the suite's 120 s
async def test_dead_letters_listed_masked_discarded_and_replayed(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        assert hub.store is not None
        youth = {"bsn": "111222333", "naam": "Jan Jansen", "note": "mail jan@example.nl of bel 0612345678"}
        poisons = [Envelope(type="T", payload={"n": i, "poison": True, "youth": youth}) for i in range(3)]
        await produce(
            kafka.bootstrap, hub.topic(IN.name), [(b"key-a", e.to_bytes(), e.headers()) for e in poisons]
        )
        await wait_for(lambda: _is(_depth(client, hub), 3), timeout_s=30)
        listed = (await client.get("/ops/api/dlq", params={"error_class": "ValueError"})).json()
        assert listed["total"] == 3
        # times without an offset are Dutch local time; compared with the letters' own they were a 500
        for since, until, expect in (("2020-01-01T00:00:00", None, 3), (None, "2020-01-01", 0)):
            params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
            naive = await client.get("/ops/api/dlq", params=params)
            assert naive.status_code == 200 and naive.json()["total"] == expect, (params, naive.text)
        nothing = await client.post("/ops/api/dlq/replay", json={"until": "2000-01-01T00:00:00"})
        assert nothing.status_code == 202 and nothing.json()["total"] == 0, nothing.text
        # A number is no moment: read as seconds since 1970, `until=9` listed nothing and a replay of
        # `{"since": 9}` replayed every letter. Refused, whatever the way it is given.
        for number in ("9", "1700000000", "1.5e9", " 12 "):
            listing = await client.get("/ops/api/dlq", params={"until": number})
            assert listing.status_code == 400 and "not a number" in listing.text, (number, listing.text)
        for body in ({"since": 9}, {"since": "9"}, {"until": 1.5}):
            searched = await client.post("/ops/api/dlq/search", json=body)
            assert searched.status_code == 400 and "not a number" in searched.text, (body, searched.text)
            replay = await client.post("/ops/api/dlq/replay", json=body)
            assert replay.status_code == 400 and "not a number" in replay.text, (body, replay.text)
        assert (await client.get("/ops/api/dlq", params={"error_class": "ValueError"})).json()["total"] == 3
        first = listed["items"][0]
        assert first["original_topic"] == hub.topic(IN.name) and first["key"] == MASK  # not a youth key
        shown = (await client.get(f"/ops/api/dlq/{first['id']}")).json()
        assert shown["headers"]["dlq-exception-message"] == "poison payload"
        text = str(shown["payload"])
        for secret in ("111222333", "Jan Jansen", "jan@example.nl", "0612345678"):
            assert secret not in text
        assert (await client.get(f"/ops/api/dlq/{first['id']}", params={"unmask": True})).status_code == 403
        await add_operator(hub.store, "pia", PASSWORD, "privacy_officer")
        privacy = httpx.AsyncClient(transport=client._transport, base_url="http://hub")
        await privacy.post("/ops/login", json={"username": "pia", "password": PASSWORD})
        plain = (await privacy.get(f"/ops/api/dlq/{first['id']}", params={"unmask": True})).json()
        assert plain["payload"]["payload"]["youth"]["bsn"] == "111222333"
        assert await _actions(hub, "dlq.viewed") == ["dlq.viewed", "dlq.viewed_unmasked"]  # masked too

        second, third = listed["items"][1]["id"], listed["items"][2]["id"]
        r = await client.post(f"/ops/api/dlq/{second}/discard", json={"reason": "test data, not needed"})
        assert r.json()["status"] == "discarded"
        assert (
            await client.post(f"/ops/api/dlq/{second}/discard", json={"reason": "again"})
        ).status_code == 409
        assert await _depth(client, hub) == 2 or await wait_for(lambda: _is(_depth(client, hub), 2))

        cure.fixed = True
        job = (await client.post(f"/ops/api/dlq/{third}/replay")).json()
        await wait_for(lambda: _job_done(client, job["id"]))
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=1, settle_s=0.3)
        assert [Envelope.from_bytes(r.value).payload["n"] for r in out] == [poisons[2].payload["n"]]
        assert Envelope.from_bytes(out[0].value).transaction_id == poisons[2].transaction_id
        await wait_for(lambda: _is(_depth(client, hub), 1))
        assert await _actions(hub, "dlq.") == [
            "dlq.discarded",
            "dlq.replayed",
            "dlq.viewed",
            "dlq.viewed_unmasked",
        ]
        timeline = (await client.get("/ops/api/timeline", params={"id": poisons[2].transaction_id})).json()
        assert "dlq.replayed" in [e["action"] for e in timeline["events"]]
        by_letter = (await client.get("/ops/api/timeline", params={"id": first["id"]})).json()
        assert "dlq.viewed_unmasked" in [e["action"] for e in by_letter["events"]]  # found in objects
        for wild in ("%%%", "_" * 36):  # LIKE's wildcards are taken as they are: they matched every entry
            found = (await client.get("/ops/api/timeline", params={"id": wild})).json()
            assert found["events"] == [], wild
        assert await _actions(hub, "audit.") == ["audit.timeline_read"] * 4  # who read whose case: audited


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def _job_done(client: httpx.AsyncClient, job_id: str) -> bool:
    return (await client.get(f"/ops/api/jobs/{job_id}")).json()["state"] == "done"


@pytest.mark.timeout(360)  # its own deadlines add up to 230 s
async def test_replay_of_500_dead_letters_processes_each_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        sent = [Envelope(type="T", payload={"n": i, "poison": True}) for i in range(500)]
        await produce(
            kafka.bootstrap,
            hub.topic(IN.name),
            [(f"k{i % 7}".encode(), e.to_bytes(), e.headers()) for i, e in enumerate(sent)],
        )
        await wait_for(lambda: _is(_depth(client, hub), 500), timeout_s=60, interval_s=0.3)
        cure.fixed = True  # the cause is fixed
        job = (await client.post("/ops/api/dlq/replay", json={"all": True})).json()
        assert job["total"] == 500
        await wait_for(lambda: _job_done(client, job["id"]), timeout_s=60, interval_s=0.2)
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=500, timeout_s=60, settle_s=0.5)
        assert sorted(Envelope.from_bytes(r.value).payload["n"] for r in out) == list(range(500))
        dead = await read_topic(kafka.bootstrap, hub.topic(IN.dlq), expect=500, settle_s=0.3)
        assert len(dead) == 500  # none came back
        assert await _depth_now(client, hub) == 0
        again = (await client.post("/ops/api/dlq/replay", json={"all": True})).json()
        assert again["total"] == 0


@pytest.mark.timeout(240)  # its own deadlines add up to 140 s
async def test_a_dead_letter_with_unusable_id_headers_is_replayed_like_any_other(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A record dead-lettered for its message-id header (a NUL, which PostgreSQL cannot store; bytes
    that are not UTF-8, kept on the letter as U+FFFD) keeps that header on its dead letter: replaying
    it must neither use it as an inbox key nor fail the rest of its batch; its copy goes with a
    message id made from the letter's id, so it is processed this time (with the U+FFFD kept, the
    copy was dead-lettered again at every replay). A letter that cannot be replayed is counted, and
    the batch goes on. (An unusable transaction-id header is replaced on the dead letter by the id
    the consumer used, rule 19, so its replay goes through.)"""
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        sent = [Envelope(type="T", payload={"n": i, "poison": True}) for i in range(4)]
        bad_headers = [
            {"message-id": b"m\x00id"},
            {"transaction-id": b"t\x00x"},
            {},
            {"message-id": b"m\xe9id"},
        ]
        records = [
            (b"k", e.to_bytes(), list((dict(e.headers()) | bad).items()))
            for e, bad in zip(sent, bad_headers, strict=True)
        ]
        await produce(kafka.bootstrap, hub.topic(IN.name), records)
        await wait_for(lambda: _is(_depth(client, hub), 4), timeout_s=30)
        # and one written to the DLQ by hand, without the header naming where to replay it
        await produce(kafka.bootstrap, hub.topic(IN.dlq), [(b"k", sent[0].to_bytes(), [])])
        await wait_for(lambda: _is(_depth(client, hub), 5), timeout_s=30)
        cure.fixed = True
        job = (await client.post("/ops/api/dlq/replay", json={"all": True})).json()
        await wait_for(lambda: _job_done(client, job["id"]), timeout_s=30)
        done = (await client.get(f"/ops/api/jobs/{job['id']}")).json()
        assert (done["total"], done["done"], done["failed"], done["error"]) == (5, 4, 1, None)
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=4, settle_s=0.3)
        assert sorted(Envelope.from_bytes(r.value).payload["n"] for r in out) == [0, 1, 2, 3]
        # the one that could not be replayed stays open
        await wait_for(lambda: _is(_depth(client, hub), 1), timeout_s=30)
        assert await _actions(hub, "dlq.replayed") == ["dlq.replayed"] * 4


async def test_a_letter_kept_under_a_bsn_key_is_replayed_under_its_pseudonym(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A letter written before the spine kept no BSN as a key (or by another tool) holds its
    sender's BSN key: its replayed copy went out under that BSN, now under the youth key."""
    bsn, cure = "111222333", Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        sent = Envelope(type="T", payload={"n": 1})
        where = [(DLQ_TOPIC, hub.topic(IN.name).encode())]
        await produce(
            kafka.bootstrap, hub.topic(IN.dlq), [(bsn.encode(), sent.to_bytes(), [*sent.headers(), *where])]
        )
        await wait_for(lambda: _is(_depth(client, hub), 1), timeout_s=30)
        cure.fixed = True
        job = (await client.post("/ops/api/dlq/replay", json={"all": True})).json()
        await wait_for(lambda: _job_done(client, job["id"]), timeout_s=30)
        [copy] = await read_topic(kafka.bootstrap, hub.topic(IN.name), expect=1)
        assert REPLAYED_FROM in headers_of(copy)
        assert copy.key == pseudonym(TEST_SECRET, bsn).encode() and bsn.encode() not in copy.key
        assert headers_of(copy)[KEY_PSEUDONYM] == "bsn"


@pytest.mark.timeout(240)  # its own deadlines add up to 120 s
async def test_a_listing_holds_no_payloads_and_a_replay_reads_those_it_replays(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A list of dead letters read every payload (60 of 900 KB: 58 MB for GET /ops/api/dlq?limit=1)."""
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        sent = [Envelope(type="T", payload={"n": i, "poison": True, "pad": "p" * 200_000}) for i in range(3)]
        keys = [youth_key(f"key-{i}") for i in range(3)]
        records = [(keys[i].encode(), e.to_bytes(), e.headers()) for i, e in enumerate(sent)]
        await produce(kafka.bootstrap, hub.topic(IN.name), records)
        await wait_for(lambda: _is(_depth(client, hub), 3), timeout_s=30)
        letters = console_of(hub).dead_letters
        listed = await letters.find()
        assert len(listed) == 3 and all(d.payload is None for d in listed)
        with pytest.raises(LookupError):
            _ = listed[0].value
        one = await letters.get(listed[0].id)
        assert one is not None and one.key is not None
        assert Envelope.from_bytes(one.value).payload == sent[keys.index(one.key)].payload

        cure.fixed = True
        job = (await client.post("/ops/api/dlq/replay", json={"key": keys[1]})).json()
        assert job["total"] == 1
        await wait_for(lambda: _job_done(client, job["id"]))
        rest = (await client.post("/ops/api/dlq/replay", json={"all": True})).json()
        assert rest["total"] == 2
        await wait_for(lambda: _job_done(client, rest["id"]))
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=3, settle_s=0.5)
        echoed = [Envelope.from_bytes(r.value).payload for r in out]
        assert sorted(p["n"] for p in echoed) == [0, 1, 2]  # each once, whole
        assert all(p == sent[p["n"]].payload for p in echoed)
        assert await _depth_now(client, hub) == 0


async def _logged_in(client: httpx.AsyncClient, username: str) -> httpx.AsyncClient:
    other = httpx.AsyncClient(transport=client._transport, base_url="http://hub")
    r = await other.post("/ops/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return other


@pytest.mark.timeout(240)  # its own deadlines add up to 90 s
async def test_a_dead_letter_key_is_shown_and_searched_only_when_it_is_a_youth_key(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A dead letter's key was whatever its sender used: a BSN was shown to every operator, and an
    operator could find a person's letters by it. (The spine now writes such a letter under the
    key's pseudonym; one written before that, or by another tool, still holds the BSN.)"""
    bsn, youth = "111222333", youth_key("youth")
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(Cure())) as (hub, client):
        assert hub.store is not None
        person = {"voornaam": "Jan", "voorvoegsel": "van der", "achternaam": "Berg"}
        sent = [Envelope(type="T", payload={"n": i, "poison": True, "youth": person}) for i in range(2)]
        await produce(
            kafka.bootstrap, hub.topic(IN.name), [(youth.encode(), sent[1].to_bytes(), sent[1].headers())]
        )
        await produce(
            kafka.bootstrap, hub.topic(IN.dlq), [(bsn.encode(), sent[0].to_bytes(), sent[0].headers())]
        )
        await wait_for(lambda: _is(_depth(client, hub), 2), timeout_s=30)

        listed = await client.get("/ops/api/dlq")
        assert bsn not in listed.text
        keys = {d["key"]: d["id"] for d in listed.json()["items"]}
        assert keys.keys() == {MASK, youth}
        by_bsn = await client.post("/ops/api/dlq/search", json={"key": bsn})
        assert by_bsn.status_code == 403 and bsn not in by_bsn.text
        assert (await client.post("/ops/api/dlq/replay", json={"key": bsn})).status_code == 403
        by_youth = (await client.get("/ops/api/dlq", params={"key": youth})).json()
        assert [d["id"] for d in by_youth["items"]] == [keys[youth]]
        shown = await client.get(f"/ops/api/dlq/{keys[MASK]}")
        assert shown.json()["key"] == MASK
        for secret in (bsn, "van der"):  # a surname prefix is name data, as tussenvoegsel
            assert secret not in shown.text, secret

        await add_operator(hub.store, "pia", PASSWORD, "privacy_officer")
        privacy = await _logged_in(client, "pia")
        assert (await privacy.get(f"/ops/api/dlq/{keys[MASK]}")).json()["key"] == MASK
        plain = (await privacy.get(f"/ops/api/dlq/{keys[MASK]}", params={"unmask": True})).json()
        assert plain["key"] == bsn  # unmasked, and audited
        # a BSN in a URL is kept in access logs and browser history: the key goes in the body
        in_url = await privacy.get("/ops/api/dlq", params={"key": bsn})
        assert in_url.status_code == 400 and "POST /ops/api/dlq/search" in in_url.json()["detail"]
        assert bsn not in in_url.text
        found = await privacy.post("/ops/api/dlq/search", json={"key": bsn})
        assert found.status_code == 200 and bsn not in found.text
        assert [d["id"] for d in found.json()["items"]] == [keys[MASK]]
        assert await _actions(hub, "dlq.") == [
            "dlq.searched_by_key",
            "dlq.viewed",  # the operator's masked view
            "dlq.viewed",  # the privacy officer's masked view
            "dlq.viewed_unmasked",
        ]
        async with hub.store.connect() as conn:
            audited = (await conn.execute(select(audit_log.c.objects, audit_log.c.youth_key))).all()
        assert bsn not in str(audited)  # the audit log, kept for years, holds no BSN
        assert keys[MASK] in str(audited)
        # ... but it names the youth by the key of that BSN, as a subject-access export looks them up
        # (rule 20): the search by it, and the privacy officer's views of the letter it keyed
        async with hub.store.connect() as conn:
            by_action = (
                await conn.execute(
                    select(audit_log.c.action, audit_log.c.user, audit_log.c.youth_key).where(
                        audit_log.c.action.like("dlq.%")
                    )
                )
            ).all()
        of_the_bsn = pseudonym(TEST_SECRET, bsn)
        assert sorted((a, y) for a, u, y in by_action if u == "pia") == [
            ("dlq.searched_by_key", of_the_bsn),
            ("dlq.viewed", of_the_bsn),
            ("dlq.viewed_unmasked", of_the_bsn),
        ]


@pytest.mark.timeout(240)  # its own deadlines add up to 90 s
async def test_a_search_and_a_replay_by_a_bsn_find_the_letters_filed_under_its_pseudonym(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The spine files the letter of a record keyed by a BSN under that BSN's youth key: a privacy
    officer's search by the BSN, as its sender keyed it, found none (audited as finding none), and a
    replay by it replayed none. A letter written before, still under the BSN itself, is found too."""
    bsn, other, cure = "111222333", "123456782", Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        assert hub.store is not None
        filed = [Envelope(type="T", payload={"n": n, "poison": True}) for n in (0, 2)]
        records = [
            (key.encode(), e.to_bytes(), e.headers()) for key, e in zip((bsn, other), filed, strict=True)
        ]
        await produce(kafka.bootstrap, hub.topic(IN.name), records)
        kept = Envelope(type="T", payload={"n": 1})
        where = [(DLQ_TOPIC, hub.topic(IN.name).encode())]
        await produce(
            kafka.bootstrap, hub.topic(IN.dlq), [(bsn.encode(), kept.to_bytes(), [*kept.headers(), *where])]
        )
        await wait_for(lambda: _is(_depth(client, hub), 3), timeout_s=30)
        keys = {d["id"]: d["key"] for d in (await client.get("/ops/api/dlq")).json()["items"]}
        assert sorted(keys.values()) == sorted(
            [pseudonym(TEST_SECRET, bsn), pseudonym(TEST_SECRET, other), MASK]
        )

        await add_operator(hub.store, "pia", PASSWORD, "privacy_officer")
        privacy = await _logged_in(client, "pia")
        found = await privacy.post("/ops/api/dlq/search", json={"key": bsn})
        assert found.status_code == 200 and bsn not in found.text
        assert found.json()["total"] == 2
        ids = {d["id"] for d in found.json()["items"]}
        assert {keys[i] for i in ids} == {pseudonym(TEST_SECRET, bsn), MASK}
        async with hub.store.connect() as conn:
            query = select(audit_log.c.objects, audit_log.c.youth_key)
            [(objects, youth)] = (
                await conn.execute(query.where(audit_log.c.action == "dlq.searched_by_key"))
            ).all()
        assert objects["found"] == 2 and set(objects["dead_letters"]) == ids
        assert youth == pseudonym(TEST_SECRET, bsn) and bsn not in str(objects)

        cure.fixed = True
        job = (await privacy.post("/ops/api/dlq/replay", json={"key": bsn})).json()
        assert job["total"] == 2 and job["filter"] == "open dead letters with key=(not kept)"
        await wait_for(lambda: _job_done(privacy, job["id"]), timeout_s=30)
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=2, settle_s=0.3)
        assert sorted(Envelope.from_bytes(r.value).payload["n"] for r in out) == [0, 1]
        await wait_for(lambda: _is(_depth(client, hub), 1), timeout_s=30)  # the other youth's stays


@pytest.mark.timeout(240)  # its own deadlines add up to 30 s
async def test_the_masked_view_shows_no_personal_data_in_headers_nesting_free_text_or_non_json(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The masked view of a dead letter showed a partner's own headers as they came, a name split
    in parts under a personal key, a name and an address in free text, and a record that is not JSON
    (a police record written with single quotes) as it was."""
    story = "Jan de Vries (15) uit de Laan van Meerdervoort 12"
    letter = Envelope(
        type="T",
        payload={
            "poison": True,
            "melder": {"naam": {"eerste": "Piet", "laatste": "Pietersen"}},
            "omschrijving": story,
            "feitcode": "F350",
            "huisnummer": 1,
        },
    )
    broken = b"{'naam': 'Jan Jansen', 'bsn': '111222333'}"
    own = [("x-partner-jongere", b"Jan de Vries"), ("x-partner-bsn", b"111222333")]
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(Cure())) as (hub, client):
        assert hub.store is not None
        records = [(b"k", letter.to_bytes(), [*letter.headers(), *own]), (b"k", broken, own)]
        await produce(kafka.bootstrap, hub.topic(IN.name), records)
        await wait_for(lambda: _is(_depth(client, hub), 2), timeout_s=30)
        ids = [d["id"] for d in (await client.get("/ops/api/dlq")).json()["items"]]
        enveloped, raw = [(await client.get(f"/ops/api/dlq/{i}")).json() for i in ids]
        for shown in (enveloped, raw):
            text = str(shown)
            for secret in ("Piet", "Jan", "Vries", "Meerdervoort", "111222333"):
                assert secret not in text, (secret, shown)
            assert shown["masked"] and shown["headers"]["x-partner-jongere"] == MASK
            assert shown["headers"]["dlq-original-topic"] == hub.topic(IN.name)
        assert enveloped["headers"][H_MESSAGE_ID] == letter.message_id
        assert enveloped["headers"]["dlq-exception-message"] == "poison payload"
        payload = enveloped["payload"]["payload"]
        assert payload["melder"] == {"naam": {"eerste": MASK, "laatste": MASK}}
        assert payload["omschrijving"] == f"{MASK} (text, {len(story)} characters)"
        assert (payload["feitcode"], payload["huisnummer"], payload["poison"]) == ("F350", MASK, True)
        assert raw["payload"].startswith(f"{MASK} (not JSON: ") and f"{len(broken)} bytes" in raw["payload"]

        await add_operator(hub.store, "pia", PASSWORD, "privacy_officer")
        privacy = await _logged_in(client, "pia")
        plain = (await privacy.get(f"/ops/api/dlq/{ids[1]}", params={"unmask": True})).json()
        assert plain["payload"] == broken.decode() and plain["headers"]["x-partner-bsn"] == "111222333"


@pytest.mark.timeout(240)
async def test_dead_letters_answer_503_while_the_brokers_refuse(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A broker that refused connections gave a 500 (the client's start raised outside the try)."""
    async with ops_hub(make_settings(kafka, db_url, unique)) as (hub, client):
        dead_letters = console_of(hub).dead_letters
        letter = f"{hub.topic(IN.dlq)}:0:0"
        with refusing_address() as refused:
            dead_letters.options["bootstrap_servers"] = refused
            with pytest.raises(BrokersUnavailable, match="Unable to bootstrap"):
                await dead_letters.find()
            for answer in (
                await client.get("/ops/api/dlq"),
                await client.get(f"/ops/api/dlq/{letter}"),
                await client.post(f"/ops/api/dlq/{letter}/replay"),
                await client.post("/ops/api/dlq/replay", json={"all": True}),
            ):
                assert answer.status_code == 503 and answer.headers["Retry-After"], answer.text
                assert answer.json()["status"] == 503
                # what is down, not the partners' "nothing was stored"
                said = answer.json()["detail"]
                assert "dead letters not read" in said and "Unable to bootstrap" in said, said
                assert "niets opgeslagen" not in said
            # refused before any broker is asked (it was sought for 15 s): a 404, not a 503
            for beyond in (f"{hub.topic(IN.dlq)}:0:{2**70}", f"{hub.topic(IN.dlq)}:{2**31}:0"):
                assert (await client.get(f"/ops/api/dlq/{beyond}")).status_code == 404, beyond


async def test_a_read_of_the_dead_letters_that_stops_short_says_so_rather_than_listing_a_part(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read ended at its deadline and returned what it had: a list showed part of the letters,
    and a "replay all" said done over part of them."""
    import hub.ops.dlq_records as records

    async with ops_hub(make_settings(kafka, db_url, unique)) as (hub, client):
        dead_letters = console_of(hub).dead_letters
        assert await dead_letters.find() == []  # read to the end of every partition: none yet
        monkeypatch.setattr(records, "IDLE_S", 0.0)  # no time to reach any partition's end
        with pytest.raises(BrokersUnavailable, match="gave nothing for 0 s before their end"):
            await dead_letters.find()
        answer = await client.get("/ops/api/dlq")
        assert answer.status_code == 503 and answer.headers["Retry-After"]  # not a 200 with a part


def test_a_dead_letter_id_past_kafkas_range_is_malformed() -> None:
    assert parse_id(f"a.b.dlq.v1:{2**31 - 1}:{2**63 - 1}") == ("a.b.dlq.v1", 2**31 - 1, 2**63 - 1)
    assert parse_id("t:x:1:2") == ("t:x", 1, 2)
    for bad in ("42", "t:1", ":1:2", "t:-1:2", "t:1:-2", f"t:{2**31}:0", f"t:0:{2**63}", "t:0:+1", "t:١:1"):
        with pytest.raises(ValueError, match="dead-letter id"):
            parse_id(bad)


@pytest.mark.timeout(240)  # its own deadlines add up to 110 s
async def test_a_repeated_replay_of_a_letter_without_message_id_is_processed_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A record sent without a message-id header is keyed by its position; its replay copy went out
    without one too, so each repeat of it (the relay publishes at least once) was processed again."""
    cure, key = Cure(), youth_key("one youth").encode()  # one key: one partition, in order
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        anonymous, named = (Envelope(type="T", payload={"n": i, "poison": True}) for i in range(2))
        records = [(key, anonymous.to_bytes(), []), (key, named.to_bytes(), named.headers())]
        await produce(kafka.bootstrap, hub.topic(IN.name), records)
        await wait_for(lambda: _is(_depth(client, hub), 2), timeout_s=30)
        letters = {d["message_id"]: d["id"] for d in (await client.get("/ops/api/dlq")).json()["items"]}
        assert letters.keys() == {None, named.message_id}

        cure.fixed = True
        job = (await client.post("/ops/api/dlq/replay", json={"all": True})).json()
        await wait_for(lambda: _job_done(client, job["id"]), timeout_s=30)
        into = await read_topic(kafka.bootstrap, hub.topic(IN.name), expect=4)
        copies = [r for r in into if REPLAYED_FROM in headers_of(r)]
        ids = {headers_of(r)[REPLAYED_FROM]: headers_of(r).get(H_MESSAGE_ID) for r in copies}
        # the letter's own id where it had none; a message id it had is kept (its inbox row is cleared)
        assert ids == {letters[None]: letters[None], letters[named.message_id]: named.message_id}

        # the relay publishes each copy again (a crash before it marked them sent), then a new message
        sentinel = Envelope(type="T", payload={"n": 99})
        again = [(r.key, r.value, list(r.headers)) for r in copies]
        await produce(
            kafka.bootstrap, hub.topic(IN.name), [*again, (key, sentinel.to_bytes(), sentinel.headers())]
        )
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=3, settle_s=0.5)
        assert sorted(Envelope.from_bytes(r.value).payload["n"] for r in out) == [0, 1, 99]


async def test_a_second_copy_of_a_dead_letter_is_not_replayed_after_the_first_was_processed(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The relay publishes at least once: one failed record can stand on the DLQ twice. Replaying the
    second copy after the first was processed cleared the processed message's inbox row, and the
    message ran again."""
    cure, key = Cure(), youth_key("one youth").encode()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        poisoned = Envelope(type="T", payload={"n": 1, "poison": True})
        await produce(kafka.bootstrap, hub.topic(IN.name), [(key, poisoned.to_bytes(), poisoned.headers())])
        [letter] = await read_topic(kafka.bootstrap, hub.topic(IN.dlq), expect=1)
        # the relay publishing the dead letter again (a crash before it marked it sent)
        await produce(kafka.bootstrap, hub.topic(IN.dlq), [(letter.key, letter.value, list(letter.headers))])
        await wait_for(lambda: _is(_depth(client, hub), 2), timeout_s=30)
        first, second = sorted(
            (d["id"] for d in (await client.get("/ops/api/dlq")).json()["items"]), key=parse_id
        )
        cure.fixed = True
        job = (await client.post(f"/ops/api/dlq/{first}/replay")).json()
        await wait_for(lambda: _job_done(client, job["id"]), timeout_s=30)
        await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=1)  # processed

        assert await _replayed(client, second) == (0, 1)  # (done, skipped)
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=2, settle_s=1.0)
        assert [Envelope.from_bytes(r.value).payload["n"] for r in out] == [1]  # once
        shown = (await client.get(f"/ops/api/dlq/{second}")).json()
        assert shown["status"] == "discarded"


async def _replayed(client: httpx.AsyncClient, letter_id: str) -> tuple[int, int]:
    """Replay one letter through the console's API and wait for its job: (done, skipped)."""
    job = (await client.post(f"/ops/api/dlq/{letter_id}/replay")).json()
    await wait_for(lambda: _job_done(client, job["id"]), timeout_s=30)
    progress = (await client.get(f"/ops/api/jobs/{job['id']}")).json()
    return progress["done"], progress["skipped"]


async def _two_copies(
    kafka: EmbeddedKafka, hub: Hub, client: httpx.AsyncClient
) -> tuple[ConsumerRecord[Any, Any], str, str]:
    """One poisoned record dead-lettered, and its letter published again as the relay does after a
    crash before it marked it sent: (the letter as read, the first letter's id, the copy's id)."""
    key = youth_key("one youth").encode()
    poisoned = Envelope(type="T", payload={"n": 1, "poison": True})
    await produce(kafka.bootstrap, hub.topic(IN.name), [(key, poisoned.to_bytes(), poisoned.headers())])
    [letter] = await read_topic(kafka.bootstrap, hub.topic(IN.dlq), expect=1)
    await produce(kafka.bootstrap, hub.topic(IN.dlq), [(letter.key, letter.value, list(letter.headers))])
    await wait_for(lambda: _is(_depth(client, hub), 2), timeout_s=30)
    listed = sorted((await client.get("/ops/api/dlq")).json()["items"], key=lambda d: parse_id(d["id"]))
    assert [d["copy_of"] for d in listed] == [None, listed[0]["id"]]  # the list says which is a copy
    return letter, listed[0]["id"], listed[1]["id"]


async def test_discarding_a_letter_drops_its_message_and_no_copy_of_it_is_replayed(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """An operator discarded a letter on purpose; the relay had published it twice, and "replay all"
    later replayed the copy: the message dropped was processed after all."""
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        letter, first, second = await _two_copies(kafka, hub, client)
        # an operator's reason may read as the hub's own for a copy: what the discard was is no text
        reason = "A copy of dead letter test data, not needed"
        r = await client.post(f"/ops/api/dlq/{first}/discard", json={"reason": reason})
        assert r.status_code == 200, r.text
        assert (r.json()["copy_of"], r.json()["copies"]) == (None, [second])  # discarded with it
        assert (await client.get(f"/ops/api/dlq/{second}")).json()["status"] == "discarded"
        assert (await client.get("/ops/api/dlq")).json()["total"] == 0
        r = await client.post(f"/ops/api/dlq/{second}/discard", json={"reason": "once more"})
        assert r.status_code == 409, r.text
        # a copy published after the discard (the relay repeating once more) is not run either
        await produce(kafka.bootstrap, hub.topic(IN.dlq), [(letter.key, letter.value, list(letter.headers))])
        await wait_for(lambda: _is(_depth(client, hub), 1), timeout_s=30)
        [late] = (await client.get("/ops/api/dlq")).json()["items"]
        assert late["copy_of"] == first
        cure.fixed = True
        assert await _replayed(client, late["id"]) == (0, 1)  # (done, skipped)
        assert await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=1, timeout_s=5) == []
        shown = (await client.get(f"/ops/api/dlq/{late['id']}")).json()
        assert (shown["status"], shown["copy_of"]) == ("discarded", first)


async def test_discarding_a_copy_leaves_the_first_letter_to_be_replayed(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """An operator who drops the copy the list names as such keeps the message: the first letter is
    replayed, once."""
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        _, first, second = await _two_copies(kafka, hub, client)
        r = await client.post(f"/ops/api/dlq/{second}/discard", json={"reason": "a duplicate"})
        assert r.status_code == 200, r.text
        assert (r.json()["copy_of"], r.json()["copies"]) == (first, [])
        [still] = (await client.get("/ops/api/dlq")).json()["items"]
        assert (still["id"], still["status"]) == (first, "open")
        cure.fixed = True
        assert await _replayed(client, first) == (1, 0)  # (done, skipped)
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=2, settle_s=1.0)
        assert [Envelope.from_bytes(r.value).payload["n"] for r in out] == [1]


async def test_discarding_the_first_letter_after_its_copy_was_replayed_drops_nothing(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """The copy was replayed, and the message ran; the first letter, discarded after, was recorded as
    the message dropped, and the answer said so."""
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        assert hub.store is not None
        _, first, second = await _two_copies(kafka, hub, client)
        cure.fixed = True
        assert await _replayed(client, second) == (1, 0)
        r = await client.post(f"/ops/api/dlq/{first}/discard", json={"reason": "cleaning up"})
        assert r.status_code == 200, r.text
        assert (r.json()["copy_of"], r.json()["copies"]) == (second, [])  # a copy of what ran
        async with hub.store.connect() as conn:
            kept = (await conn.execute(select(dlq_actions.c.reason, dlq_actions.c.drops_message))).all()
        assert sorted(drops for _, drops in kept) == [False, False]
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=2, settle_s=1.0)
        assert [Envelope.from_bytes(r.value).payload["n"] for r in out] == [1]


async def test_a_discard_kept_before_discards_dropped_messages_does_not_stop_a_copys_replay(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """Before a discard could drop a message, an operator discarded one of two copies as "a
    duplicate", meaning to replay the other: that discard, kept as it was (0029: it dropped no
    message), does not make the other a copy of a dropped message."""
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        assert hub.store is not None
        _, first, second = await _two_copies(kafka, hub, client)
        letters = console_of(hub).dead_letters
        d = await letters.get(first)
        assert d is not None
        async with hub.store.transaction() as session:  # as the hub before 0029 wrote it
            await letters._resolve(
                session, d, "discarded", "olga", reason="a duplicate", job_id=None, value=None
            )
        cure.fixed = True
        assert await _replayed(client, second) == (1, 0)  # (done, skipped)
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=2, settle_s=1.0)
        assert [Envelope.from_bytes(r.value).payload["n"] for r in out] == [1]


async def test_an_action_on_a_letter_of_a_topics_earlier_life_is_not_the_new_letters(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A DLQ position is not a letter for good: the embedded broker keeps nothing over a restart, and a
    topic made again starts at offset 0, while the actions stay in the store. A new letter at an old
    position took the old letter's action: it left the open list, and its replay answered 409."""
    cure, key = Cure(), youth_key("one youth").encode()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        assert hub.store is not None
        poisoned = Envelope(type="T", payload={"n": 1, "poison": True})
        await produce(kafka.bootstrap, hub.topic(IN.name), [(key, poisoned.to_bytes(), poisoned.headers())])
        [letter] = await read_topic(kafka.bootstrap, hub.topic(IN.dlq), expect=1)
        source = f"{headers_of(letter)['dlq-consumer-group']}|{hub.topic(IN.name)}:{letter.partition}:0"
        async with hub.store.transaction() as session:  # what was done before the topic started over
            await session.execute(
                insert(dlq_actions).values(
                    dlq_topic=hub.topic(IN.dlq), partition=letter.partition, offset=letter.offset,
                    letter_at=letter.timestamp - 3_600_000, action="replayed", operator="olga",
                    at=datetime.now(UTC) - timedelta(hours=1), source=f"{source}@2025-01-01T00:00:00+00:00",
                )
            )  # fmt: skip
            # and an action kept before 0020, without the letter's time: taken before this letter was
            await session.execute(
                insert(dlq_actions).values(
                    dlq_topic=hub.topic(IN.dlq), partition=letter.partition, offset=letter.offset,
                    letter_at=None, action="replayed", operator="olga",
                    at=datetime.now(UTC) - timedelta(hours=2), source=source,
                )
            )  # fmt: skip
        assert await _depth_now(client, hub) == 1  # open, on the health page as in the list
        listed = (await client.get("/ops/api/dlq")).json()
        assert [(d["id"], d["status"]) for d in listed["items"]] == [
            (f"{hub.topic(IN.dlq)}:{letter.partition}:{letter.offset}", "open")
        ]
        cure.fixed = True
        answer = await client.post(f"/ops/api/dlq/{listed['items'][0]['id']}/replay")
        assert answer.status_code == 200, answer.text
        await wait_for(lambda: _job_done(client, answer.json()["id"]), timeout_s=30)
        progress = (await client.get(f"/ops/api/jobs/{answer.json()['id']}")).json()
        assert (progress["done"], progress["skipped"]) == (1, 0)  # not taken for a copy of the old one
        [out] = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=1)
        assert Envelope.from_bytes(out.value).payload["n"] == 1


async def test_an_action_kept_before_letter_times_resolves_only_a_letter_written_before_it(
    store: Store,
) -> None:
    """Actions kept before 0020 have no letter time: one taken before a letter was written is an
    earlier letter's (the topic started over), one taken after it is this letter's."""
    from hub.ops.dlq import DeadLetters
    from hub.ops.dlq_records import DeadLetter

    written = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    letters = DeadLetters(store, {}, ["in.dlq.v1"])
    old_one = DeadLetter("in.dlq.v1", 0, 3, int(written.timestamp() * 1000), None, {}, payload=b"{}")
    new_one = DeadLetter("in.dlq.v1", 0, 4, int(written.timestamp() * 1000), None, {}, payload=b"{}")
    async with store.transaction() as session:
        for offset, at in ((3, written + timedelta(minutes=5)), (4, written - timedelta(days=3))):
            await session.execute(
                insert(dlq_actions).values(
                    dlq_topic="in.dlq.v1", partition=0, offset=offset, letter_at=None,
                    action="discarded", operator="olga", at=at, reason="gezien",
                )
            )  # fmt: skip
    assert not await letters.discard(old_one, "olga", "nogmaals")  # resolved already: not twice
    assert await letters.discard(new_one, "olga", "nieuwe brief")  # a later letter: its own


@pytest.mark.timeout(240)  # its own deadlines add up to 120 s
async def test_replays_discards_and_timeline_reads_are_audited_under_the_youth_a_letter_names(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A replay or discard of a dead letter was audited without the youth its payload names (a
    subject-access export, rule 20, did not find it), and reading the timeline kept the operator's
    search text as typed (a BSN, a name) and named no youth."""
    youth, other, parent, reference = "628194821", "507529170", "111222333", "123456782"
    cure = Cure()
    async with ops_hub(make_settings(kafka, db_url, unique), poisonable_echo(cure)) as (hub, client):
        assert hub.store is not None
        # a parent's block before the youth's; a BSN sent as a number; a sender's reference as key
        # that passes the elfproef
        payloads = [
            {"n": 0, "ouder": {"bsn": parent}, "verdachte": {"bsn": youth}},
            {"n": 1, "betrokkene": {"bsn": int(other)}},
            {"n": 2, "verdachte": {"bsn": youth}, "wettelijkVertegenwoordigers": [{"bsn": parent}]},
            {"n": 3, "jongere": {"bsn": other}},
        ]
        sent = [Envelope(type="T", payload={"poison": True, **p}) for p in payloads]
        await produce(
            kafka.bootstrap,
            hub.topic(IN.name),
            [(reference.encode(), e.to_bytes(), e.headers()) for e in sent],
        )
        await wait_for(lambda: _is(_depth(client, hub), 4), timeout_s=30)
        letters = console_of(hub).dead_letters
        listed = {d.headers[H_MESSAGE_ID]: d for d in await letters.find()}
        assert all(d.payload is None for d in listed.values())
        by_n = [listed[e.message_id] for e in sent]
        # discarded through the API (the letter read with its payload), and as listed (without it)
        r = await client.post(f"/ops/api/dlq/{by_n[0].id}/discard", json={"reason": "test data"})
        assert r.status_code == 200, r.text
        assert await letters.discard(by_n[1], "olga", "test data")
        cure.fixed = True
        job = (await client.post("/ops/api/dlq/replay", json={"all": True})).json()  # read per batch
        assert job["total"] == 2
        await wait_for(lambda: _job_done(client, job["id"]), timeout_s=30)

        async def audited(prefix: str) -> list[tuple[str, str | None, dict[str, object]]]:
            assert hub.store is not None
            async with hub.store.connect() as conn:
                rows = await conn.execute(
                    select(audit_log.c.action, audit_log.c.youth_key, audit_log.c.objects)
                    .where(audit_log.c.action.like(f"{prefix}%"))
                    .order_by(audit_log.c.id)
                )
                return [(a, y, o) for a, y, o in rows]

        of = {bsn: pseudonym(TEST_SECRET, bsn) for bsn in (youth, other, parent, reference)}
        resolved = {(o["dead_letter"], a, y) for a, y, o in await audited("dlq.")}
        assert resolved == {
            (by_n[0].id, "dlq.discarded", of[youth]),
            (by_n[1].id, "dlq.discarded", of[other]),
            (by_n[2].id, "dlq.replayed", of[youth]),
            (by_n[3].id, "dlq.replayed", of[other]),
        }

        # the timeline: one entry per youth whose entries it read, and no search text naming a person
        tx = sent[2].transaction_id
        assert (await client.get("/ops/api/timeline", params={"id": tx})).json()["events"]
        topic = hub.topic(IN.name)  # every dead letter's entry names it: both youths read
        assert len((await client.get("/ops/api/timeline", params={"id": topic})).json()["events"]) == 4
        for typed in (youth, "Noah van der Berg"):
            assert (await client.get("/ops/api/timeline", params={"id": typed})).json()["events"] == []
        reads = [(y, o["id"], o.get("youths")) for _, y, o in await audited("audit.timeline_read")]
        assert youth not in str(reads) and "Noah" not in str(reads)  # the audit log is kept for years
        assert reads[0] == (of[youth], tx, 1)
        assert sorted(y for y, _, _ in reads[1:3] if y is not None) == sorted([of[youth], of[other]])
        assert [n for _, _, n in reads[1:3]] == [2, 2]
        assert reads[3:] == [(None, NOT_KEPT, 0)] * 2
