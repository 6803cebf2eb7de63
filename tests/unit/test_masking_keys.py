"""A BSN or a name a sender used as a key (a JSON key, a header name, a field a partner format does not
know) is masked wherever an operator reads it: a dead letter's payload, its headers, its error."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import schemas.envelope
import schemas.partners.boa
import schemas.partners.politie
import schemas.partners.preventief
import schemas.referral
from connectors import boa, leerplicht, politie
from hub.ops.dlq_records import DeadLetter, bsn_in_key_or_payload
from hub.ops.masking import MASK, show_headers, show_payload
from hub.spine.dlq import DLQ_EXC_MESSAGE, DLQ_TOPIC, dlq_headers, safe_error_message
from schemas.problems import PartnerFormatError
from schemas.referral import Referral

DATA = Path(__file__).resolve().parents[1] / "data"
BSN, OTHER = "252760189", "628194821"  # each passes the elfproef
NAME = "Sanne Jansen"
AT = datetime(2026, 3, 12, 10, 0, tzinfo=UTC)


def key(n: int) -> str:
    return f"{MASK} (sleutel {n})"


NOT_KEYS = (BSN, f"x-bsn-{BSN}", "252.760.189", "BSN_252_760_189", "10000008", "06-1234-5678", "0612345678")
NOT_KEYS += ("+31612345678", "s.jansen@mail.example", NAME, "Sanne Jansen (14), Gouda", "naam\x01", "x" * 65)
KEYS = ("procesVerbaalNummer", "verdachte", "x-partner-jongere", "dlq-original-topic", "Message-Id")
KEYS += ("geïnformeerd", "a.b", "PL1500", "rulesVersion", "2025-03", "x" * 64, "")


@pytest.mark.parametrize("name", NOT_KEYS)
def test_a_name_that_may_be_personal_data_is_not_key_shaped(name: str) -> None:
    from schemas.problems import key_shaped  # new with these tests: the others run without it

    assert not key_shaped(name)


@pytest.mark.parametrize("name", KEYS)
def test_a_field_or_header_name_is_key_shaped(name: str) -> None:
    from schemas.problems import key_shaped

    assert key_shaped(name)


def test_every_field_of_the_json_partner_formats_and_the_hubs_messages_is_key_shaped() -> None:
    """What an operator needs to mend a record: the names of the formats' own fields stay readable."""
    from schemas.problems import key_shaped

    modules = (schemas.partners.politie, schemas.partners.boa, schemas.partners.preventief)
    for module in (*modules, schemas.referral, schemas.envelope):
        for model in vars(module).values():
            if (
                inspect.isclass(model)
                and issubclass(model, BaseModel)
                and model.__module__ == module.__name__
            ):
                for name, field in model.model_fields.items():
                    assert key_shaped(name) and key_shaped(field.alias or name), (model, name)


def test_a_bsn_or_a_name_used_as_a_json_key_is_masked_and_the_structure_kept() -> None:
    record = {
        "procesVerbaalNummer": "PL1500-2026-0001",
        "jongeren": {BSN: {"urenverzuim": 12}, "252 760 189": {"urenverzuim": 3}},
        NAME: {"status": "GEWEIGERD"},
        "s.jansen@mail.example": [{NAME: 1}],
    }
    shown = show_payload(json.dumps(record).encode(), unmasked=False)
    text = json.dumps(shown, ensure_ascii=False)
    for secret in (BSN, "252 760 189", "Sanne", "Jansen", "s.jansen"):
        assert secret not in text, secret
    # distinct keys stay distinct, the same key is the same mask; values shown as before
    assert shown == {
        "procesVerbaalNummer": "PL1500-2026-0001",
        "jongeren": {key(1): {"urenverzuim": 12}, key(2): {"urenverzuim": 3}},
        key(3): {"status": "GEWEIGERD"},
        key(4): [{key(3): MASK + " (number)"}],
    }
    assert show_payload(json.dumps(record).encode(), unmasked=True) == record


def test_a_senders_header_named_with_a_bsn_or_a_name_is_masked_the_hubs_own_names_shown() -> None:
    hub = {DLQ_TOPIC: "t1.intake.politie", DLQ_EXC_MESSAGE: "poison payload"}
    own = {f"x-bsn-{BSN}": "1", "x-jongere Sanne Jansen": "ja", "x-naam": "Jan"}
    shown = show_headers(hub | own, unmasked=False)
    assert shown == hub | {key(1): MASK, key(2): MASK, "x-naam": MASK}
    assert show_headers(hub | own, unmasked=True) == hub | own


def test_a_view_of_a_letter_naming_its_youth_only_by_a_key_is_audited_under_that_youth() -> None:
    assert bsn_in_key_or_payload(None, json.dumps({"jongeren": {BSN: {"naam": "Sanne"}}}).encode()) == BSN
    # a BSN a field holds comes first; never a key within a parent's block
    named = {"dossiers": {BSN: 1}, "zaak": {"bsn": OTHER}}
    assert bsn_in_key_or_payload(None, json.dumps(named).encode()) == OTHER
    assert bsn_in_key_or_payload(None, json.dumps({"ouders": {BSN: {"naam": "M"}}}).encode()) is None


def _police(**extra: object) -> bytes:
    record = json.loads((DATA / "politie/valid_winkeldiefstal.json").read_bytes())
    record["verdachte"] |= extra
    return json.dumps(record).encode()


def _listed(exc: BaseException) -> str:
    """What the list of dead letters (any operator, not audited) shows of the letter `exc` made."""
    headers = dlq_headers(
        topic="t1.partner.politie.referral.v1",
        partition=0,
        offset=1,
        group="g1-intake",
        exc=exc,
        attempts=1,
        first_failure=AT,
        last_failure=AT,
    )
    return json.dumps(DeadLetter("t1.x.dlq.v1", 0, 1, 0, None, headers).summary(), ensure_ascii=False)


def test_a_name_or_bsn_as_an_unknown_field_of_a_police_record_is_masked_in_its_error() -> None:
    """`verdachte.Sanne Jansen: onbekend veld` was a dead letter's error header, and listed as it was."""
    with pytest.raises(PartnerFormatError) as caught:
        politie.parse(_police(**{NAME: "x", BSN: 1, "kenteken": "AB-12-CD"}))
    assert safe_error_message(caught.value) == (
        f"3 probleem/problemen: verdachte.{key(1)}: onbekend veld; verdachte.{key(2)}: onbekend veld; "
        "verdachte.kenteken: onbekend veld"
    )
    listed = _listed(caught.value)
    assert "verdachte.kenteken: onbekend veld" in listed
    for secret in ("Sanne", "Jansen", BSN):
        assert secret not in str(caught.value) and secret not in listed, secret
    # the partner's own answer names the field as sent, so it can find it
    assert {p.field for p in caught.value.problems} == {
        f"verdachte.{NAME}",
        f"verdachte.{BSN}",
        "verdachte.kenteken",
    }


def test_a_repeated_key_named_with_a_bsn_is_masked_in_the_error() -> None:
    raw = b'{"bonnummer": "DH-1", "betrokkene": {"252760189": 1, "252760189": 2}, "x y": 1, "x y": 2}'
    with pytest.raises(PartnerFormatError) as caught:
        boa.parse(raw)
    assert str(caught.value) == (
        f"2 probleem/problemen: {key(1)}: naam komt dubbel voor; betrokkene.{key(2)}: naam komt dubbel voor"
    )
    assert BSN not in _listed(caught.value)
    assert {p.field for p in caught.value.problems} == {f"betrokkene.{BSN}", "x y"}


def test_a_name_as_an_unknown_field_of_a_hub_message_is_masked_in_its_error() -> None:
    """A canonical message that does not fit: pydantic's own error, dead-lettered by the spine."""
    with pytest.raises(ValidationError) as caught:
        Referral.model_validate({NAME: 1, f"x-{BSN}": 2})
    message = safe_error_message(caught.value)
    assert f"{key(1)}: Extra inputs are not permitted; {key(2)}: Extra inputs" in message
    assert "referrer: Field required" in message
    assert "Sanne" not in _listed(caught.value) and BSN not in _listed(caught.value)


def test_a_leerplicht_rows_columns_are_known_names_not_masked() -> None:
    """A CSV column is a name of the format, shown as it is, also with spaces ("Uren verzuim")."""
    with pytest.raises(PartnerFormatError) as caught:
        leerplicht.parse_batch((DATA / "leerplicht/invalid_verplichte_kolom_ontbreekt.csv").read_bytes())
    assert safe_error_message(caught.value) == "1 probleem/problemen: Gemeente: verplichte kolom ontbreekt"
    rows = leerplicht.parse_batch((DATA / "leerplicht/rows_3_invalid_of_5.csv").read_bytes())
    problems = [p for r in rows for p in r.problems]
    assert "Uren verzuim" in {p.field for p in problems}
    assert all(getattr(p, "field_masked", None) is None for p in problems)
