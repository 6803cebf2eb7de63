"""The police's decision answer names the field a reason concerns in the police's own terms."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors import politie
from hub.intake import IntakeRules, decide, load_intake_rules, reject_unparseable
from hub.intake.component import politie_besluit
from hub.intake.rules import REASON_FIELDS
from hub.intake.service import conflict_of
from hub.logging import REDACTED
from schemas.problems import PartnerFormatError
from schemas.referral import Decision, DecisionReason, Outcome
from tests.helpers.partner_records import fact

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "politie" / "valid_winkeldiefstal.json"
TODAY = date(2025, 3, 20)
# A police record has no equivalent of these: they keep their canonical names in its answer.
NO_POLICE_EQUIVALENT = {"truancy", "truancy.period_end", "boa_project"}  # never a police referral's


@pytest.fixture(scope="module")
def rules() -> IntakeRules:
    return load_intake_rules()


def sample() -> dict[str, Any]:
    record: dict[str, Any] = json.loads(SAMPLE.read_bytes())
    return record


def put(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`record` with `value` at the dotted `path` ('verdachte.geboortedatum')."""
    *parents, last = path.split(".")
    node = record
    for part in parents:
        node = node[part]
    node[last] = value
    return record


def besluit(decision: Decision) -> dict[str, Any]:
    payload: dict[str, Any] = politie_besluit(
        decision, referral_id=None, duplicate=False, transaction_id="tx-veld"
    ).payload
    return payload


def decided(record: dict[str, Any], rules: IntakeRules) -> Decision:
    return decide(politie.parse(json.dumps(record).encode()), rules, today=TODAY)


@pytest.mark.parametrize(
    ("changes", "code", "veld"),
    [
        ({"verdachte.geboortedatum": "01-01-2006"}, "LEEFTIJD_BUITEN_BEREIK", "verdachte.geboortedatum"),
        ({"pleegdatum": "21-03-2025"}, "DATUM_IN_TOEKOMST", "pleegdatum"),
        ({"bekennend": False}, "NIET_BEKEND", "bekennend"),
        ({"jeugdigeAkkoord": False}, "JEUGDIGE_NIET_AKKOORD", "jeugdigeAkkoord"),
        ({"oudersAkkoord": False}, "OUDERS_NIET_AKKOORD", "oudersAkkoord"),
        ({"feitcode": "Z999"}, "GEEN_HALTFEIT", "feitcode"),
        (
            {"schade.bedragJeugdige": "950,00", "schade.bedragTotaal": "950,00"},
            "SCHADE_BOVEN_GRENS",
            "schade.bedragJeugdige",
        ),
        (
            {"schade.bedragJeugdige": "10,00", "schade.bedragTotaal": "5000,00"},
            "SCHADE_BOVEN_GRENS",
            "schade.bedragTotaal",
        ),
    ],
)
def test_a_refused_police_record_names_the_police_field(
    rules: IntakeRules, changes: dict[str, Any], code: str, veld: str
) -> None:
    record = sample()
    for path, value in changes.items():
        put(record, path, value)
    decision = decided(record, rules)
    [reden] = besluit(decision)["redenen"]
    assert (reden["code"], reden["veld"]) == (code, veld)
    # the canonical decision, which other consumers read, keeps the hub's own field
    [reason] = decision.reasons
    assert reason.field is not None and reason.field in REASON_FIELDS


def test_an_offence_that_needs_the_ovj_names_the_police_ovj_field(rules: IntakeRules) -> None:
    feit = next(f for f in rules.halt_feiten if f.requires_ovj)
    decision = decided(put(sample(), "feitcode", feit.feitcode), rules)
    assert [(r["code"], r["veld"]) for r in besluit(decision)["redenen"]] == [
        ("OVJ_TOESTEMMING_VEREIST", "ovjToestemming")
    ]


def test_a_case_reference_used_for_another_youth_names_the_pv_number() -> None:
    referral = politie.parse(SAMPLE.read_bytes())
    conflict = conflict_of(referral, "youth-key", datetime(2025, 3, 12, tzinfo=UTC))
    assert [r["veld"] for r in besluit(conflict.decision)["redenen"]] == ["procesVerbaalNummer"]
    assert conflict.decision.reasons[0].field == "case_reference"


def test_an_unreadable_record_keeps_the_fields_as_the_police_sent_them() -> None:
    """A format error names the field as sent already; a key of theirs that reads as a canonical
    field is theirs, not the field the hub would map it to."""
    raw = json.dumps(put(sample(), "confessed", True) | {"pleegdatum": "gisteren"}).encode()
    with pytest.raises(PartnerFormatError) as info:
        politie.parse(raw)
    answer = besluit(reject_unparseable(info.value.problems, "PL1500-2025031201-1"))
    assert {r["veld"] for r in answer["redenen"]} == {"confessed", "pleegdatum"}


def test_a_bsn_sent_as_a_field_name_is_not_echoed_in_the_answer() -> None:
    """The HTTP answer redacts BSN-like text in a field's name; the police topic's answer echoed a
    BSN sent as a key (a record built wrongly) in `veld` and in its `toelichting`."""
    bsn = "999990019"
    raw = json.dumps(sample() | {bsn: {"naam": "x"}, f"bsn {bsn}": 1}).encode()
    with pytest.raises(PartnerFormatError) as info:
        politie.parse(raw)
    answer = besluit(reject_unparseable(info.value.problems, "PL1500-2025031201-1"))
    assert len(answer["redenen"]) == 2
    assert bsn not in json.dumps(answer)
    assert sorted(r["veld"] for r in answer["redenen"]) == [REDACTED, f"bsn {REDACTED}"]


def test_every_field_a_rule_names_has_its_police_field_or_keeps_its_name() -> None:
    assert set(politie.DECISION_FIELDS) <= REASON_FIELDS  # no entry for a field no reason names
    assert REASON_FIELDS - set(politie.DECISION_FIELDS) == NO_POLICE_EQUIVALENT
    reasons = [
        DecisionReason(code="X_Y", message="m", field=f) for f in [*sorted(NO_POLICE_EQUIVALENT), None]
    ]
    decision = Decision(outcome=Outcome.REJECTED, reasons=reasons)
    assert [r["veld"] for r in besluit(decision)["redenen"]] == [*sorted(NO_POLICE_EQUIVALENT), None]


# A value the sample does not hold, as the police send it and as the canonical Referral holds it.
PROBES: dict[str, tuple[Any, Any]] = {
    "case_reference": ("PL1500-2025031201-7", "PL1500-2025031201-7"),
    "youth.birth_date": ("01-02-2011", date(2011, 2, 1)),
    "offence.committed_on": ("13-03-2025", date(2025, 3, 13)),
    "offence.feitcode": ("F461", "F461"),
    "confessed": (False, False),
    "youth_agreed": (False, False),
    "parents_agreed": (False, False),
    "ovj_approval": (True, True),
    "damage.youth_share": ("5,00", Decimal("5.00")),
    "damage.case_total": ("9,00", Decimal("9.00")),
}


def test_every_police_field_has_a_probe() -> None:
    assert set(PROBES) == set(politie.DECISION_FIELDS)


@pytest.mark.parametrize(("field", "path"), sorted(politie.DECISION_FIELDS.items()))
def test_the_parser_reads_each_police_field_into_its_canonical_field(field: str, path: str) -> None:
    """The mapping and the parser cannot drift apart: a new value at the police path is the new value
    of the canonical field, and a value the format refuses there is named on that path."""
    sent, canonical = PROBES[field]
    before = politie.parse(SAMPLE.read_bytes())
    assert fact(before, field) != canonical  # the probe is a change the parser must carry over
    after = politie.parse(json.dumps(put(sample(), path, sent)).encode())
    assert fact(after, field) == canonical
    with pytest.raises(PartnerFormatError) as info:
        politie.parse(json.dumps(put(sample(), path, [])).encode())
    assert path in {p.field for p in info.value.problems}
