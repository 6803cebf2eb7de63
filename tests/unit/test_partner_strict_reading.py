"""What the partner formats must not read too leniently: the day of a moment sent in UTC, numbers
that int() and Decimal() would take, and a JSON object that names a key twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from connectors import boa, leerplicht, politie, preventief
from hub.intake import decide, load_intake_rules
from schemas.partners._common import PartnerDate
from schemas.partners.boa import BoaVerwijzing
from schemas.problems import PartnerFormatError

DATA = Path(__file__).resolve().parents[1] / "data"
RULES = load_intake_rules()


def boa_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((DATA / "boa/valid_openbare_dronkenschap.json").read_bytes())
    for path, value in changes.items():
        node = record
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return record


def problems_of(module: ModuleType, raw: bytes) -> list[tuple[str, str]]:
    with pytest.raises(PartnerFormatError) as caught:
        module.parse(raw)
    return [(p.field, p.problem) for p in caught.value.problems]


# --- the Dutch day of a moment ------------------------------------------------------------------


@pytest.mark.parametrize(
    "tijdstip",
    ["2025-03-15T23:40:00Z", "2025-03-15T23:40:00+00:00", "2025-03-16T00:40:00+01:00", "2025-03-16T00:40"],
)
def test_a_boa_moment_counts_on_its_dutch_day_whatever_its_offset(tijdstip: str) -> None:
    """23:40 UTC on 15 March is 00:40 on 16 March in the Netherlands: the 12th birthday."""
    record = boa_record(tijdstip=tijdstip, akkoordOuders=True, **{"betrokkene.geboortedatum": "2013-03-16"})
    referral = boa.parse(json.dumps(record).encode())
    assert referral.offence_date.isoformat() == "2025-03-16"
    decision = decide(referral, RULES, today=datetime(2025, 3, 20).date())
    assert decision.accepted, [r.code for r in decision.reasons]


def test_a_boa_moment_in_summer_time_and_west_of_utc_counts_on_its_dutch_day() -> None:
    cases = {
        "2025-06-30T22:30:00Z": "2025-07-01",  # 00:30 summer time
        "2025-06-30T21:59:59Z": "2025-06-30",
        "2025-03-15T20:00:00-05:00": "2025-03-16",  # 02:00 in the Netherlands
        "2025-03-16T00:30:00+02:00": "2025-03-15",  # 23:30 winter time
    }
    for tijdstip, day in cases.items():
        assert boa.parse(json.dumps(boa_record(tijdstip=tijdstip)).encode()).offence_date.isoformat() == day


@pytest.mark.parametrize("tijdstip", ["9999-12-31T23:30:00-01:00", "0001-01-01T00:05:00+01:00"])
def test_a_moment_whose_dutch_day_is_off_the_calendar_is_a_format_error(tijdstip: str) -> None:
    raw = json.dumps(boa_record(tijdstip=tijdstip)).encode()
    assert [field for field, _ in problems_of(boa, raw)] == ["tijdstip"]


def test_a_partner_date_given_as_a_moment_is_its_dutch_day() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(PartnerDate)
    assert adapter.validate_python(datetime(2025, 3, 15, 23, 40, tzinfo=UTC)).isoformat() == "2025-03-16"
    assert adapter.validate_python(datetime(2025, 3, 15, 23, 40)).isoformat() == "2025-03-15"
    with pytest.raises(ValidationError):
        adapter.validate_python(datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))))


# --- plain digits ---------------------------------------------------------------------------------

LEERPLICHT_ROW = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()[:2]


def leerplicht_row(column: str, value: str) -> leerplicht.RowResult:
    header, row = (line.split(";") for line in LEERPLICHT_ROW)
    row[header.index(column)] = value
    [result] = leerplicht.parse_batch("\r\n".join([";".join(header), ";".join(row)]).encode())
    return result


@pytest.mark.parametrize("column", ["Uren verzuim", "Aantal keer te laat", "Eerdere Halt-verwijzingen"])
@pytest.mark.parametrize("value", ["1_0", "-0", "1e1", "6.5", "١٢", "１２", "0x1"])
def test_a_leerplicht_count_is_plain_digits(column: str, value: str) -> None:
    """int() reads '1_0' as 10: a count is ASCII digits, refused on its own column otherwise."""
    result = leerplicht_row(column, value)
    assert not result.ok
    assert [p.field for p in result.problems] == [column]
    assert "geheel getal" in result.problems[0].problem


@pytest.mark.parametrize(
    ("value", "hours"), [("16", 16), (" 16 ", 16), ("016", 16), ("0", 0), ("+16", 16), ("16.0", 16)]
)
def test_a_leerplicht_count_in_digits_is_read(value: str, hours: int) -> None:
    """As partners write counts, a sign and a zero fraction included: refusing those would turn
    away what was read before, and they can mean one number only."""
    result = leerplicht_row("Uren verzuim", value)
    assert result.referral is not None and result.referral.truancy is not None
    assert result.referral.truancy.hours == hours


@pytest.mark.parametrize("value", ["1_0", "1e0", "١"])
def test_a_police_count_sent_as_text_is_plain_digits(value: str) -> None:
    record = json.loads((DATA / "politie/valid_winkeldiefstal.json").read_bytes())
    raw = json.dumps(record | {"eerdereHaltverwijzingen": value}).encode()
    assert [field for field, _ in problems_of(politie, raw)] == ["eerdereHaltverwijzingen"]
    for sent in (" 1 ", "+1"):
        ok = json.dumps(record | {"eerdereHaltverwijzingen": sent}).encode()
        assert politie.parse(ok).prior_halt_referrals == 1


@pytest.mark.parametrize("value", ["1_00", "1e2", "1E2", "١٢٥", "12_5,50", "NaN", "Infinity", "-5"])
def test_an_amount_sent_as_text_is_plain_digits(value: str) -> None:
    """Decimal() reads '1_00' as 100 and '1e2' as 100; an amount is digits with a decimal comma or point."""
    raw = json.dumps(boa_record(schadebedrag=value)).encode()
    assert [field for field, _ in problems_of(boa, raw)] == ["schadebedrag"]


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        ("125,50", "125.50"),
        ("€ 1.250,50", "1250.50"),
        ("1.250", "1250.00"),
        ("7.5", "7.50"),
        (",50", "0.50"),
        (".50", "0.50"),
        ("12,", "12.00"),
        ("12.", "12.00"),
        ("+125", "125.00"),
    ],
)
def test_amounts_in_their_usual_forms_are_still_read(value: str, amount: str) -> None:
    referral = boa.parse(json.dumps(boa_record(schadebedrag=value)).encode())
    assert referral.damage is not None and str(referral.damage.youth_share) == amount


@pytest.mark.parametrize("value", ["5_2.07", "5.2e1", "٥٢", "52,07", "--5", "."])
def test_a_coordinate_sent_as_text_is_plain_digits(value: str) -> None:
    raw = json.dumps(boa_record(**{"locatie.lat": value})).encode()
    assert [field for field, _ in problems_of(boa, raw)] == ["locatie.lat"]


@pytest.mark.parametrize(
    ("value", "read"),
    [("52.0755", 52.0755), (" -4.31 ", -4.31), ("52", 52.0), ("+4.3", 4.3), (".5", 0.5), ("5.", 5.0)],
)
def test_a_coordinate_in_digits_is_read(value: str, read: float) -> None:
    record = BoaVerwijzing.model_validate(boa_record(**{"locatie.lat": value}))
    assert record.locatie.lat == read


# --- a key named twice ----------------------------------------------------------------------------


def twice(raw: bytes, key: str, value: str) -> bytes:
    """The record with `key` (top level) sent once more, after the first, with another value."""
    return raw.replace(f'"{key}":'.encode(), f'"{key}": {value}, "{key}":'.encode(), 1)


@pytest.mark.parametrize(
    ("module", "sample", "key", "value"),
    [
        (politie, "politie/valid_winkeldiefstal.json", "bekennend", "false"),
        (boa, "boa/valid_openbare_dronkenschap.json", "bekend", "false"),
        (preventief, "preventief/valid_wijkteam.json", "jongereAkkoord", "false"),
    ],
    ids=["politie", "boa", "preventief"],
)
def test_a_json_key_sent_twice_is_refused_naming_the_key_not_a_value(
    module: ModuleType, sample: str, key: str, value: str
) -> None:
    raw = twice((DATA / sample).read_bytes(), key, value)
    assert json.loads(raw)  # json.loads would silently keep the last value
    assert problems_of(module, raw) == [(key, "naam komt dubbel voor")]


def test_a_repeated_key_in_a_nested_object_is_named_by_its_path() -> None:
    raw = (DATA / "politie/valid_winkeldiefstal.json").read_bytes()
    raw = raw.replace(b'"bsn": "628194821"', b'"bsn": "628194821", "bsn": "252760189"')
    raw = raw.replace(b'"gezag": true', b'"gezag": true, "gezag": false')
    with pytest.raises(PartnerFormatError) as caught:
        politie.parse(raw)
    assert [p.field for p in caught.value.problems] == [
        "verdachte.bsn",
        "wettelijkVertegenwoordigers[0].gezag",
    ]
    shown = str(caught.value) + " ".join(p.model_dump_json() for p in caught.value.problems)
    assert "628194821" not in shown and "252760189" not in shown


def test_a_repeated_case_reference_is_not_read_for_the_answer() -> None:
    """Which of two references was meant cannot be known: the refusal carries none."""
    raw = (DATA / "politie/valid_winkeldiefstal.json").read_bytes()
    both = raw.replace(
        b'"procesVerbaalNummer":', b'"procesVerbaalNummer": "PL1500-2025031201-9", "procesVerbaalNummer":'
    )
    assert politie.case_reference_of(both) is None
    other = twice(raw, "bekennend", "false")
    assert politie.case_reference_of(other) == "PL1500-2025031201-1"
