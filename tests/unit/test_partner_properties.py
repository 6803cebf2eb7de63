"""Properties of the JSON partner parsers (politie, BOA, preventief) over generated records.

1. A valid record in the partner's own format always becomes a Referral that keeps its facts.
2. Any one field made invalid (wrong type, missing, out of range, oversize) gives a
   PartnerFormatError that names that field, and no BSN, name or the invalid value in its text.
3. Arbitrary bytes, JSON and single-field replacements never crash: a Referral or a format error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from connectors import boa, politie, preventief
from hub.intake import reject_unparseable
from schemas.partners.boa import BoaVerwijzing
from schemas.partners.politie import PolitieVerwijzing
from schemas.partners.preventief import PreventiefAanmelding
from schemas.problems import FieldProblem, PartnerFormatError
from schemas.referral import Decision, Referral
from tests.helpers.partner_records import Drawn, boa_records, fact, politie_records, preventief_records

Records = Callable[..., st.SearchStrategy[Drawn]]

# How each field of each format can be made invalid: the kind of value it holds.
KINDS: dict[str, dict[str, str]] = {
    "politie": {
        "procesVerbaalNummer": "pattern",
        "eenheid": "text",
        "basisteam": "text",
        "verbalisant": "object",
        "verbalisant.naam": "text",
        "verbalisant.dienstnummer": "code",
        "verbalisant.email": "email",
        "verbalisant.telefoon": "phone",
        "feitcode": "pattern",
        "wetsartikel": "code",
        "pleegdatum": "date",
        "pleegplaats": "text",
        "omschrijving": "longtext",
        "verdachte": "object",
        "verdachte.bsn": "bsn",
        "verdachte.voornamen": "text",
        "verdachte.voorvoegsel": "text",
        "verdachte.achternaam": "text",
        "verdachte.geboortedatum": "date",
        "verdachte.geslacht": "literal",
        "verdachte.gemeente": "text",
        "wettelijkVertegenwoordigers": "list",
        "wettelijkVertegenwoordigers[0]": "object",
        "wettelijkVertegenwoordigers[0].naam": "text",
        "wettelijkVertegenwoordigers[0].relatie": "literal",
        "wettelijkVertegenwoordigers[0].gezag": "bool",
        "wettelijkVertegenwoordigers[0].telefoon": "phone",
        "wettelijkVertegenwoordigers[0].email": "email",
        "bekennend": "bool",
        "jeugdigeAkkoord": "bool",
        "oudersAkkoord": "bool",
        "oudersGeinformeerdOp": "date",
        "schade": "object",
        "schade.bedragJeugdige": "amount",
        "schade.bedragTotaal": "amount",
        "eerdereHaltverwijzingen": "count",
        "ovjToestemming": "bool",
        "parketnummer": "text",
    },
    "boa": {
        "bonnummer": "pattern",
        "appVersie": "text",
        "tijdstip": "datetime",
        "feitcode": "pattern",
        "feitomschrijving": "longtext",
        "projectcode": "pattern",
        "handhaver": "object",
        "handhaver.naam": "text",
        "handhaver.boaNummer": "code",
        "handhaver.organisatie": "text",
        "handhaver.email": "email",
        "handhaver.telefoon": "phone",
        "locatie": "object",
        "locatie.gemeente": "text",
        "locatie.straat": "text",
        "locatie.lat": "latitude",
        "locatie.lon": "longitude",
        "betrokkene": "object",
        "betrokkene.bsn": "bsn",
        "betrokkene.voornaam": "text",
        "betrokkene.tussenvoegsel": "text",
        "betrokkene.achternaam": "text",
        "betrokkene.geboortedatum": "date",
        "betrokkene.geslacht": "literal",
        "betrokkene.woonplaats": "text",
        "ouder": "object",
        "ouder.naam": "text",
        "ouder.telefoon": "phone",
        "ouder.email": "email",
        "ouder.gezag": "bool",
        "bekend": "bool",
        "akkoordJeugdige": "bool",
        "akkoordOuders": "bool",
        "oudersGeinformeerdOp": "date",
        "schadebedrag": "amount",
    },
    "preventief": {
        "aanmeldnummer": "reference",
        "verwijzer": "object",
        "verwijzer.soort": "literal",
        "verwijzer.organisatie": "text",
        "verwijzer.naam": "text",
        "verwijzer.email": "email",
        "verwijzer.telefoon": "phone",
        "jongere": "object",
        "jongere.bsn": "bsn",
        "jongere.voornamen": "text",
        "jongere.tussenvoegsel": "text",
        "jongere.achternaam": "text",
        "jongere.geboortedatum": "date",
        "jongere.geslacht": "literal",
        "jongere.gemeente": "text",
        "ouders": "list",
        "ouders[0]": "object",
        "ouders[0].naam": "text",
        "ouders[0].relatie": "literal",
        "ouders[0].gezag": "bool",
        "ouders[0].telefoon": "phone",
        "ouders[0].email": "email",
        "aanleiding": "object",
        "aanleiding.datum": "date",
        "aanleiding.categorie": "literal",
        "aanleiding.omschrijving": "longtext",
        "aanleiding.plaats": "text",
        "jongereAkkoord": "bool",
        "oudersAkkoord": "bool",
        "oudersGeinformeerdOp": "date",
        "school": "text",
    },
}

# Invalid values per kind; strings are distinctive, so an echo of them would be noticed.
_OVERSIZE = {"text": 201, "code": 101, "longtext": 2001, "reference": 41}
INVALID: dict[str, list[Any]] = {
    "text": [123, True, [], {"x": 1}, "Zq\x00nul", "Zq\x1bescape"],
    "code": [123, [], "Zq\x00nul"],
    "longtext": [123, ["Zq-lijst"], "Zq\x00nul\nregel", "Zq\x7fdel"],
    "reference": [123, [], "Zq", "Zq\x00nul"],
    "pattern": ["Zq geen vorm!", 5, []],
    "literal": ["Zq-onbekend", 5, []],
    "date": [20250312, True, "31-02-2025", "12 maart 2025", "2025-13-01", {"dag": 1}],
    "datetime": [1742078400, True, "Zq-gisteren", "2025-02-30T10:00:00", "31-04-2025 10:00"],
    "bool": ["Zq-misschien", 2, [], 0.5],
    "amount": [-1, "-0,01", "12,345", "1e30", "Zq-geen-bedrag", True, 10**11, {}],
    "count": [-1, 101, "Zq-veel", True, 2.5, []],
    "email": ["Zq-geen-mailadres", 5],
    "phone": ["Zq-bel-mij", 5],
    "object": ["Zq-tekst", [], 5],
    "list": ["Zq-tekst", {"naam": "x"}, 5, "too-many"],
    "latitude": [91, -90.5, "Zq-noord", True],
    "longitude": [181, -180.5, "Zq-oost", False],
    "bsn": ["wrong-check-digit", "as-number", "12345678X", []],
}

FORMATS: dict[str, tuple[ModuleType, type[BaseModel], Records]] = {
    "politie": (politie, PolitieVerwijzing, politie_records),
    "boa": (boa, BoaVerwijzing, boa_records),
    "preventief": (preventief, PreventiefAanmelding, preventief_records),
}
NAMES = list(FORMATS)


def model_paths(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, bool]]:
    """(alias path, required) of every field, nested models and list items included."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        yield path, info.is_required()
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        origin = getattr(annotation, "__origin__", None)
        for arg in (annotation, *args):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                if origin is list:
                    yield f"{path}[0]", False  # an item can be left out: the list gets shorter
                    yield from model_paths(arg, f"{path}[0].")
                else:
                    yield from model_paths(arg, f"{path}.")


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in path.split("."):
        if part.endswith("[0]"):
            steps += [part[:-3], 0]
        else:
            steps.append(part)
    return steps


def _parent(record: dict[str, Any], path: str) -> tuple[Any, str | int]:
    steps = _steps(path)
    node: Any = record
    for step in steps[:-1]:
        node = node[step]
    return node, steps[-1]


def shown_text(error: PartnerFormatError) -> str:
    return str(error) + " ".join(p.model_dump_json() for p in error.problems)


def parse_json(name: str, record: object) -> Referral:
    return FORMATS[name][0].parse(json.dumps(record).encode())  # type: ignore[no-any-return]


def test_every_field_of_every_format_has_a_kind() -> None:
    for name, (_, model, _) in FORMATS.items():
        assert {p for p, _ in model_paths(model)} == set(KINDS[name]), name
        assert set(KINDS[name].values()) <= set(INVALID)


# --- 1. valid records keep their facts ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_valid_record_becomes_a_referral_that_keeps_its_facts(name: str, data: st.DataObject) -> None:
    drawn = data.draw(FORMATS[name][2](full=data.draw(st.booleans())))
    referral = parse_json(name, drawn.record)
    for key, expected in drawn.facts.items():
        assert fact(referral, key) == expected, key
    assert FORMATS[name][0].case_reference_of(json.dumps(drawn.record).encode()) == referral.case_reference


# --- 2. one invalid field is named, and nothing is echoed ------------------------------------


def _invalid(kind: str, choice: Any, old: Any, drawn: Drawn) -> Any:
    if kind in _OVERSIZE and choice == "oversize":
        return "Zq" * _OVERSIZE[kind]
    if choice == "wrong-check-digit":
        return old[:-1] + str((int(old[-1]) + 1) % 10)
    if choice == "as-number":
        return int(old)
    if choice == "too-many":
        return [old[0]] * 11
    return choice


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_invalid_field_is_named_and_its_value_never_echoed(name: str, data: st.DataObject) -> None:
    module, model, records = FORMATS[name]
    drawn = data.draw(records(full=True))
    required = dict(model_paths(model))
    path = data.draw(st.sampled_from(sorted(KINDS[name])), label="field")
    kind = KINDS[name][path]
    choices = INVALID[kind] + (["oversize"] if kind in _OVERSIZE else [])
    choices += ["missing"] if required[path] else []
    choice = data.draw(st.sampled_from(choices), label="invalid")
    record = json.loads(json.dumps(drawn.record))
    parent, key = _parent(record, path)
    if choice == "missing":
        bad = None
        del parent[key]
    else:
        bad = _invalid(kind, choice, parent[key], drawn)
        parent[key] = bad
    with pytest.raises(PartnerFormatError) as info:
        module.parse(json.dumps(record).encode())
    fields = [p.field for p in info.value.problems]
    assert path in fields, (path, choice, fields)
    assert all(f == path or f.startswith((path + ".", path + "[")) for f in fields), fields
    shown = shown_text(info.value)
    for secret in drawn.secrets:
        assert secret not in shown
    if isinstance(bad, str | int) and not isinstance(bad, bool) and len(str(bad)) >= 4:
        assert str(bad)[:12] not in shown


# --- 3. nothing crashes ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def assert_referral_or_format_error(name: str, raw: bytes) -> list[FieldProblem]:
    module = FORMATS[name][0]
    reference = module.case_reference_of(raw)
    assert reference is None or 0 < len(reference) <= 100
    try:
        referral = module.parse(raw)
    except PartnerFormatError as exc:
        problems = exc.problems
    else:
        assert isinstance(referral, Referral)
        return []
    assert problems
    # A value the format lets through but the canonical Referral cannot hold would be reported on
    # the canonical field ("(vertaling)..."), which the partner does not know. An unknown field is
    # named as the partner sent it, even one the partner called "(vertaling)".
    translated = [p for p in problems if p.field.startswith("(vertaling)") and p.problem != "onbekend veld"]
    assert not translated, problems
    # Whatever the record held, the rejection the hub stores and sends can be made and read back.
    decision = reject_unparseable(problems, reference)
    assert Decision.model_validate_json(decision.model_dump_json()) == decision
    return problems


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.text(max_size=20), json_values, max_size=8).map(lambda v: json.dumps(v).encode()),
    )
)
@example(raw=b'{"(vertaling)": null}')  # a partner's own key that reads as the hub's marker
def test_arbitrary_bytes_give_a_format_error_not_a_crash(name: str, raw: bytes) -> None:
    assert_referral_or_format_error(name, raw)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_in_any_field_is_read_or_refused_on_that_field(name: str, data: st.DataObject) -> None:
    drawn = data.draw(FORMATS[name][2](full=True))
    path = data.draw(st.sampled_from(sorted(KINDS[name])), label="field")
    value = data.draw(json_values, label="value")
    record = json.loads(json.dumps(drawn.record))
    parent, key = _parent(record, path)
    parent[key] = value
    problems = assert_referral_or_format_error(name, json.dumps(record).encode())
    # A value out of order with another field is on what holds both: on the record (a date before
    # the birth date, "(bericht)"), or on the object of the two (a youth's share of the damage above
    # the case's total, "schade"), never on an unrelated field.
    on_field = [p for p in problems if p.field == path or p.field.startswith((path + ".", path + "["))]
    holding = [p for p in problems if path.startswith((p.field + ".", p.field + "["))]
    assert all(p.field == "(bericht)" or p in on_field or p in holding for p in problems), (path, problems)
