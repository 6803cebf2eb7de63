"""The directory on both stores: round trip, and who reads a caseworker's mail (rule 16)."""

from __future__ import annotations

from datetime import date

import pytest

from hub.directory import (
    CaseworkerNotFound,
    get_caseworker,
    mail_recipient,
    mail_recipients,
    upsert_caseworker,
)
from hub.errors import PermanentError
from hub.store import Store
from schemas.caseworker import Absence, Caseworker

pytestmark = pytest.mark.integration
DAY = date(2026, 3, 10)


def _cw(cid: str, delegate: str | None = None, away: bool = False, active: bool = True) -> Caseworker:
    return Caseworker(
        caseworker_id=cid,
        name=f"Medewerker {cid}",
        email=f"{cid}@halt.nl",
        team="DEN_HAAG",
        meldingsbevoegd=True,
        delegate_id=delegate,
        active=active,
        absences=[Absence(start=date(2026, 3, 1), end=date(2026, 3, 20))] if away else [],
    )


async def test_round_trip_and_update(store: Store) -> None:
    async with store.transaction() as s:
        await upsert_caseworker(s, _cw("a1", away=True))
        await upsert_caseworker(s, _cw("a1", delegate="b2"))
    async with store.transaction() as s:
        got = await get_caseworker(s, "a1")
    assert got == _cw("a1", delegate="b2")


async def test_mail_goes_to_the_delegate_while_away_and_chains(store: Store) -> None:
    async with store.transaction() as s:
        for cw in (
            _cw("a", delegate="b", away=True),
            _cw("b", delegate="c", away=True),
            _cw("c"),
            _cw("gone", delegate="c", active=False),
            _cw("alone", away=True),
            _cw("here", delegate="a"),
        ):
            await upsert_caseworker(s, cw)
        assert (await mail_recipient(s, "here", DAY)).caseworker_id == "here"
        assert (await mail_recipient(s, "a", DAY)).caseworker_id == "c"
        assert (await mail_recipient(s, "gone", DAY)).caseworker_id == "c"
        assert (await mail_recipient(s, "a", date(2026, 4, 1))).caseworker_id == "a"
        with pytest.raises(PermanentError, match="no reachable delegate"):
            await mail_recipient(s, "alone", DAY)
        with pytest.raises(CaseworkerNotFound):
            await get_caseworker(s, "nobody")


async def test_many_recipients_at_once_agree_with_one_at_a_time(store: Store) -> None:
    async with store.transaction() as s:
        for cw in (
            _cw("a", delegate="b", away=True),
            _cw("b", delegate="c", away=True),
            _cw("c"),
            _cw("loop1", delegate="loop2", away=True),
            _cw("loop2", delegate="loop1", away=True),
            _cw("lost", delegate="nobody", away=True),
            _cw("alone", away=True),
            _cw("here", delegate="a"),
        ):
            await upsert_caseworker(s, cw)
    ids = ["a", "b", "c", "loop1", "lost", "alone", "here", "nobody", "a"]
    async with store.read() as s:
        many = await mail_recipients(s, ids, DAY)
        assert set(many) == set(ids)
        for cid in ids:
            try:
                one: Caseworker | PermanentError = await mail_recipient(s, cid, DAY)
            except PermanentError as exc:
                one = exc
            got = many[cid]
            if isinstance(one, PermanentError):
                assert type(got) is type(one) and str(got) == str(one)
            else:
                assert got == one
    assert {cid for cid, got in many.items() if isinstance(got, Caseworker)} == {"a", "b", "c", "here"}
    assert isinstance(many["lost"], CaseworkerNotFound) and "'nobody'" in str(many["lost"])


async def test_an_id_wider_than_the_column_is_refused_before_the_store(store: Store) -> None:
    """The model takes a Code (100 characters); the columns hold 64, which only PostgreSQL enforced."""
    async with store.transaction() as s:
        with pytest.raises(ValueError, match="caseworker_id: longer than 64"):
            await upsert_caseworker(s, _cw("c" * 65))
        with pytest.raises(ValueError, match="delegate_id: longer than 64"):
            await upsert_caseworker(s, _cw("c", delegate="d" * 65))
        await upsert_caseworker(s, _cw("c" * 64, delegate="d" * 64))
    async with store.read() as s:
        assert (await get_caseworker(s, "c" * 64)).delegate_id == "d" * 64
        with pytest.raises(CaseworkerNotFound):
            await get_caseworker(s, "c")
