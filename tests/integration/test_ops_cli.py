"""`ketenhub operators`, `dlq`, `outbox` and `topics` against a real broker and database."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from click.testing import Result
from pydantic import ValidationError
from sqlalchemy import select
from typer.core import TyperGroup
from typer.testing import CliRunner

from hub.cli import app
from hub.embedded import EmbeddedKafka
from hub.ops.auth import login, operator_of
from hub.ops.dlq import REPLAYED_FROM
from hub.ops.dlq_jobs import EVERY_OPEN, ReplayJob, claim, finish
from hub.ops.health import is_dlq
from hub.ops.masking import MASK
from hub.ops.parked import discard, release
from hub.ops.tables import dlq_replay_jobs
from hub.spine.dlq import (
    DLQ_EXC_CLASS,
    DLQ_EXC_MESSAGE,
    DLQ_FIRST_FAILURE,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_TOPIC,
    KEY_PSEUDONYM,
)
from hub.store import Store
from hub.store.tables import audit_log, outbox
from hub.topics import all_topics, prefixed
from schemas.envelope import H_MESSAGE_ID, utcnow
from schemas.pseudonym import youth_key as pseudonym
from tests.conftest import TEST_SECRET
from tests.helpers.procs import from_a_shell
from tests.integration.test_ops_lag import _commit, _fill, refusing_address

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"
T = TypeVar("T")


def test_operator_added_from_stdin_can_log_in(kafka: EmbeddedKafka, tmp_path: Path, unique: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    env = {
        "KETENHUB_DATABASE__URL": url,
        "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
        "KETENHUB_KAFKA__TOPIC_PREFIX": f"t{unique}.",
        "KETENHUB_SECRET": TEST_SECRET,
    }
    runner = CliRunner()

    def add(username: str, role: str, password_line: str) -> Result:
        command = ["operators", "add", "--username", username, "--role", role, "--password-stdin"]
        return runner.invoke(app, command, input=password_line, env=env)

    added = add("olga", "operator", "correct horse battery\n")
    assert added.exit_code == 0, added.output
    assert "olga (operator)" in added.output
    bad = add("x", "root", "")
    assert bad.exit_code == 2

    async def check() -> str | None:
        store = Store(url)
        try:
            return await login(store, TEST_SECRET, "olga", "correct horse battery")
        finally:
            await store.close()

    assert asyncio.run(check()) is not None
    # a password file with Windows line endings: its carriage return was kept, and nobody could log in
    crlf = add("olga", "operator", "correct horse battery\r\n")
    assert crlf.exit_code == 0, crlf.output
    assert asyncio.run(check()) is not None
    for name, password, said in [
        ("u" * 101, "correct horse battery", "username must be at most 100 characters"),
        ("tabby", "correct\thorse battery", "password must not hold control characters"),
    ]:
        refused = add(name, "viewer", password + "\n")
        assert refused.exit_code == 2 and said in refused.output, refused.output
    listed = runner.invoke(app, ["dlq", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    health = runner.invoke(app, ["topics", "--interval", "0.5"], env=env)
    assert health.exit_code == 0, health.output
    assert "DLQ topic" in health.output


def test_topics_says_which_brokers_did_not_answer(tmp_path: Path) -> None:
    """Brokers that cannot be reached gave a traceback of the Kafka client; now a line that says so."""
    with refusing_address() as refused:
        env = {
            "KETENHUB_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": refused,
            "KETENHUB_SECRET": TEST_SECRET,
        }
        result = CliRunner().invoke(app, ["topics"], env=env)
    assert result.exit_code == 1, result.output
    assert "ketenhub: lag not measured: " in result.output and "Unable to bootstrap" in result.output
    assert "KETENHUB_KAFKA__BOOTSTRAP_SERVERS" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _rows(output: str) -> dict[str, list[str]]:
    """The rows of the tables `output` holds, by their first cell (a wide terminal: nothing folded)."""
    cells = ([c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines() if "│" in line)
    return {row[0]: row[1:] for row in cells if row}


def test_topics_tells_a_stuck_group_from_one_that_is_done(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    """`ketenhub topics` took one sample of the lag, and one sample shows lag, not a trend: a group
    that had not moved for an hour was OK, where the console's monitor said STALL."""
    topic, stuck, done = f"t{unique}.referral.received.v1", f"g{unique}-intake", f"g{unique}-done"

    async def setup() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
        await _fill(kafka.bootstrap, topic, {0: 50}, age_s=3600)
        await _commit(kafka.bootstrap, stuck, {TopicPartition(topic, 0): 5})  # and no one reads on
        await _commit(kafka.bootstrap, done, {TopicPartition(topic, 0): 50})

    asyncio.run(setup())
    env = {
        **_dlq_env(tmp_path / "hub.db", kafka.bootstrap, unique),
        "KETENHUB_KAFKA__GROUP_PREFIX": f"g{unique}-",
        "COLUMNS": "250",
    }
    result = CliRunner().invoke(app, ["topics"], env=env)  # as the console: two samples 5 s apart
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows[stuck][:3] in ([topic, "STALL", "45"], [topic, "STOP", "45"]), result.output
    assert rows[done][:3] == [topic, "OK", "0"], result.output
    assert "verdicts over two samples 5 s apart" in result.output
    too_often = CliRunner().invoke(app, ["topics", "--interval", "0"], env=env)
    assert too_often.exit_code == 2, too_often.output


def _dlq_env(db: Path, bootstrap: str, unique: str) -> dict[str, str]:
    return {
        "KETENHUB_DATABASE__URL": f"sqlite+aiosqlite:///{db}",
        "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "KETENHUB_KAFKA__TOPIC_PREFIX": f"t{unique}.",
        "KETENHUB_SECRET": TEST_SECRET,
    }


def _a_dlq_topic(unique: str) -> str:
    return next(t.name for t in prefixed(all_topics(), f"t{unique}.") if is_dlq(t.name))


async def _write_letters(
    bootstrap: str, topic: str, records: list[tuple[bytes, dict[str, str]]]
) -> list[str]:
    """Dead letters written by hand; their ids."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        ids = []
        for key, headers in records:
            sent = await producer.send_and_wait(
                topic, b'{"n": 1}', key=key, headers=[(k, v.encode()) for k, v in headers.items()]
            )
            ids.append(f"{topic}:{sent.partition}:{sent.offset}")
        return ids
    finally:
        await producer.stop()


def _outbox(db: Path) -> list[tuple[str | None, dict[str, str]]]:
    async def rows() -> list[tuple[str | None, dict[str, str]]]:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            async with store.connect() as conn:
                return [
                    (r.key, r.headers) for r in await conn.execute(select(outbox.c.key, outbox.c.headers))
                ]
        finally:
            await store.close()

    return asyncio.run(rows())


def _audited(db: Path, action: str) -> list[tuple[str, str | None]]:
    """(user, youth key) of the audit entries of `action`."""

    async def rows() -> list[tuple[str, str | None]]:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            async with store.connect() as conn:
                query = select(audit_log.c.user, audit_log.c.youth_key).where(audit_log.c.action == action)
                return [(r.user, r.youth_key) for r in await conn.execute(query)]
        finally:
            await store.close()

    return asyncio.run(rows())


def _refused_cleanly(result: Result, says: str) -> None:
    """Exit 1 with one line on standard error that says `says`: no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("ketenhub: ") and result.output.count("\n") == 1, result.output
    assert says in result.output, result.output


def test_dlq_list_names_a_copy_and_discarding_the_first_letter_discards_it(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    """One failed record published to the DLQ twice (the relay publishes at least once): `dlq list`
    names the later letter a copy, and discarding the first drops the message, the copy with it."""
    topic = _a_dlq_topic(unique)
    failed = {
        DLQ_TOPIC: f"t{unique}.ops.in.v1",
        DLQ_GROUP: f"t{unique}.ops",
        DLQ_PARTITION: "0",
        DLQ_OFFSET: "7",
        DLQ_FIRST_FAILURE: "2026-12-07T03:00:00+00:00",
        DLQ_EXC_CLASS: "ValueError",
    }
    # and a letter of a record at the same position written before letters kept their first failure:
    # it may be another record's (the topic started over), no copy
    unsure = {k: v for k, v in failed.items() if k != DLQ_FIRST_FAILURE}
    first, copy, other = asyncio.run(
        _write_letters(kafka.bootstrap, topic, [(b"k", failed), (b"k", failed), (b"k", unsure)])
    )
    env, runner = _dlq_env(tmp_path / "hub.db", kafka.bootstrap, unique), CliRunner()
    listed = runner.invoke(app, ["dlq", "list"], env={**env, "COLUMNS": "400"})
    assert listed.exit_code == 0, listed.output
    [copy_line] = [line for line in listed.output.splitlines() if copy in line]
    assert f"(a copy of {first})" in copy_line, listed.output
    for alone in (first, other):
        [line] = [line for line in listed.output.splitlines() if line.split()[1:2] == [alone]]
        assert "a copy of" not in line, listed.output
    dropped = runner.invoke(app, ["dlq", "discard", first, "--reason", "test data"], env=env)
    assert dropped.exit_code == 0, dropped.output
    assert dropped.output == f"discarded {first}\ndiscarded {copy}, a copy of it\n"
    again = runner.invoke(app, ["dlq", "discard", copy, "--reason", "test data"], env=env)
    _refused_cleanly(again, "already replayed or discarded")


def test_dlq_commands_say_what_failed_and_show_no_raw_key(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    """A malformed id ended in a ValueError traceback, a failed or unknown replay said it was queued
    and exited 0, an empty discard reason was taken, and the sender's key (a BSN) was shown."""
    bsn, topic = "111222333", _a_dlq_topic(unique)
    # the sender's own header holds the BSN too: shown by name, its value masked
    original = {DLQ_TOPIC: f"t{unique}.ops.in.v1", DLQ_EXC_CLASS: "ValueError", "x-verdachte": bsn}
    replayable, unreplayable = asyncio.run(
        _write_letters(kafka.bootstrap, topic, [(bsn.encode(), original), (b"k", {})])
    )
    env, runner = _dlq_env(tmp_path / "hub.db", kafka.bootstrap, unique), CliRunner()
    listed = runner.invoke(app, ["dlq", "list"], env=env)
    assert listed.exit_code == 0 and bsn not in listed.output, listed.output
    by_bsn = runner.invoke(app, ["dlq", "list", "--key", bsn], env=env)
    assert by_bsn.exit_code == 2 and bsn not in by_bsn.output, by_bsn.output
    shown = runner.invoke(app, ["dlq", "show", replayable], env=env)
    assert shown.exit_code == 0 and bsn not in shown.output and MASK in shown.output, shown.output
    assert "x-verdachte" in shown.output
    # rule 18: the view is audited, by the person behind the CLI, never with the sender's key (a BSN)
    # but with the youth key of that BSN, as a subject-access export (rule 20) looks it up
    [(user, youth)] = _audited(tmp_path / "hub.db", "dlq.viewed")
    assert user.startswith("cli") and youth == pseudonym(TEST_SECRET, bsn)
    youth_key = "a1" * 32  # the hub's own key of a youth: named in the audit entry
    [of_a_youth] = asyncio.run(_write_letters(kafka.bootstrap, topic, [(youth_key.encode(), original)]))
    assert runner.invoke(app, ["dlq", "show", of_a_youth], env=env).exit_code == 0
    assert sorted(y for _, y in _audited(tmp_path / "hub.db", "dlq.viewed")) == sorted(
        [pseudonym(TEST_SECRET, bsn), youth_key]
    )

    for malformed in ("42", f"{topic}:0:{2**70}"):
        for command in (
            ["show", malformed],
            ["discard", malformed, "--reason", "test data"],
            ["replay", malformed],
        ):
            _refused_cleanly(runner.invoke(app, ["dlq", *command], env=env), "malformed dead-letter id")
    for reason in ("", "no", "a\x00b"):
        empty = runner.invoke(app, ["dlq", "discard", replayable, "--reason", reason], env=env)
        assert empty.exit_code == 2 and "--reason must be 3 to 500" in empty.output, empty.output
    unknown = runner.invoke(app, ["dlq", "replay", f"{topic}:0:999999"], env=env)
    _refused_cleanly(unknown, "no such dead letter")
    failed = runner.invoke(app, ["dlq", "replay", unreplayable], env=env)
    assert failed.exit_code == 1 and "1 dead letter(s) could not be replayed" in failed.output, failed.output
    assert _outbox(tmp_path / "hub.db") == []

    done = runner.invoke(app, ["dlq", "replay", replayable], env=env)
    assert done.exit_code == 0 and "queued 1 of 1" in done.output, done.output
    # queued with the letter's id as message id (it had none): see test_ops_dlq; the record as it
    # came, its sender's own header included, with the replay's own two; and not under the sender's
    # key, a BSN, but under that BSN's youth key, marked as a pseudonym
    replayed = {"x-verdachte": bsn, REPLAYED_FROM: replayable, H_MESSAGE_ID: replayable, KEY_PSEUDONYM: "bsn"}
    assert _outbox(tmp_path / "hub.db") == [(pseudonym(TEST_SECRET, bsn), replayed)]
    _refused_cleanly(runner.invoke(app, ["dlq", "replay", replayable], env=env), "already replayed")
    everything = runner.invoke(app, ["dlq", "replay", "--all"], env=env)  # the unreplayable one, again
    assert everything.exit_code == 1 and "could not be replayed" in everything.output, everything.output


def test_dlq_list_shows_each_letters_id_whole_however_narrow_the_terminal(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    """The id, the only handle for show, replay and discard, was cut to "t5e0…" at 80 columns and
    shortened at 120."""
    topic = _a_dlq_topic(unique)
    failed = {
        DLQ_TOPIC: topic.replace(".dlq.", "."),
        DLQ_EXC_CLASS: "hub.errors.PermanentError",
        DLQ_EXC_MESSAGE: "receiver has no webhook delivery",
    }
    ids = asyncio.run(_write_letters(kafka.bootstrap, topic, [(b"k", failed), (b"k", failed)]))
    env = _dlq_env(tmp_path / "hub.db", kafka.bootstrap, unique)
    for columns in ("60", "80", "120"):
        listed = CliRunner().invoke(app, ["dlq", "list"], env={**env, "COLUMNS": columns})
        assert listed.exit_code == 0, listed.output
        lines = listed.output.splitlines()
        assert all(any(letter in line for line in lines) for letter in ids), (columns, listed.output)
        shown = CliRunner().invoke(app, ["dlq", "show", ids[1]], env=env)  # the id as listed: a handle
        assert shown.exit_code == 0, shown.output


def test_dlq_commands_say_which_brokers_did_not_answer(tmp_path: Path) -> None:
    """Brokers that refused gave a traceback of the Kafka client (its start was outside the try)."""
    with refusing_address() as refused:
        env = _dlq_env(tmp_path / "hub.db", refused, "refused")
        for command in (["list"], ["replay", "--all"], ["show", f"{_a_dlq_topic('refused')}:0:0"]):
            result = CliRunner().invoke(app, ["dlq", *command], env=env)
            _refused_cleanly(result, "ketenhub: dead letters not read: ")
            assert (
                "Unable to bootstrap" in result.output
                and "KETENHUB_KAFKA__BOOTSTRAP_SERVERS" in result.output
            )


def test_operators_disable_and_enable_and_a_reset_keeps_a_disabled_operator_out(
    tmp_path: Path, unique: str
) -> None:
    """No command locked an operator out, and `add` as a password reset kept their sessions and let a
    disabled operator in again."""
    db = tmp_path / "hub.db"
    url, env, runner = f"sqlite+aiosqlite:///{db}", _dlq_env(db, "127.0.0.1:1", unique), CliRunner()
    add = ["operators", "add", "--username", "olga", "--role", "operator", "--password-stdin"]
    assert runner.invoke(app, add, input=f"{PASSWORD}\n", env=env).exit_code == 0

    async def session_of(cookie: str | None, password: str = PASSWORD) -> tuple[bool, bool]:
        """(the cookie still works, a login with `password` works)"""
        store = Store(url)
        try:
            alive = cookie is not None and await operator_of(store, TEST_SECRET, cookie) is not None
            return alive, await login(store, TEST_SECRET, "olga", password) is not None
        finally:
            await store.close()

    async def cookie() -> str | None:
        store = Store(url)
        try:
            return await login(store, TEST_SECRET, "olga", PASSWORD)
        finally:
            await store.close()

    before = asyncio.run(cookie())
    assert before is not None
    disabled = runner.invoke(app, ["operators", "disable", "olga"], env=env)
    assert disabled.exit_code == 0 and "olga disabled" in disabled.output, disabled.output
    assert asyncio.run(session_of(before)) == (False, False)
    reset = runner.invoke(app, add, input=f"{PASSWORD}\n", env=env)
    assert reset.exit_code == 0 and "ketenhub operators enable olga" in reset.output, reset.output
    assert asyncio.run(session_of(None)) == (False, False)
    enabled = runner.invoke(app, ["operators", "enable", "olga"], env=env)
    assert enabled.exit_code == 0 and "olga enabled" in enabled.output, enabled.output
    after = asyncio.run(cookie())
    assert asyncio.run(session_of(after)) == (True, True)
    # a password reset ends the sessions the old password started
    reset = runner.invoke(app, add, input="another horse battery\n", env=env)
    assert reset.exit_code == 0 and "enable" not in reset.output, reset.output
    assert asyncio.run(session_of(after, "another horse battery")) == (False, True)
    _refused_cleanly(runner.invoke(app, ["operators", "disable", "nobody"], env=env), "no operator is called")
    for action in ("operator.added", "operator.disabled", "operator.reset", "operator.enabled"):
        assert all(u.startswith("cli") for u, _ in _audited(db, action)), action
        assert _audited(db, action), action
    for command in ("add", "disable", "enable"):
        helped = runner.invoke(app, ["operators", command, "--help"], env=env)
        assert helped.exit_code == 0 and "Audited" in helped.output, helped.output


def test_every_operator_command_argument_and_option_says_what_it_is() -> None:
    """`ketenhub dlq show --help` and `dlq discard --help` said nothing of the letter id they take."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    groups = {name: root.commands[name] for name in ("operators", "dlq", "outbox")}
    commands = {f"topics {p.name}": p for p in root.commands["topics"].params}
    for group_name, group in groups.items():
        assert isinstance(group, TyperGroup)
        for name, command in group.commands.items():
            assert command.help, f"{group_name} {name}"
            commands |= {f"{group_name} {name} {p.name}": p for p in command.params}
    assert "dlq show letter_id" in commands and "dlq discard letter_id" in commands
    assert [name for name, p in commands.items() if not getattr(p, "help", None)] == []


def test_an_outbox_row_id_past_what_the_store_holds_is_refused(tmp_path: Path, unique: str) -> None:
    """`ketenhub outbox release 99999999999999999999` ended in an OverflowError traceback."""
    env, runner = _dlq_env(tmp_path / "hub.db", "127.0.0.1:1", unique), CliRunner()
    for command in ("release", "discard"):
        for row_id in ("99999999999999999999", str(2**63), "0"):
            result = runner.invoke(app, ["outbox", command, row_id, "--reason", "too large, resent"], env=env)
            assert result.exit_code == 2, result.output
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            assert "Invalid value for 'row_id'" in result.output, result.output
        largest = runner.invoke(app, ["outbox", command, str(2**63 - 1), "--reason", "too large"], env=env)
        _refused_cleanly(largest, f"no parked outbox row {2**63 - 1}")


def test_outbox_release_and_discard_need_a_reason(tmp_path: Path, unique: str) -> None:
    """`ketenhub outbox release/discard --reason ""` was taken: the audit log said nothing of why."""
    env, runner = _dlq_env(tmp_path / "hub.db", "127.0.0.1:1", unique), CliRunner()
    for command in ("release", "discard"):
        for reason in ("", "no", "a\x00b", "x" * 501):
            result = runner.invoke(app, ["outbox", command, "1", "--reason", reason], env=env)
            assert result.exit_code == 2 and "--reason must be 3 to 500" in result.output, result.output
        # a good reason goes on to the row, here none
        _refused_cleanly(
            runner.invoke(app, ["outbox", command, "1", "--reason", "too large, resent"], env=env),
            "no parked outbox row 1",
        )

    async def directly() -> None:
        store = Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        try:
            with pytest.raises(ValidationError):
                await discard(store, 1, "cli:test", "")
            with pytest.raises(ValidationError):
                await release(store, 1, "cli:test", " ", max_message_bytes=10_000)
        finally:
            await store.close()

    asyncio.run(directly())


def test_dlq_replay_all_waits_for_a_bulk_replay_the_console_runs(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    """`ketenhub dlq replay --all` went beside a replay the console was running, at the full rate
    again: the one replay of many letters per hub is the CLI's to wait for too."""
    topic = _a_dlq_topic(unique)
    failed = {DLQ_TOPIC: topic.replace(".dlq.", "."), DLQ_EXC_CLASS: "ValueError"}
    asyncio.run(_write_letters(kafka.bootstrap, topic, [(b"k", failed), (b"k", failed)]))
    db = tmp_path / "hub.db"
    running = ReplayJob(id="console-job", total=500, operator="olga", filter=EVERY_OPEN)

    async def in_store(act: Callable[[Store], Awaitable[T]]) -> T:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            await store.migrate()
            return await act(store)
        finally:
            await store.close()

    asyncio.run(in_store(lambda store: claim(store, running, utcnow())))  # a replica runs it
    env, runner = _dlq_env(db, kafka.bootstrap, unique), CliRunner()
    busy = runner.invoke(app, ["dlq", "replay", "--all"], env=env)
    _refused_cleanly(busy, f"replay job console-job ({EVERY_OPEN}), started by olga at ")
    assert "is still running: 0 of 500 handled" in busy.output
    assert _outbox(db) == []
    asyncio.run(in_store(lambda store: finish(store, running, utcnow(), "done")))
    done = runner.invoke(app, ["dlq", "replay", "--all"], env=env)
    assert done.exit_code == 0 and "queued 2 of 2" in done.output, done.output
    assert len(_outbox(db)) == 2
    jobs = asyncio.run(in_store(lambda store: _jobs(store)))
    assert [(j.operator[:4], j.filter, j.state, j.done) for j in jobs] == [("cli:", EVERY_OPEN, "done", 2)]


async def _jobs(store: Store) -> list[Any]:
    """Replay jobs other than the console's."""
    async with store.connect() as conn:
        query = select(dlq_replay_jobs).where(dlq_replay_jobs.c.id != "console-job")
        return list(await conn.execute(query))


async def _many_letters(bootstrap: str, topic: str, n: int) -> None:
    failed = [(DLQ_TOPIC, topic.replace(".dlq.", ".").encode()), (DLQ_EXC_CLASS, b"ValueError")]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, b'{"n": 1}', key=f"k{i}".encode(), headers=failed)
        await producer.flush()
    finally:
        await producer.stop()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_replay_says_how_far_it_came(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str, sig: signal.Signals
) -> None:
    """Ctrl-C during `dlq replay --all` left its bar and nothing else: not how far it came, nor that
    the rest stay open."""
    import sqlite3

    total, db = 1500, tmp_path / "hub.db"  # at 200 a second: 7.5 s
    asyncio.run(_many_letters(kafka.bootstrap, _a_dlq_topic(unique), total))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    env |= _dlq_env(db, kafka.bootstrap, unique)

    def done() -> int:
        try:
            with sqlite3.connect(db) as conn:
                row = conn.execute("SELECT done FROM dlq_replay_jobs").fetchone()
        except sqlite3.OperationalError:  # not made yet
            return 0
        return int(row[0]) if row else 0

    proc = from_a_shell([str(Path(sys.executable).with_name("ketenhub")), "dlq", "replay", "--all"], env)
    try:
        deadline = time.monotonic() + 60
        while done() < 100 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the replay ended before it could be stopped"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    with sqlite3.connect(db) as conn:
        [(job_id, state, queued)] = conn.execute("SELECT id, state, done FROM dlq_replay_jobs").fetchall()
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == queued
    assert state == "abandoned" and 100 <= queued < total
    assert f"queued {queued} of {total} dead letter(s) for replay" in out
    assert err.splitlines() == [
        f"ketenhub: replay stopped ({sig.name}) after {queued} of {total} dead letter(s): {queued} queued for"
        f" replay (the running hub publishes them), the other {total - queued} stay open; job {job_id} is"
        " marked abandoned. Replay again for the rest"
    ]


def test_dead_letter_commands_refuse_a_secret_other_than_the_hubs(tmp_path: Path, unique: str) -> None:
    """They find a letter's youth by the youth key of the BSN it names: with another secret, none."""
    from hub.secret_fingerprint import check_secret

    db = tmp_path / "hub.db"

    async def first_start() -> None:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            await store.migrate()
            await check_secret(store, "the-hub-s-own-" + "s" * 40, source="KETENHUB_SECRET", record=True)
        finally:
            await store.close()

    asyncio.run(first_start())
    with refusing_address() as brokers:  # not reached: refused before
        refused = CliRunner().invoke(app, ["dlq", "list"], env=_dlq_env(db, brokers, unique))
    assert refused.exit_code == 2, refused.output
    assert (
        refused.output.startswith(
            "ketenhub: configuration error: KETENHUB_SECRET: not the secret the hub first started with on"
        )
        and refused.output.count("\n") == 1
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_command_closes_what_it_opened_and_says_so(
    tmp_path: Path, unique: str, sig: signal.Signals
) -> None:
    """Ctrl-C during `topics`, or any command on the store, now and then printed a traceback (a task's
    KeyboardInterrupt, a database connection cut short in its close), else nothing; SIGTERM ended it
    on the spot, nothing closed."""
    with socket.socket() as silent:  # takes connections and never answers: brokers that hang
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(60)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
        env |= _dlq_env(tmp_path / "hub.db", f"127.0.0.1:{silent.getsockname()[1]}", unique)
        proc = from_a_shell(
            [str(Path(sys.executable).with_name("ketenhub")), "topics", "--interval", "30"], env
        )
        try:
            connection, _ = silent.accept()  # the command has migrated its store and asks the brokers
            with connection:
                proc.send_signal(sig)
                out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 128 + sig, err[-3000:]
    assert err.splitlines() == [f"ketenhub: interrupted ({sig.name})"]
    assert out == ""
