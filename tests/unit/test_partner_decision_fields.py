"""A refusal names the field it concerns in the referrer's own format too (BOA, leerplicht, preventief,
police), through the mapping beside each parser: the mappings stay true to their parsers and cover
every field the rules refuse that partner's referrals on."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from connectors import boa, leerplicht, politie, preventief
from hub.api.referral_models import DecisionOut
from hub.intake import IntakeRules, decide, load_intake_rules, reject_unparseable
from hub.intake.partner_fields import OWN_FIELDS, partner_field
from hub.intake.rules import REASON_FIELDS
from hub.intake.service import conflict_of
from schemas.problems import FieldProblem, PartnerFormatError
from schemas.referral import Decision, DecisionReason, Referral, ReferrerType

DATA = Path(__file__).resolve().parents[1] / "data"
TODAY = date(2025, 3, 20)
Record = dict[str, Any]


def put(record: Record, path: str, value: Any) -> Record:
    """`record` with `value` at the dotted JSON `path` ('betrokkene.geboortedatum')."""
    *parents, last = path.split(".")
    node = record
    for part in parents:
        node = node[part]
    node[last] = value
    return record


class Json:
    """A JSON partner: its valid sample, changed at a dotted path, parsed or refused by its parser."""

    def __init__(self, module: ModuleType, sample: str) -> None:
        self.module, self.path = module, DATA / module.SAMPLE_DIR / sample

    def sample(self) -> Record:
        record: Record = json.loads(self.path.read_bytes())
        return record

    def parse(self, record: Record) -> Referral:
        referral: Referral = self.module.parse(json.dumps(record).encode())
        return referral

    def problems(self, record: Record) -> list[FieldProblem]:
        with pytest.raises(PartnerFormatError) as info:
            self.parse(record)
        return info.value.problems


class Csv(Json):
    """Leerplicht: one row of its valid sample export, column header to cell, as a batch of one row."""

    def sample(self) -> Record:
        header, first, *_ = self.path.read_text(encoding="utf-8").splitlines()
        return dict(zip(header.split(";"), first.split(";"), strict=True))

    def _rows(self, record: Record) -> list[leerplicht.RowResult]:
        return leerplicht.parse_batch(f"{';'.join(record)}\n{';'.join(record.values())}".encode())

    def parse(self, record: Record) -> Referral:
        [row] = self._rows(record)
        assert row.referral is not None, row.problems
        return row.referral

    def problems(self, record: Record) -> list[FieldProblem]:
        [row] = self._rows(record)
        assert row.referral is None
        return row.problems


BOA = Json(boa, "valid_openbare_dronkenschap.json")
LEERPLICHT = Csv(leerplicht, "valid_batch_utf8.csv")
PREVENTIEF = Json(preventief, "valid_wijkteam.json")
PARTNERS = {"boa": BOA, "leerplicht": LEERPLICHT, "preventief": PREVENTIEF}


def value_at(referral: Referral, field: str) -> Any:
    """The canonical field's value ('damage.case_total'); None under a part the referral lacks."""
    node: Any = referral
    for part in field.split("."):
        node = None if node is None else getattr(node, part)
    return node


# For every mapped field: a value the sample does not hold as the partner sends it, the canonical
# value it must become, and a value the format refuses.
PROBES: dict[str, dict[str, tuple[Any, Any, Any]]] = {
    "boa": {
        "case_reference": ("DH-2025-00481517", "DH-2025-00481517", []),
        "youth.birth_date": ("22-08-2008", date(2008, 8, 22), []),
        "offence.committed_on": ("2025-03-14T12:00:00+01:00", date(2025, 3, 14), []),
        "offence.feitcode": ("A045", "A045", []),
        "confessed": (False, False, []),
        "youth_agreed": ("nee", False, []),
        "parents_agreed": (True, True, []),
        "damage.youth_share": ("12,50", Decimal("12.50"), []),
        "damage.case_total": ("12,50", Decimal("12.50"), []),
        "boa_project": ("dh-jaarwisseling-2526", "DH-JAARWISSELING-2526", "-x"),
    },
    "leerplicht": {
        "case_reference": ("LP-DH-2025-0199", "LP-DH-2025-0199", "x" * 101),
        "youth.birth_date": ("06-09-2011", date(2011, 9, 6), "31-04-2011"),
        "truancy.period_end": ("15-02-2025", date(2025, 2, 15), "31-02-2025"),
        "youth_agreed": ("nee", False, "misschien"),
        "parents_agreed": ("nee", False, "misschien"),
        "ovj_approval": ("ja", True, "misschien"),
    },
    "preventief": {
        "case_reference": ("WT-ESC-2025-0043", "WT-ESC-2025-0043", []),
        "youth.birth_date": ("12-11-2014", date(2014, 11, 12), []),
        "offence.committed_on": ("04-02-2025", date(2025, 2, 4), []),
        "youth_agreed": (False, False, []),
        "parents_agreed": ("nee", False, []),
    },
}
MAPPED = [
    (kind, field, path)
    for kind, partner in PARTNERS.items()
    for field, path in sorted(partner.module.DECISION_FIELDS.items())
]


def test_every_mapped_field_has_a_probe() -> None:
    assert {k: set(p.module.DECISION_FIELDS) for k, p in PARTNERS.items()} == {
        k: set(fields) for k, fields in PROBES.items()
    }


@pytest.mark.parametrize(("kind", "field", "path"), MAPPED, ids=[f"{k}:{f}" for k, f, _ in MAPPED])
def test_the_parser_reads_each_mapped_field_into_its_canonical_field(
    kind: str, field: str, path: str
) -> None:
    """The mapping and the parser cannot drift apart: a new value at the partner's path is the new
    value of the canonical field, and a value the format refuses there is named on that path."""
    partner, (sent, canonical, invalid) = PARTNERS[kind], PROBES[kind][field]
    before = partner.parse(partner.sample())
    assert value_at(before, field) != canonical  # the probe is a change the parser must carry over
    after = partner.parse(put(partner.sample(), path, sent))
    assert value_at(after, field) == canonical
    assert path in {p.field for p in partner.problems(put(partner.sample(), path, invalid))}


# Every canonical field a rule refuses each partner's referrals on (its track's rules, rule 7's
# conflict), and those of them the partner's format has no field for: its answers name them null.
HALT_STRAF = {
    "case_reference",
    "youth.birth_date",
    "offence.committed_on",
    "offence.feitcode",
    "confessed",
    "youth_agreed",
    "parents_agreed",
    "ovj_approval",
    "damage.youth_share",
    "damage.case_total",
}
REFUSED_ON = {
    "politie": HALT_STRAF,
    "boa": HALT_STRAF | {"boa_project"},
    "leerplicht": {"case_reference", "youth.birth_date", "truancy.period_end", "truancy", "ovj_approval"},
    "preventief": {"case_reference", "youth.birth_date", "offence.committed_on"},
}
WITHOUT_OWN_FIELD = {
    "politie": set(),
    "boa": {"ovj_approval"},
    "leerplicht": {"truancy"},
    "preventief": set(),
}
MODULES = {"politie": politie, "boa": boa, "leerplicht": leerplicht, "preventief": preventief}


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_every_field_a_partner_is_refused_on_has_its_own_field_or_none_by_choice(kind: str) -> None:
    fields = MODULES[kind].DECISION_FIELDS
    assert set(fields) <= REASON_FIELDS  # no entry for a field no reason names
    assert REFUSED_ON[kind] - set(fields) == WITHOUT_OWN_FIELD[kind]
    assert OWN_FIELDS[MODULES[kind].REFERRER_TYPE] is fields


@pytest.fixture(scope="module")
def rules() -> IntakeRules:
    return load_intake_rules()


def changed(kind: str, changes: dict[str, Any]) -> Record:
    """The partner's sample with `changes` (path to value) made."""
    record = PARTNERS[kind].sample()
    for path, value in changes.items():
        put(record, path, value)
    return record


def _conflict(referral: Referral, _: IntakeRules) -> Decision:
    return conflict_of(referral, "another-youth", datetime(2025, 3, 12, tzinfo=UTC)).decision


def _decided(prior: int = 0) -> Callable[[Referral, IntakeRules], Decision]:
    return lambda referral, rules: decide(referral, rules, prior_truancy_referrals=prior, today=TODAY)


# A valid sample changed so that rules refuse it: the (code, own field) of every reason. Together they
# refuse each partner on every field of REFUSED_ON (police: tests/unit/test_politie_decision_fields.py).
REFUSALS: list[tuple[str, dict[str, Any], Callable[[Referral, IntakeRules], Decision], list[Any]]] = [
    ("boa", {}, _conflict, [("KENMERK_IN_GEBRUIK", "bonnummer")]),
    (
        "boa",
        {"betrokkene.geboortedatum": "2006-01-01"},
        _decided(),
        [("LEEFTIJD_BUITEN_BEREIK", "betrokkene.geboortedatum")],
    ),
    ("boa", {"tijdstip": "2025-03-22T10:00:00+01:00"}, _decided(), [("DATUM_IN_TOEKOMST", "tijdstip")]),
    ("boa", {"bekend": False}, _decided(), [("NIET_BEKEND", "bekend")]),
    ("boa", {"akkoordJeugdige": "nee"}, _decided(), [("JEUGDIGE_NIET_AKKOORD", "akkoordJeugdige")]),
    (
        "boa",
        {"betrokkene.geboortedatum": "2010-01-01", "akkoordOuders": False},
        _decided(),
        [("OUDERS_NIET_AKKOORD", "akkoordOuders")],
    ),
    (
        "boa",
        {"feitcode": "Z999"},
        _decided(),
        [("GEEN_HALTFEIT", "feitcode"), ("BOA_BUITEN_BEVOEGDHEID", "feitcode")],
    ),
    (
        "boa",
        {"feitcode": "F300"},
        _decided(),
        [("OVJ_TOESTEMMING_VEREIST", None), ("BOA_BUITEN_BEVOEGDHEID", "feitcode")],
    ),
    (
        "boa",
        {"feitcode": "F310", "projectcode": "GEEN-PROJECT"},
        _decided(),
        [("BOA_BUITEN_BEVOEGDHEID", "projectcode")],  # the project, not the offence, to put right
    ),
    (
        "boa",
        {"schadebedrag": "5000,00"},
        _decided(),
        [("SCHADE_BOVEN_GRENS", "schadebedrag"), ("SCHADE_BOVEN_GRENS", "schadebedrag")],
    ),
    ("leerplicht", {}, _conflict, [("KENMERK_IN_GEBRUIK", "Dossiernummer")]),
    (
        "leerplicht",
        {"Geboortedatum": "05-09-2013"},
        _decided(),
        [("LEEFTIJD_BUITEN_BEREIK", "Geboortedatum")],
    ),
    (
        "leerplicht",
        {"Verzuim tot en met": "25-03-2025"},
        _decided(),
        [("DATUM_IN_TOEKOMST", "Verzuim tot en met")],
    ),
    ("leerplicht", {"Uren verzuim": "61"}, _decided(), [("SCHOOLVERZUIM_BUITEN_GRENZEN", None)]),
    ("leerplicht", {}, _decided(prior=1), [("SCHOOLVERZUIM_HERHAALD", "OvJ-toestemming")]),
    ("preventief", {}, _conflict, [("KENMERK_IN_GEBRUIK", "aanmeldnummer")]),
    (
        "preventief",
        {"jongere.geboortedatum": "11-11-2015"},
        _decided(),
        [("LEEFTIJD_BUITEN_BEREIK", "jongere.geboortedatum")],
    ),
    (
        "preventief",
        {"aanleiding.datum": "25-03-2025"},
        _decided(),
        [("DATUM_IN_TOEKOMST", "aanleiding.datum")],
    ),
]


@pytest.mark.parametrize(
    ("kind", "changes", "decided", "expected"),
    REFUSALS,
    ids=[f"{kind}:{expected[0][0]}:{'+'.join(changes)}" for kind, changes, _, expected in REFUSALS],
)
def test_a_refusal_names_the_partners_own_field_beside_the_canonical_one(
    rules: IntakeRules,
    kind: str,
    changes: dict[str, Any],
    decided: Callable[[Referral, IntakeRules], Decision],
    expected: list[Any],
) -> None:
    partner = PARTNERS[kind]
    decision = decided(partner.parse(changed(kind, changes)), rules)
    out = DecisionOut.of(decision, partner.module.REFERRER_TYPE)
    assert [(r.code, r.partner_field) for r in out.reasons] == expected
    # the canonical field stays as it was, beside the partner's own
    assert [r.field for r in out.reasons] == [r.field for r in decision.reasons]
    assert all(r.field in REASON_FIELDS for r in out.reasons)


def test_the_refusals_cover_every_field_each_partner_is_refused_on(rules: IntakeRules) -> None:
    seen: dict[str, set[str]] = {kind: set() for kind in PARTNERS}
    for kind, changes, decided, _ in REFUSALS:
        referral = PARTNERS[kind].parse(changed(kind, changes))
        seen[kind] |= {r.field for r in decided(referral, rules).reasons if r.field}
    assert seen == {kind: REFUSED_ON[kind] for kind in PARTNERS}


def test_the_answer_names_the_partner_field_in_camel_case_beside_the_field() -> None:
    decision = decide(BOA.parse(put(BOA.sample(), "bekend", False)), load_intake_rules(), today=TODAY)
    answer = json.loads(DecisionOut.of(decision, ReferrerType.BOA).model_dump_json(by_alias=True))
    assert answer["reasons"] == [
        {
            "code": "NIET_BEKEND",
            "message": decision.reasons[0].message,
            "field": "confessed",
            "partnerField": "bekend",
        }
    ]


@pytest.mark.parametrize(
    ("referrer", "field", "own"),
    [
        (ReferrerType.POLITIE, "confessed", "bekennend"),
        (ReferrerType.POLITIE, "truancy", None),  # no police equivalent: null, not the canonical name
        ("POLITIE", "youth.birth_date", "verdachte.geboortedatum"),  # as the store holds the type
        (ReferrerType.PREVENTIEF, "damage.youth_share", None),
        ("ONBEKEND", "youth.birth_date", None),  # a referrer without a format of its own
        (None, "youth.birth_date", None),
        (ReferrerType.BOA, None, None),  # a reason that names no field
    ],
)
def test_the_lookup_by_referrer_type(referrer: str | None, field: str | None, own: str | None) -> None:
    assert partner_field(DecisionReason(code="X_Y", message="m", field=field), referrer) == own


def test_an_unreadable_rows_reason_names_the_column_as_sent_in_both_fields() -> None:
    """A format error names the partner's own field already: it is not mapped again (a column a
    partner called "confessed" is theirs, not the hub's)."""
    problems = [
        FieldProblem(field="Geboortedatum", problem="bestaat niet"),
        FieldProblem(field="confessed", problem="x"),
    ]
    out = DecisionOut.of(reject_unparseable(problems, "LP-1"), ReferrerType.LEERPLICHT)
    assert [(r.field, r.partner_field) for r in out.reasons] == [
        ("Geboortedatum", "Geboortedatum"),
        ("confessed", "confessed"),
    ]


def test_every_referrer_type_has_its_format_mapping() -> None:
    assert set(OWN_FIELDS) == set(ReferrerType)
    assert all(isinstance(fields, Mapping) for fields in OWN_FIELDS.values())
