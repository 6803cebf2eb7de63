"""The canonical models: strict, consistent, and safe to put in an error or a mail."""

from __future__ import annotations

import ast
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    Absence,
    Caseworker,
    Consent,
    Decision,
    DecisionReason,
    FieldProblem,
    Handover,
    MailNotification,
    Match,
    Outcome,
    PartnerFormatError,
    Referral,
    SignalStatus,
    VerwijsindexSignal,
)
from schemas.signal import MUNICIPALITY_MAX, NewSignalYouth, SignalYouth

ROOT = Path(__file__).resolve().parents[2]


def referral_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "referrer": {
            "type": "POLITIE",
            "organisation": "Politie eenheid Den Haag",
            "officer_name": "S. Verhoeven",
        },
        "case_reference": "PL1500-2025031201-1",
        "youth": {
            "bsn": "111222333",
            "given_names": "Noah",
            "surname": "van der Berg",
            "birth_date": "2010-05-14",
            "gender": "MAN",
            "municipality": "Den Haag",
            "guardians": [{"name": "M. van der Berg", "relation": "OUDER", "has_custody": True}],
        },
        "track": "HALT_STRAF",
        "offence": {"committed_on": "2025-03-12", "feitcode": "F310", "article": "art. 310 Sr"},
        "damage": {"youth_share": "7.45", "case_total": "7.45"},
        "confessed": True,
        "youth_agreed": True,
        "parents_agreed": True,
    }
    data.update(changes)
    return data


def test_a_referral_round_trips_through_json() -> None:
    referral = Referral.model_validate(referral_data())
    again = Referral.model_validate_json(referral.model_dump_json())
    assert again == referral
    assert again.damage is not None and again.damage.youth_share == Decimal("7.45")
    assert again.offence_date == date(2025, 3, 12)


def test_unknown_fields_are_refused_at_every_level() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        Referral.model_validate(referral_data(kenteken="XX-12-YY"))
    data = referral_data()
    data["youth"]["shoe_size"] = 43
    with pytest.raises(ValidationError, match="shoe_size"):
        Referral.model_validate(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"track": "HALT_SCHOOLVERZUIM"}, "not open to referrer"),
        ({"offence": None}, "has an offence"),
        (
            {
                "referrer": {"type": "LEERPLICHT", "organisation": "Leerplicht Den Haag"},
                "track": "HALT_SCHOOLVERZUIM",
            },
            "has truancy",
        ),
        ({"damage": {"youth_share": "20.00", "case_total": "10.00"}}, "exceeds case_total"),
    ],
)
def test_inconsistent_referrals_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Referral.model_validate(referral_data(**changes))


def test_truancy_referral_uses_the_last_day_of_the_period_as_offence_date() -> None:
    referral = Referral.model_validate(
        referral_data(
            referrer={"type": "LEERPLICHT", "organisation": "Leerplicht Den Haag"},
            track="HALT_SCHOOLVERZUIM",
            offence=None,
            damage=None,
            truancy={"period_start": "2025-01-06", "period_end": "2025-02-14", "hours": 16},
        )
    )
    assert referral.offence_date == date(2025, 2, 14)


def test_referral_validation_error_does_not_echo_name_or_bsn() -> None:
    data = referral_data()
    data["youth"]["bsn"] = "123456789"
    data["youth"]["birth_date"] = "not a date"
    with pytest.raises(ValidationError) as info:
        Referral.model_validate(data)
    assert "123456789" not in str(info.value)
    assert "not a date" not in str(info.value)


def test_a_rejection_names_a_reason() -> None:
    with pytest.raises(ValidationError, match="at least one reason"):
        Decision(outcome=Outcome.REJECTED)
    decision = Decision(
        outcome=Outcome.REJECTED,
        reasons=[DecisionReason(code="NIET_BEKEND", message="Bekent niet.", field="confessed")],
    )
    assert not decision.accepted
    assert Decision(outcome=Outcome.ACCEPTED).accepted


def test_reason_codes_are_machine_codes() -> None:
    with pytest.raises(ValidationError):
        DecisionReason(code="niet bekend", message="x")


def test_mail_refuses_a_bsn_in_subject_or_body() -> None:
    ok = MailNotification(
        recipient_caseworker_id="cw-1",
        template="match",
        subject="Nieuwe match",
        body_text="Neem contact op met J. Jansen, wijkteam.",
        case_reference="HALT-2025-0001",
    )
    assert ok.notification_id
    with pytest.raises(ValidationError, match="looks like a BSN") as info:
        MailNotification(
            recipient_caseworker_id="cw-1",
            template="match",
            subject="Match",
            body_text="Jongere 111222333 heeft een match.",
            case_reference="HALT-2025-0001",
        )
    assert "111222333" not in str(info.value)
    with pytest.raises(ValidationError, match="at most 200 characters"):
        MailNotification(
            recipient_caseworker_id="cw-1", template="match", subject="M" * 201, body_text="x",
            case_reference="HALT-2025-0001",
        )  # fmt: skip


def test_caseworker_absence_and_delegate() -> None:
    cw = Caseworker(
        caseworker_id="cw-1",
        name="A. de Groot",
        email="a.degroot@halt.example",
        team="DEN_HAAG",
        meldingsbevoegd=True,
        absences=[Absence(start=date(2025, 7, 1), end=date(2025, 7, 21))],
        delegate_id="cw-2",
    )
    assert cw.is_absent_on(date(2025, 7, 21))
    assert not cw.is_absent_on(date(2025, 7, 22))
    assert cw.absences[0].days == 21
    with pytest.raises(ValidationError, match="own delegate"):
        Caseworker(caseworker_id="cw-1", name="X", email="x@halt.example", team="LEIDEN", delegate_id="cw-1")
    with pytest.raises(ValidationError, match="before its start"):
        Absence(start=date(2025, 7, 2), end=date(2025, 7, 1))


def test_consent_handover_signal_and_match_validate() -> None:
    consent = Consent.model_validate(
        {
            "youth": {"bsn": "111222333", "birth_date": "2010-05-14"},
            "purpose": "WARME_OVERDRACHT",
            "recipient_organisations": ["jongerenwerk-escamp"],
            "data_categories": ["PERSONALIA", "VERWIJZING"],
            "grantors": [
                {
                    "role": "JEUGDIGE",
                    "name": "N. van der Berg",
                    "permission": "PERMIT",
                    "given_at": datetime(2025, 3, 20, 10, 0).isoformat(),
                    "method": "SCHRIFTELIJK",
                }
            ],
            "recorded_by": "cw-1",
            "valid_from": "2025-03-20",
            "valid_until": "2026-03-20",
        }
    )
    assert consent.status == "ACTIEF"
    handover = Handover(
        referral_id="r-1",
        from_caseworker="cw-1",
        receiver_organisation="jongerenwerk-escamp",
        receiver_type="JONGERENWERK",
        data_categories=["PERSONALIA"],
        summary="Kort verslag.",
    )
    assert handover.status == "WACHT_OP_TOESTEMMING"
    signal = VerwijsindexSignal.model_validate(
        {
            "youth": {
                "bsn": "111222333",
                "given_names": "Noah",
                "surname": "Berg",
                "birth_date": "2010-05-14",
                "municipality": "Den Haag",
            },
            "organisation": "Halt Den Haag",
            "caseworker": {"name": "A. de Groot", "organisation": "Halt Den Haag", "email": "a@halt.example"},
            "created": "2025-03-20",
            "end_date": "2026-03-20",
            "status": "INGETROKKEN_ONTERECHT",
        }
    )
    assert signal.status is SignalStatus.INGETROKKEN_ONTERECHT
    with pytest.raises(ValidationError):
        VerwijsindexSignal.model_validate({**signal.model_dump(), "reason": "DIEFSTAL"})
    match = Match(
        match_id="m-1",
        signal_id="s-1",
        type="CLIENTMATCH",
        counterparts=[{"name": "L. Hoekstra", "organisation": "Wijkteam Escamp", "phone": "070-1234567"}],
    )
    assert match.counterparts[0].organisation == "Wijkteam Escamp"


def test_a_new_signals_municipality_fits_the_verwijsindex_and_a_stored_one_still_loads() -> None:
    """The index takes a municipality of at most 100 characters (after stripping, as sent); a signal
    stored before that was checked is read back through `SignalYouth` all the same."""
    youth = {"bsn": "111222333", "given_names": "Noah", "surname": "Berg", "birth_date": "2010-05-14"}
    fits = NewSignalYouth.model_validate(youth | {"municipality": f"  {'x' * MUNICIPALITY_MAX}  "})
    assert fits.municipality == "x" * MUNICIPALITY_MAX
    with pytest.raises(ValidationError) as refused:
        NewSignalYouth.model_validate(youth | {"municipality": "x" * (MUNICIPALITY_MAX + 1)})
    assert [e["loc"] for e in refused.value.errors()] == [("municipality",)]
    assert SignalYouth.model_validate(youth | {"municipality": "x" * 150}).municipality == "x" * 150


def test_partner_format_error_lists_fields_not_values() -> None:
    error = PartnerFormatError(
        [FieldProblem(field="verdachte.bsn", problem="geen geldig BSN", allowed="9 cijfers")]
    )
    assert isinstance(error, ValueError)
    assert "verdachte.bsn" in str(error)
    assert error.problems[0].allowed == "9 cijfers"


def test_schemas_import_only_pydantic_and_the_standard_library() -> None:
    for path in (ROOT / "schemas").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                assert top not in {"hub", "connectors"}, f"{path} imports {node.module}"
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] not in {"hub", "connectors"} for a in node.names), path


@pytest.mark.parametrize("number", [9, 1_700_000_000, 1.5e9, "1700000000", " 12 ", "-3", "1e9", True])
def test_a_moment_is_written_out_never_a_number(number: object) -> None:
    """pydantic reads a number as seconds since 1970: a receiver's `"planned_at": 1700000000` was a
    meeting on 14 November 2023, where the document allows only a date and time written out."""
    from schemas.handover import JointMeeting

    with pytest.raises(ValidationError) as err:
        JointMeeting.model_validate({"planned_at": number, "location": "Buurthuis"})
    (error,) = err.value.errors()
    assert error["type"] == "datetime_type" and error["loc"] == ("planned_at",), error
    meeting = JointMeeting.model_validate(
        {"planned_at": "2026-03-01T10:30:00+01:00", "location": "Buurthuis"}
    )
    assert meeting.planned_at.isoformat() == "2026-03-01T10:30:00+01:00"
