"""BSN redaction in logs, the envelope, the youth key, topic names."""

from __future__ import annotations

import json
import logging
import logging.config
import time

import pytest
import structlog
import uvicorn.config
from pydantic import ValidationError

from hub.logging import REDACTED, redact_bsn, redact_text
from hub.spine.dlq import safe_error_message
from hub.topics import CONSUMED, WITH_RETRY, all_topics
from schemas.envelope import Envelope
from schemas.pseudonym import youth_key

BSN = "111222333"


def test_bsn_like_numbers_are_redacted_everywhere() -> None:
    event = {"event": f"youth {BSN} seen", "nested": {"bsn": BSN, "n": 11122233}, "list": [BSN], "count": 12}
    out = redact_bsn(None, "info", event)
    dumped = json.dumps(out)
    assert BSN not in dumped and "11122233" not in dumped
    assert out["count"] == 12 and REDACTED in out["event"]


def test_redaction_leaves_ids_and_dates_alone() -> None:
    text = "order 12345 at 2025-01-31 uuid 3f2a9c1e-1111-2222-3333-444455556666"
    assert redact_text(text) == text
    # one UUID in about forty begins with eight digits: it stood alone before its first dash
    digits_first = "handover 12345678-6e01-4a2b-9c3d-112233445566 went to jeugdhulp-dh"
    assert redact_text(digits_first) == digits_first


def test_a_bsn_beside_a_uuid_or_in_what_only_looks_like_one_is_still_redacted() -> None:
    for text in (
        f"{BSN}-6e01-4a2b-9c3d-112233445566-x",  # no UUID: nine digits first
        f"12345678-6e01-4a2b-9c3d-112233445566-{BSN}",  # glued to a UUID: not one itself
        f"12345678-6e01-4a2b-9c3d-1122334455667 and {BSN}",  # a group too long
        f"({BSN})-(12345678)",
    ):
        out = redact_text(text)
        assert BSN not in out and REDACTED in out, (text, out)


def test_a_bsn_written_in_groups_is_redacted_and_a_phone_number_or_address_is_not() -> None:
    """Eight or nine digits in a row missed a BSN as people write it, in groups split by spaces or dots."""
    for written in ("111 22 2333", "111.222.333", "1112.22.333"):
        for text in (f"youth {written} seen", f"({written})", f"BSN {written}. Next", f"{written}"):
            out = redact_text(text)
            assert written not in out and REDACTED in out, (text, out)
    for kept in (
        "call 06 1234 5678 or +31 6 1234 5678",  # ten and eleven digits: a phone number
        "070 123 4567",
        "from 192.168.100.200 on v1.2.3",
        "3 of 10 attempts, 2 s apart",
        "order 12345 at 2025-01-31 12:00:00",
    ):
        assert redact_text(kept) == kept


def test_a_bsn_in_groups_followed_or_preceded_by_another_number_is_still_redacted() -> None:
    """A run of groups that goes on past nine digits was let through whole, BSN and all."""
    grouped = ("999 99 0044", "999.990.044", "111 22 2333")
    for written in grouped:
        for text in (f"{written} 2 meldingen", f"stap 3 {written}", f"1 {written} 12"):
            out = redact_text(text)
            assert written not in out and REDACTED in out, (text, out)
            assert out.count(REDACTED) == 1, out
    assert redact_text("999 99 0044 2 meldingen") == f"{REDACTED} 2 meldingen"
    assert redact_text("stap 3 999.990.044") == f"stap 3 {REDACTED}"
    # after an id whose last digits stand beside it: the id is kept, the BSN is not
    uuid_ = "123e4567-e89b-12d3-a456-426614174000"
    for text, kept in (
        ("zaak PV2025 999 99 0044", "zaak PV2025 "),
        ("H1 999.990.044", "H1 "),
        (f"handover {uuid_} 999 99 0044", f"handover {uuid_} "),
    ):
        assert redact_text(text) == kept + REDACTED, text
    # nine digits in groups that fail the elfproef, inside a longer run, are a count, a phone, a code;
    # and a phone number with its country code is kept whole though nine of its digits pass it
    for kept in (
        "1 2 3 4 5 6 7 8 9 10",
        "06 1234 5678 3",
        "123 45 6789 2",
        "8 2 1 1 4 9 5 9 3 10",  # single digits: counts, not a BSN's groups
        "+31 6 1000 0007",
        "+31 6 12 34 56 78",
        "+31 70 123 0009",
        "0031 6 1000 0007",
    ):
        assert redact_text(kept) == kept, kept


def test_a_bsn_glued_to_letters_or_split_by_dashes_is_redacted_and_ids_are_kept() -> None:
    """The console's masking took "bsn111222333", "111222333abc" and "111-222-333" for a BSN; the
    log's redaction let all three through (a dead letter's error text, a problem's detail)."""
    for text in (
        "bsn111222333",
        "BSN111222333 gezien",
        "111222333x",
        "111-222-333",
        "(bsn: 11-1222-333)",
        "111222333abc",  # short hex: no hub id is this short
        "ref-111222333a",
        "de111222333",
        "111\u00a0222\u00a0333",  # no-break spaces, as a word processor puts them
        "111\t222\t333",
        "111\u2013222\u2013333",  # en dashes
        "bsn 11\u20101222\u2010333",
        # separators mixed and doubled, as typed: the console's masking took them for a BSN
        "1112 22-333",
        "111-222 333",
        "111  222  333",
        "111 - 222 - 333",
        "BSN: 1112 - 22 - 333",
        "111/222/333",
        "111,222,333",
        "111_222_333",
        "111\u2212222\u2212333",  # minus signs
        "111--222--333",
        "111 -- 222 -- 333",
        "111-\n222-333",
        "ref-1112 - 22 - 333",
        # after another number: one run of more digits, whose nine in a row are still the BSN
        "2025-01-01 111-222-333",
        "ref 12-34 1112-22-333",
    ):
        out = redact_text(text)
        assert BSN not in out.replace("-", "") and REDACTED in out, (text, out)
    youth_key = "9e1fd6b1b1b" + BSN + "aaaabbbbccccddddeeeeffff0000111122223333"  # a hex pseudonym
    for kept in (
        f"handover 12345678-6e01-4a2b-9c3d-a{BSN}b1 went",  # a UUID whose last group holds nine digits
        f"youth {youth_key}",
        "zaak PL1500-2025031201-1",
        "op 2025-01-31",
        "op 31/01/2025 om 10.30",
        "tel 06-1234 5678",
        "1.234.567,89 euro",
        "x111222334y",  # nine digits that fail the elfproef
        "replay job 298787763e7e0a1b is running",  # a job id of lowercase hex: kept whole
        "member aiokafka-0.12.0-12345678-6e01-4a2b-9c3d-a111222333b1",  # a UUID after a dash
    ):
        assert redact_text(kept) == kept, kept
    # read in linear time: a long run of letters (a partner's unknown key) took seconds
    started = time.process_time()
    for long_run in (
        "a" * 200_000 + "1",
        "a" * 200_000 + "1g",
        "1" * 200_000 + "x",
        "11- " * 50_000 + "11x",  # a run that a lookahead refused only at its end took minutes
        "11\u2013 " * 50_000 + "11x",
    ):
        redact_text(long_run)
    assert time.process_time() - started < 10.0  # CPU time; a quadratic pass took minutes (178 s)


def test_redaction_runs_inside_structlog_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    from hub.logging import setup_logging

    # setup_logging points both loggers at this test's captured stderr, which pytest closes after
    # it: put the configuration back, or later tests in this process log into a closed file
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        # uvicorn set up with its own logging config (a server started with the defaults, as the
        # embedded Verwijsindex simulator was) gave its loggers handlers that passed by the redaction
        logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)
        setup_logging("INFO", json=True)
        structlog.get_logger("t").info("registering", bsn=BSN)
        # not a string: an exception, bytes, a set, a count keyed by BSN (they were rendered as given)
        structlog.get_logger("t").info(
            "odd values", error=ValueError(f"for bsn {BSN}"), raw=f'{{"bsn":"{BSN}"}}'.encode(),
            seen={BSN}, counts={BSN: 2},
        )  # fmt: skip
        # a traceback quotes the exception's message: uvicorn logs what a request did not handle
        try:
            raise ValueError(f"youth {BSN} not found")
        except ValueError:
            structlog.get_logger("t").exception("request failed")
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        err = capsys.readouterr().err
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "registering" in err and "odd values" in err and BSN not in err
    assert err.count("ValueError: youth [bsn-redacted] not found") == 2, err


def test_envelope_round_trip_and_headers() -> None:
    env = Envelope(type="Referral", payload={"a": 1}, correlation_id="ref-1")
    back = Envelope.from_bytes(env.to_bytes())
    assert back == env
    headers = dict(env.headers())
    assert headers["message-id"] == env.message_id.encode()
    assert headers["transaction-id"] == env.transaction_id.encode()
    assert headers["message-type"] == b"Referral.v1"


def test_envelope_is_strict() -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate({"type": "X", "payload": {}, "surprise": 1})


def test_reply_keeps_transaction() -> None:
    env = Envelope(type="Referral", correlation_id="c")
    reply = env.reply("ReferralDecided", {"ok": True})
    assert (reply.transaction_id, reply.correlation_id) == (env.transaction_id, "c")
    assert reply.message_id != env.message_id


def test_youth_key_is_stable_secret_dependent_and_hides_the_bsn() -> None:
    a = youth_key("s" * 32, BSN)
    assert a == youth_key("s" * 32, " " + BSN) and len(a) == 64
    assert a != youth_key("t" * 32, BSN)
    assert BSN not in a
    assert youth_key("s" * 32, "11222333") == youth_key("s" * 32, "011222333")


def test_error_messages_never_echo_input_values() -> None:
    try:
        Envelope.model_validate({"type": BSN * 20, "payload": {}})
    except ValidationError as exc:
        msg = safe_error_message(exc)
    assert "type" in msg and BSN not in msg


def test_every_consumed_topic_has_a_dlq_and_names_are_versioned() -> None:
    names = {t.name for t in all_topics()}
    for t in CONSUMED:
        assert t.dlq in names and t.dlq.endswith(".dlq.v1")
    for t in WITH_RETRY:
        assert t.retry in names
    assert "verwijsindex.signal.retry.v1" in names and "verwijsindex.signal.dlq.v1" in names
    assert all(n.rsplit(".", 1)[1].startswith("v") for n in names)
    assert len(names) == len(all_topics())


def test_an_error_message_is_storable_whatever_the_partner_answered() -> None:
    """A partner's error text goes into parked rows and DLQ headers: a NUL or an undecodable byte
    (a Latin-1 SMTP reply, surrogate-escaped) made recording the failure fail, again and again."""
    from hub.spine.dlq import safe_error_message

    for text in ("bad\x00answer", "550 Empf\udce4nger unbekannt", "line\nbreak"):
        message = safe_error_message(RuntimeError(text))
        message.encode("utf-8")  # storable in either database
        assert not any(c < " " for c in message), message
        assert "\ufffd" in message or "?" in message


def test_a_long_error_text_is_cut_before_it_is_redacted_and_keeps_what_the_whole_would() -> None:
    """A partner's answer of megabytes was redacted whole before its first 500 characters were kept."""
    from hub.spine.dlq import safe_error_message

    for head in ("9 9 9 9 9 0 0 4 4 " * 40, "999 99 0044 2 " * 40, "x" * 490 + " 999.990.044 "):
        text = head + "1 " * 500_000
        message = safe_error_message(RuntimeError(text))
        assert message == redact_text(text[:5000])[:500]
        assert "999" not in message.replace(REDACTED, "")


def test_a_reference_with_a_lone_surrogate_is_no_reference() -> None:
    from schemas._base import as_code

    assert as_code("PL-\ud800-1") is None
    assert as_code(" PL-1 ") == "PL-1"


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        *[
            (f, v)
            for f in ("message_id", "transaction_id")
            for v in ("a\x00b", "a\nb", "a\x7fb", "a\xa0b", "a\u200bb", "")
        ],
        ("message_id", "m" * 101),
        *[(f, v) for f in ("type", "source") for v in ("a\x00b", "a\nb", "a\x7fb", "")],
        *[("correlation_id", v) for v in ("a\x00b", "a\x7fb", "c" * 201)],
    ],
)
def test_an_envelope_id_the_spine_could_not_use_is_refused(field: str, bad: str) -> None:
    """Ids become headers, inbox and parked keys and audit fields: a body's ids follow the spine's rule
    for id headers (1-100 printable characters), so an id a body carries is one its header may carry;
    PostgreSQL cannot store a NUL in any of them."""
    fields = {"type": "Cmd", "payload": {}, field: bad}
    with pytest.raises(ValidationError) as caught:
        Envelope.model_validate(fields)
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]
    with pytest.raises(ValidationError):
        Envelope.from_bytes(json.dumps(fields).encode())


def test_every_code_is_a_correlation_id() -> None:
    """The hub makes envelopes without validating them (Envelope.new) and sets the correlation id to a
    reference: whatever a Code holds (a tab inside a case reference too) must read back."""
    from schemas._base import as_code
    from schemas.envelope import new_id

    for raw in ("PL2024\t0000000001-1", "  PL-1  ", "zaak\nnummer", "x" * 100):
        reference = as_code(raw)
        assert reference is not None
        made = Envelope.new("PolitieBesluit", {}, transaction_id=new_id(), correlation_id=reference)
        assert Envelope.from_bytes(made.to_bytes()) == made
        assert Envelope.model_validate(made.model_dump()).correlation_id == reference


def test_a_database_error_never_echoes_the_value_it_refused() -> None:
    """A driver may repeat the value it refused (asyncpg's and PostgreSQL's own wording below): the
    operator learns what failed and where, not the value, which may be a BSN or a youth's name."""
    from sqlalchemy.exc import DBAPIError

    class AsyncpgError(Exception):
        sqlstate = "22000"

    said = [
        "invalid input for query argument $4: {'naam': 'Sam Jansen'} (expected str, got dict)",
        "<class 'asyncpg.exceptions.DataError'>: invalid input syntax for type integer: \"Sam Jansen\"",
        'duplicate key value violates unique constraint "pk"\nDETAIL:  Key (id)=(Sam Jansen) already exists.',
        'Key (bsn)=(Sam Jansen) is not present in table "youths"',
        'invalid input value for enum gender: "Sam Jansen"',
        'date/time field value out of range: "Sam Jansen"',
        'malformed array literal: "Sam "Bobby" Jansen"',  # PostgreSQL does not escape quotes in a value
        'invalid input value for enum gender: "Sam\nJansen"',  # a value over two lines
        "Key (id)=(Sam\nJansen) already exists.",
        'value "Sam Jansen" is out of range for type integer',  # quoted before any colon
        'invalid value "Sam Jansen" for "YYYY"',
        "Key (lower(naam))=(Sam Jansen) already exists.",  # an expression index
        'invalid input value for enum prototype "Sam Jansen"',  # "type" inside another word
    ]
    for text in said:
        message = safe_error_message(DBAPIError("UPDATE signals SET x=$4", {}, AsyncpgError(text)))
        assert "Sam Jansen" not in message, message
        assert message.startswith("database error 22000 (AsyncpgError): "), message
    for named in (
        'invalid byte sequence for encoding "UTF8": 0x00',
        'duplicate key value violates unique constraint "referrals_pkey"',
        'column "bsn" of relation "youths" does not exist',
    ):  # names of things stay: they say what failed and where
        assert safe_error_message(DBAPIError("UPDATE x", {}, AsyncpgError(named))).endswith(named)
