"""Rules 2-6: the intake decision, each rule accepted and rejected at its boundary."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors import boa, leerplicht, politie
from connectors import preventief as preventief_connector
from hub import clock as hub_clock
from hub.errors import ConfigError
from hub.intake import IntakeRules, age_on, decide, load_intake_rules, reject_unparseable
from hub.intake.config import DEFAULT_RULES_FILE
from schemas.dates import birthday
from schemas.problems import FieldProblem
from schemas.referral import Decision, Outcome, Reason, Referral

BSN, NAME = "111222333", "Noah"
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def rules() -> IntakeRules:
    return load_intake_rules()


def halt_straf(
    born: str, on: str, *, referrer: str = "POLITIE", feitcode: str = "F310", **extra: Any
) -> Referral:
    data: dict[str, Any] = {
        "referrer": {"type": referrer, "organisation": "Politie eenheid Den Haag"},
        "case_reference": "PL1500-2025031201-1",
        "youth": {
            "bsn": BSN,
            "given_names": NAME,
            "surname": "Berg",
            "birth_date": born,
            "municipality": "Den Haag",
        },
        "track": "HALT_STRAF",
        "offence": {"committed_on": on, "feitcode": feitcode, "municipality": "Den Haag"},
        "confessed": True,
        "youth_agreed": True,
        "parents_agreed": True,
    }
    data.update(extra)
    return Referral.model_validate(data)


def truancy(
    hours: int, late: int = 0, *, born: str = "2011-09-05", end: str = "2025-02-14", **extra: Any
) -> Referral:
    return Referral.model_validate(
        {
            "referrer": {"type": "LEERPLICHT", "organisation": "Leerplicht Den Haag"},
            "case_reference": "LP-DH-2025-0101",
            "youth": {
                "bsn": BSN,
                "given_names": NAME,
                "surname": "Berg",
                "birth_date": born,
                "municipality": "Den Haag",
            },
            "track": "HALT_SCHOOLVERZUIM",
            "truancy": {"period_start": "2025-01-06", "period_end": end, "hours": hours, "times_late": late},
            "youth_agreed": True,
            **extra,
        }
    )


def preventief(born: str, on: str) -> Referral:
    return Referral.model_validate(
        {
            "referrer": {"type": "PREVENTIEF", "organisation": "Wijkteam Escamp"},
            "case_reference": "WT-1",
            "youth": {
                "bsn": BSN,
                "given_names": NAME,
                "surname": "Berg",
                "birth_date": born,
                "municipality": "Den Haag",
            },
            "track": "PREVENTIEF",
            "offence": {"committed_on": on, "description": "Overlast bij winkelcentrum."},
            "reason": "BALDADIG_OVERLAST",
        }
    )


def codes(decision: Decision) -> list[str]:
    return [r.code for r in decision.reasons]


def test_age_on_birthdays_and_29_february() -> None:
    assert age_on(date(2013, 3, 12), date(2025, 3, 11)) == 11
    assert age_on(date(2013, 3, 12), date(2025, 3, 12)) == 12
    assert age_on(date(2012, 2, 29), date(2024, 2, 28)) == 11
    assert age_on(date(2012, 2, 29), date(2024, 2, 29)) == 12
    assert age_on(date(2008, 2, 29), date(2026, 2, 28)) == 17
    assert age_on(date(2008, 2, 29), date(2026, 3, 1)) == 18


# --- rule 2: age per track ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("born", "on", "accepted"),
    [
        ("2013-03-12", "2025-03-11", False),  # the day before the 12th birthday
        ("2013-03-12", "2025-03-12", True),  # the 12th birthday
        ("2007-03-12", "2025-03-11", True),  # the day before the 18th birthday
        ("2007-03-12", "2025-03-12", False),  # the 18th birthday
        ("2012-02-29", "2024-02-28", False),  # born on 29 February, leap year: not yet 12
        ("2012-02-29", "2024-02-29", True),
        ("2008-02-29", "2026-02-28", True),  # common year: still 17 on 28 February
        ("2008-02-29", "2026-03-01", False),  # and 18 on 1 March
    ],
)
def test_rule_2_halt_straf_age(rules: IntakeRules, born: str, on: str, accepted: bool) -> None:
    decision = decide(halt_straf(born, on), rules)
    assert decision.accepted is accepted
    assert codes(decision) == ([] if accepted else ["LEEFTIJD_BUITEN_BEREIK"])


@pytest.mark.parametrize(
    ("born", "end", "accepted"),
    [
        ("2013-02-15", "2025-02-14", False),
        ("2013-02-14", "2025-02-14", True),
        ("2007-02-15", "2025-02-14", True),
        ("2007-02-14", "2025-02-14", False),
    ],
)
def test_rule_2_schoolverzuim_age_on_the_last_day_of_truancy(
    rules: IntakeRules, born: str, end: str, accepted: bool
) -> None:
    assert decide(truancy(16, born=born, end=end), rules).accepted is accepted


@pytest.mark.parametrize(
    ("born", "on", "accepted"),
    [
        ("2015-03-12", "2025-03-11", False),
        ("2015-03-12", "2025-03-12", True),
        ("2001-03-12", "2025-03-11", True),
        ("2001-03-12", "2025-03-12", False),
    ],
)
def test_rule_2_preventief_10_to_23(rules: IntakeRules, born: str, on: str, accepted: bool) -> None:
    assert decide(preventief(born, on), rules).accepted is accepted


# --- the day the rules count from is no later than the hub's today -------------------------------

TODAY = date(2026, 12, 5)


@pytest.mark.parametrize(
    ("referral", "field"),
    [
        (halt_straf("2015-01-10", "2027-02-01"), "offence.committed_on"),  # 11 today, 12 on that day
        (halt_straf("2010-05-14", "2026-12-06"), "offence.committed_on"),
        (truancy(16, end="2026-12-06"), "truancy.period_end"),
        (preventief("2010-05-14", "2026-12-06"), "offence.committed_on"),
    ],
    ids=["politie-2027", "politie-tomorrow", "leerplicht", "preventief"],
)
def test_a_date_after_today_is_rejected_naming_the_field(
    rules: IntakeRules, referral: Referral, field: str
) -> None:
    decision = decide(referral, rules, today=TODAY)
    assert decision.outcome is Outcome.REJECTED
    assert [(r.code, r.field) for r in decision.reasons] == [("DATUM_IN_TOEKOMST", field)]
    assert "05-12-2026" in decision.reasons[0].message
    assert BSN not in decision.model_dump_json() and NAME not in decision.model_dump_json()


@pytest.mark.parametrize(
    "referral",
    [
        halt_straf("2010-05-14", "2026-12-05"),
        truancy(16, end="2026-12-05"),
        preventief("2010-05-14", "2026-12-05"),
    ],
    ids=["politie", "leerplicht", "preventief"],
)
def test_a_date_on_today_is_fine(rules: IntakeRules, referral: Referral) -> None:
    assert decide(referral, rules, today=TODAY).accepted


def test_today_is_the_dutch_day_by_the_system_clock_unless_given(rules: IntakeRules) -> None:
    ahead = hub_clock.today() + timedelta(days=30)
    referral = halt_straf(birthday(ahead, -14).isoformat(), ahead.isoformat())
    assert codes(decide(referral, rules)) == ["DATUM_IN_TOEKOMST"]
    assert decide(referral, rules, today=ahead).accepted


def sample(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_bytes())  # type: ignore[no-any-return]


def politie_2027() -> Referral:
    """11 years old today, 12 on an offence date still to come."""
    data = sample("politie/valid_winkeldiefstal.json")
    data["pleegdatum"], data["verdachte"]["geboortedatum"] = "01-02-2027", "10-01-2015"
    return politie.parse(json.dumps(data).encode())


def boa_tomorrow() -> Referral:
    data = sample("boa/valid_openbare_dronkenschap.json") | {"tijdstip": "2026-12-05T23:00:00Z"}  # 00:00
    return boa.parse(json.dumps(data).encode())


def preventief_tomorrow() -> Referral:
    data = sample("preventief/valid_wijkteam.json")
    data["aanleiding"]["datum"] = "06-12-2026"
    return preventief_connector.parse(json.dumps(data).encode())


def leerplicht_tomorrow() -> Referral:
    header, row = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()[:2]
    cells = row.split(";")
    cells[header.split(";").index("Verzuim tot en met")] = "06-12-2026"
    [result] = leerplicht.parse_batch(f"{header}\n{';'.join(cells)}".encode())
    assert result.referral is not None, result.problems
    return result.referral


@pytest.mark.parametrize(
    ("parse", "field"),
    [
        (politie_2027, "offence.committed_on"),
        (boa_tomorrow, "offence.committed_on"),
        (preventief_tomorrow, "offence.committed_on"),
        (leerplicht_tomorrow, "truancy.period_end"),
    ],
    ids=["politie", "boa", "preventief", "leerplicht"],
)
def test_each_partner_format_with_a_date_after_today_is_rejected(
    rules: IntakeRules, parse: Callable[[], Referral], field: str
) -> None:
    decision = decide(parse(), rules, today=TODAY)
    assert decision.outcome is Outcome.REJECTED
    assert ("DATUM_IN_TOEKOMST", field) in [(r.code, r.field) for r in decision.reasons]


# --- rule 3: Halt-straf conditions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "parents_agreed", "accepted"),
    [
        ("2025-03-11", None, False),
        ("2025-03-11", False, False),
        ("2025-03-11", True, True),
        ("2025-03-12", None, True),
        ("2025-03-12", False, True),
    ],
)
def test_rule_3_parents_agree_under_16(
    rules: IntakeRules, on: str, parents_agreed: bool | None, accepted: bool
) -> None:
    decision = decide(halt_straf("2009-03-12", on, parents_agreed=parents_agreed), rules)
    assert decision.accepted is accepted
    assert codes(decision) == ([] if accepted else ["OUDERS_NIET_AKKOORD"])


def test_rule_3_youth_confessed_and_agreed(rules: IntakeRules) -> None:
    assert codes(decide(halt_straf("2010-05-14", "2025-03-12", confessed=False), rules)) == ["NIET_BEKEND"]
    assert codes(decide(halt_straf("2010-05-14", "2025-03-12", youth_agreed=None), rules)) == [
        "JEUGDIGE_NIET_AKKOORD"
    ]


# --- rule 4: BOA scope -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feitcode", "on", "municipality", "project", "accepted"),
    [
        ("F453", "2025-03-15", "Den Haag", None, True),  # art. 453 Sr
        ("A045", "2025-03-15", "Gouda", None, True),  # art. 45 Alcoholwet
        ("F310", "2025-03-15", "Den Haag", None, False),  # theft: not a BOA matter
        ("V236", "2025-09-30", "Den Haag", None, False),  # the day before the project starts
        ("V236", "2025-10-01", "Den Haag", None, True),  # the project's first day
        ("V236", "2026-01-31", "Den Haag", "DH-JAARWISSELING-2526", True),  # its last day
        ("V236", "2026-02-01", "Den Haag", "DH-JAARWISSELING-2526", False),  # the day after
        ("V236", "2025-12-28", "Leiden", None, False),  # another municipality
        ("V236", "2025-12-28", "Den Haag", "LEI-APV-2025", False),  # a project not covering the feit
        ("V236", "2025-12-28", "Den Haag", "ONBEKEND-1", False),  # an unknown project
    ],
)
def test_rule_4_boa_scope(
    rules: IntakeRules, feitcode: str, on: str, municipality: str, project: str | None, accepted: bool
) -> None:
    referral = halt_straf("2010-05-14", on, referrer="BOA", feitcode=feitcode, boa_project=project)
    referral = referral.model_copy(
        update={"offence": referral.offence.model_copy(update={"municipality": municipality})}
    )  # type: ignore[union-attr]
    decision = decide(referral, rules)
    assert decision.accepted is accepted
    assert codes(decision) == ([] if accepted else ["BOA_BUITEN_BEVOEGDHEID"])


def test_rule_4_applies_to_boa_only(rules: IntakeRules) -> None:
    assert decide(halt_straf("2010-05-14", "2025-03-15", feitcode="F310"), rules).accepted


# --- rule 5: truancy bounds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "late", "accepted"),
    [
        (8, 0, False),
        (9, 0, True),
        (60, 0, True),
        (61, 0, False),
        (0, 11, False),
        (0, 12, True),
        (0, 60, True),
        (0, 61, False),
        (8, 11, False),
        (20, 61, False),
    ],
)
def test_rule_5_truancy_bounds(rules: IntakeRules, hours: int, late: int, accepted: bool) -> None:
    decision = decide(truancy(hours, late), rules)
    assert decision.accepted is accepted
    assert codes(decision) == ([] if accepted else ["SCHOOLVERZUIM_BUITEN_GRENZEN"])
    assert decide(truancy(hours, late, ovj_approval=True), rules).accepted


def test_rule_5_second_truancy_referral_needs_ovj(rules: IntakeRules) -> None:
    assert decide(truancy(16), rules, prior_truancy_referrals=0).accepted
    assert codes(decide(truancy(16), rules, prior_truancy_referrals=1)) == ["SCHOOLVERZUIM_HERHAALD"]
    assert decide(truancy(16, ovj_approval=True), rules, prior_truancy_referrals=1).accepted
    assert decide(truancy(16), rules).reason_category is Reason.SCHOOLVERZUIM


# --- rule 6: damage caps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("share", "total", "accepted", "field"),
    [
        ("900.00", "900.00", True, None),
        ("900.01", "900.01", False, "damage.youth_share"),
        ("100.00", "4500.00", True, None),
        ("100.00", "4500.01", False, "damage.case_total"),
    ],
)
def test_rule_6_damage_caps(
    rules: IntakeRules, share: str, total: str, accepted: bool, field: str | None
) -> None:
    damage = {"youth_share": share, "case_total": total}
    decision = decide(halt_straf("2010-05-14", "2025-03-12", feitcode="F350", damage=damage), rules)
    assert decision.accepted is accepted
    assert [r.field for r in decision.reasons] == ([] if accepted else [field])
    assert decide(halt_straf("2010-05-14", "2025-03-12", damage=damage, ovj_approval=True), rules).accepted


def test_caps_come_from_config(rules: IntakeRules) -> None:
    assert rules.damage_caps.per_person_eur == Decimal("900.00")
    assert rules.damage_caps.per_case_eur == Decimal("4500.00")


# --- Halt-feiten table -------------------------------------------------------------------------


def test_feitcode_maps_to_reason_category(rules: IntakeRules) -> None:
    assert (
        decide(halt_straf("2010-05-14", "2025-03-12", feitcode="F350"), rules).reason_category
        is Reason.VERNIELING
    )
    assert decide(halt_straf("2010-05-14", "2025-03-12", feitcode="f138"), rules).reason_category is (
        Reason.DIGITAAL_GRENSOVERSCHRIJDEND
    )


def test_unknown_or_missing_feitcode_and_ovj_offences(rules: IntakeRules) -> None:
    assert codes(decide(halt_straf("2010-05-14", "2025-03-12", feitcode="F999"), rules)) == ["GEEN_HALTFEIT"]
    referral = halt_straf("2010-05-14", "2025-03-12")
    no_code = referral.model_copy(update={"offence": referral.offence.model_copy(update={"feitcode": None})})  # type: ignore[union-attr]
    assert codes(decide(no_code, rules)) == ["FEITCODE_ONTBREEKT"]
    assert codes(decide(halt_straf("2010-05-14", "2025-03-12", feitcode="F300"), rules)) == [
        "OVJ_TOESTEMMING_VEREIST"
    ]
    assert decide(halt_straf("2010-05-14", "2025-03-12", feitcode="F300", ovj_approval=True), rules).accepted


def test_every_failing_rule_is_reported_without_bsn_or_name(rules: IntakeRules) -> None:
    referral = halt_straf(
        "2013-03-12",
        "2025-03-11",
        referrer="BOA",
        confessed=False,
        parents_agreed=False,
        damage={"youth_share": "950", "case_total": "5000"},
    )
    decision = decide(referral, rules)
    assert decision.outcome is Outcome.REJECTED
    assert codes(decision) == [
        "LEEFTIJD_BUITEN_BEREIK",
        "NIET_BEKEND",
        "OUDERS_NIET_AKKOORD",
        "BOA_BUITEN_BEVOEGDHEID",
        "SCHADE_BOVEN_GRENS",
        "SCHADE_BOVEN_GRENS",
    ]
    text = decision.model_dump_json()
    assert BSN not in text and NAME not in text and "Berg" not in text
    assert decision.case_reference == "PL1500-2025031201-1"
    assert decision.rules_version == rules.version


def test_unparseable_record_gets_a_rejection_with_field_reasons() -> None:
    problems = [FieldProblem(field="pleegdatum", problem="deze datum bestaat niet", allowed="dd-mm-jjjj")]
    decision = reject_unparseable(problems, "PL1500-2025031201-1")
    assert decision.outcome is Outcome.REJECTED
    assert decision.reasons[0].code == "FORMAT_ONGELDIG"
    assert decision.reasons[0].field == "pleegdatum"
    assert reject_unparseable([], None).reasons


# --- configuration -----------------------------------------------------------------------------


def write(tmp_path: Path, change: Any) -> Path:
    data = json.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_shipped_rules_load(rules: IntakeRules) -> None:
    assert rules.truancy.min_hours == 9 and rules.truancy.max_times_late == 60
    assert rules.feit("f453") is not None
    assert rules.project("dh-jaarwisseling-2526") is not None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["damage_caps"].update(per_person_eur="veel"), "damage_caps.per_person_eur"),
        (lambda d: d["boa_projects"][0].update(end="2026-10-02"), "boa_projects[0]"),
        (lambda d: d.pop("truancy"), "truancy"),
        (lambda d: d["halt_feiten"].append(dict(d["halt_feiten"][0])), "halt_feiten lists a feitcode twice"),
        (lambda d: d["halt_feiten"][0].update(reason="ONBEKEND"), "halt_feiten[0].reason"),
        (lambda d: d["age_ranges"].pop("PREVENTIEF"), "age_ranges lacks PREVENTIEF"),
    ],
)
def test_a_bad_rules_file_names_file_and_field(tmp_path: Path, change: Any, field: str) -> None:
    path = write(tmp_path, change)
    with pytest.raises(ConfigError) as info:
        load_intake_rules(path)
    assert str(path) in str(info.value)
    assert field in str(info.value)


def test_a_project_of_exactly_one_year_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, lambda d: d["boa_projects"][0].update(start="2024-02-29", end="2025-02-28"))
    assert load_intake_rules(path).boa_projects[0].end == date(2025, 2, 28)
    path = write(tmp_path, lambda d: d["boa_projects"][0].update(start="2025-01-01", end="2025-12-31"))
    assert load_intake_rules(path).boa_projects[0].end == date(2025, 12, 31)
    # both days count: to the next 1 January is a year and a day
    path = write(tmp_path, lambda d: d["boa_projects"][0].update(start="2025-01-01", end="2026-01-01"))
    with pytest.raises(ConfigError, match="boa_projects\\[0\\].*ends on 2025-12-31 at the latest"):
        load_intake_rules(path)


def test_missing_or_broken_rules_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_intake_rules(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_intake_rules(broken)


def test_a_rejection_can_be_made_whatever_the_unreadable_record_held() -> None:
    """The reference and field names come from input that failed validation: a control character, a
    blank or an oversize reference, a field named with a line break, must not stop the answer."""
    problems = [
        FieldProblem(field="extra\x01", problem="onbekend veld"),
        FieldProblem(field="naam\nINFO forged", problem="onbekend veld"),
        FieldProblem(field="   ", problem="onbekend veld"),
        FieldProblem(field="x" * 300, problem="onbekend veld"),
    ]
    for reference, kept in (
        ("PL-1\x00", None),
        ("LP-DH-\x01-0101", None),
        ("   ", None),
        ("P" * 101, None),
        (" PL-2 ", "PL-2"),
    ):
        decision = reject_unparseable(problems, reference)
        assert decision.case_reference == kept
        assert [r.field for r in decision.reasons] == [
            "extra\ufffd",
            "naam\ufffdINFO forged",
            None,
            "x" * 100,
        ]
        assert Decision.model_validate_json(decision.model_dump_json()) == decision
