"""Partner formats → canonical Referral, over every sample in tests/data."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import boa, leerplicht, politie, preventief
from schemas.partners._common import DuplicateKeyError, decode_json
from schemas.problems import PartnerFormatError
from schemas.referral import Reason, Referral, ReferrerType, Track

DATA = Path(__file__).resolve().parents[1] / "data"
JSON_CONNECTORS = (politie, boa, preventief)

# For each invalid sample: the partner field a developer must look at.
EXPECTED_FIELD = {
    "politie/invalid_bsn_elfproef.json": "verdachte.bsn",
    "politie/invalid_geen_object.json": "(bericht)",
    "politie/invalid_kapotte_json.json": "(bericht)",
    "politie/invalid_onbekend_veld.json": "kenteken",
    "politie/invalid_pleegdatum_bestaat_niet.json": "pleegdatum",
    "politie/invalid_verkeerde_types.json": "eerdereHaltverwijzingen",
    "politie/invalid_verplichte_velden_ontbreken.json": "verdachte.geboortedatum",
    "boa/invalid_bonnummer_ontbreekt.json": "bonnummer",
    "boa/invalid_bsn_als_getal.json": "betrokkene.bsn",
    "boa/invalid_geboortedatum_bestaat_niet.json": "betrokkene.geboortedatum",
    "boa/invalid_lege_body.json": "(bericht)",
    "boa/invalid_negatief_schadebedrag.json": "schadebedrag",
    "boa/invalid_onbekend_veld.json": "betrokkene.schoenmaat",
    "boa/invalid_tijdstip_onleesbaar.json": "tijdstip",
    "preventief/invalid_aanleiding_voor_geboorte.json": "(bericht)",
    "preventief/invalid_datumvorm.json": "jongere.geboortedatum",
    "preventief/invalid_geen_utf8.json": "(bericht)",
    "preventief/invalid_jongere_geen_object.json": "jongere",
    "preventief/invalid_onbekende_categorie.json": "aanleiding.categorie",
    "preventief/invalid_onbekende_verwijzer.json": "verwijzer.soort",
}
BSNS = ("628194821", "252760189", "507529170", "121547280", "385280841", "353799075")
NAMES = ("Noah", "Sanne", "Daan", "Mila", "Yasmina", "Kevin", "Haddou", "Bouzid")


def samples(module: ModuleType, prefix: str) -> list[Path]:
    return sorted((DATA / module.SAMPLE_DIR).glob(f"{prefix}*"))


@pytest.mark.parametrize("module", JSON_CONNECTORS, ids=lambda m: m.SAMPLE_DIR)
def test_each_connector_ships_valid_and_invalid_samples(module: ModuleType) -> None:
    assert samples(module, "valid")
    assert len(samples(module, "invalid")) >= 3
    assert isinstance(module.REFERRER_TYPE, ReferrerType)


@pytest.mark.parametrize(
    "path",
    [p for m in JSON_CONNECTORS for p in samples(m, "valid")],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_valid_json_samples_become_referrals(path: Path) -> None:
    module = {m.SAMPLE_DIR: m for m in JSON_CONNECTORS}[path.parent.name]
    referral = module.parse(path.read_bytes())
    assert isinstance(referral, Referral)
    assert referral.referrer.type is module.REFERRER_TYPE
    assert referral.case_reference == module.case_reference_of(path.read_bytes())
    assert referral.youth.bsn in BSNS


@pytest.mark.parametrize(
    "path",
    [p for m in JSON_CONNECTORS for p in samples(m, "invalid")],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_invalid_json_samples_name_the_wrong_field_and_never_a_value(path: Path) -> None:
    module = {m.SAMPLE_DIR: m for m in JSON_CONNECTORS}[path.parent.name]
    with pytest.raises(PartnerFormatError) as info:
        module.parse(path.read_bytes())
    fields = [p.field for p in info.value.problems]
    assert EXPECTED_FIELD[f"{path.parent.name}/{path.name}"] in fields
    shown = str(info.value) + " ".join(p.model_dump_json() for p in info.value.problems)
    assert not any(bsn in shown for bsn in (*BSNS, "628194822"))
    assert not any(name in shown for name in NAMES)


def test_politie_translation_keeps_the_facts() -> None:
    referral = politie.parse((DATA / "politie/valid_winkeldiefstal.json").read_bytes())
    assert referral.track is Track.HALT_STRAF
    assert referral.youth.surname == "van der Berg"
    assert referral.youth.guardians[0].has_custody
    assert referral.offence is not None and referral.offence.feitcode == "F310"
    assert str(referral.damage.youth_share if referral.damage else None) == "7.45"
    assert referral.confessed and referral.youth_agreed and referral.parents_agreed


def test_politie_lenient_values_are_understood() -> None:
    referral = politie.parse((DATA / "politie/valid_vernieling_16jarige.json").read_bytes())
    assert referral.confessed is True  # "ja"
    assert referral.damage is not None
    assert str(referral.damage.youth_share) == "425.50"  # a JSON number
    assert str(referral.damage.case_total) == "851.00"  # "851,00"


def test_boa_translation_uses_the_local_day_and_project() -> None:
    referral = boa.parse((DATA / "boa/valid_project_vuurwerk.json").read_bytes())
    assert referral.boa_project == "DH-JAARWISSELING-2526"
    assert referral.offence is not None and referral.offence.municipality == "Den Haag"
    late = (
        (DATA / "boa/valid_openbare_dronkenschap.json")
        .read_bytes()
        .replace(b"23:40:00+01:00", b"23:59:00+01:00")
    )
    assert boa.parse(late).offence_date.isoformat() == "2025-03-15"


def test_a_boa_birth_date_after_the_moment_is_refused_not_decided() -> None:
    # decided, a typing error was stored as REJECTED ("the youth was -2") and its bonnummer was taken
    # for good (rule 7), while the police and the others got a 400 to correct and send again
    data = json.loads((DATA / "boa/valid_openbare_dronkenschap.json").read_bytes())
    data["betrokkene"]["geboortedatum"] = "2027-01-01"
    with pytest.raises(PartnerFormatError) as info:
        boa.parse(json.dumps(data).encode())
    assert [(p.field, p.problem) for p in info.value.problems] == [
        ("(bericht)", "tijdstip ligt voor de geboortedatum van de betrokkene")
    ]


def test_preventief_category_maps_to_reason() -> None:
    referral = preventief.parse((DATA / "preventief/valid_wijkteam.json").read_bytes())
    assert referral.reason is Reason.DIGITAAL_GRENSOVERSCHRIJDEND
    assert referral.referrer.unit == "WIJKTEAM"
    assert set(preventief.REASONS.values()) == set(Reason)


@pytest.mark.parametrize("module", JSON_CONNECTORS, ids=lambda m: m.SAMPLE_DIR)
@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"\xff\xfe", b'{"x": 1}', b"null"])
def test_garbage_gives_a_format_error_and_no_reference(module: ModuleType, raw: bytes) -> None:
    with pytest.raises(PartnerFormatError):
        module.parse(raw)
    assert module.case_reference_of(raw) is None


def test_case_reference_is_read_from_a_record_that_fails() -> None:
    raw = (DATA / "politie/invalid_bsn_elfproef.json").read_bytes()
    assert politie.case_reference_of(raw) == "PL1500-2025031201-1"
    assert boa.case_reference_of(b'{"bonnummer": 12}') is None


@pytest.mark.parametrize("module", JSON_CONNECTORS, ids=lambda m: m.SAMPLE_DIR)
@pytest.mark.parametrize("reference", ["PL-1\x00", "PL-\x1b[31m-1", "PL-1\x7f", "   ", "P" * 101])
def test_a_reference_that_is_no_reference_is_not_read(module: ModuleType, reference: str) -> None:
    """What the answer to an unreadable record would carry: a control character made it unsendable."""
    raw = json.dumps({module.CASE_REFERENCE_FIELD: reference, "onbekend\x01": 1}).encode()
    with pytest.raises(PartnerFormatError) as caught:
        module.parse(raw)
    assert module.case_reference_of(raw) is None
    assert "onbekend\ufffd" in [p.field for p in caught.value.problems]


# --- leerplicht -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", samples(leerplicht, "valid"), ids=lambda p: p.name)
def test_valid_leerplicht_batches_in_every_encoding(path: Path) -> None:
    results = leerplicht.parse_batch(path.read_bytes())
    assert [r.row for r in results] == [1, 2, 3]
    assert all(r.ok for r in results)
    names = [r.referral.youth.given_names for r in results if r.referral]
    assert names == ["Daniëlle", "Eriç", "Jayden"]
    first = results[0].referral
    assert first is not None and first.truancy is not None
    assert (first.truancy.hours, first.truancy.times_late) == (16, 3)
    assert first.track is Track.HALT_SCHOOLVERZUIM
    assert results[0].case_reference == "LP-DH-2025-0101"


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("invalid_komma_als_scheidingsteken.csv", "(bestand)"),
        ("invalid_onbekende_kolomkop.csv", "kolom 13"),
        ("invalid_verplichte_kolom_ontbreekt.csv", "Gemeente"),
        ("invalid_gemengde_codering.csv", "(bestand)"),
        ("invalid_leeg_bestand.csv", "(bestand)"),
    ],
)
def test_batch_level_errors_reject_the_whole_batch(name: str, field: str) -> None:
    with pytest.raises(PartnerFormatError) as info:
        leerplicht.parse_batch((DATA / "leerplicht" / name).read_bytes())
    assert field in [p.field for p in info.value.problems]


def test_every_leerplicht_sample_is_covered() -> None:
    names = {p.name for p in (DATA / "leerplicht").iterdir()}
    assert {p.name for p in samples(leerplicht, "invalid")} <= names
    assert len(samples(leerplicht, "invalid")) >= 4


def test_bad_rows_do_not_reject_the_batch() -> None:
    results = leerplicht.parse_batch((DATA / "leerplicht/rows_3_invalid_of_5.csv").read_bytes())
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert [r.problems[0].field for r in results if not r.ok] == ["BSN", "Geboortedatum", "Uren verzuim"]
    assert [r.case_reference for r in results][1:4] == [
        "LP-DH-2025-0201",
        "LP-DH-2025-0202",
        "LP-DH-2025-0203",
    ]
    assert all("123456789" not in p.model_dump_json() for r in results for p in r.problems)


def test_a_headerless_file_does_not_echo_its_first_row() -> None:
    raw = (DATA / "leerplicht/valid_batch_utf8.csv").read_bytes().split(b"\r\n", 1)[1]
    with pytest.raises(PartnerFormatError) as info:
        leerplicht.parse_batch(raw)
    assert "167868433" not in str(info.value)
    assert "Daniëlle" not in " ".join(p.model_dump_json() for p in info.value.problems)


def test_trailing_semicolons_and_blank_lines_are_tolerated() -> None:
    lines = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()
    raw = "\n".join([lines[0] + ";", lines[1] + ";", "", lines[2]]).encode()
    results = leerplicht.parse_batch(raw)
    assert [(r.row, r.ok) for r in results] == [(1, True), (3, True)]


def test_empty_columns_after_the_last_header_are_tolerated() -> None:
    # Excel writes ';;;' after every line of a sheet that once had more columns
    lines = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()
    raw = "\n".join(line + ";;;" for line in lines).encode()
    assert [r.ok for r in leerplicht.parse_batch(raw)] == [True] * (len(lines) - 1)


def test_a_stray_quote_spoils_its_own_row_not_the_rows_after_it() -> None:
    # read as one CSV stream, a cell opened with '"' ran to the end of the file: the rows after it
    # were neither accepted nor refused
    lines = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()
    cells = lines[1].split(";")
    cells[4] = '"' + cells[4]
    raw = "\n".join([lines[0], ";".join(cells), lines[2], lines[1].replace(cells[0], "LP-X-1", 1)]).encode()
    results = leerplicht.parse_batch(raw)
    assert [(r.row, r.ok) for r in results] == [(1, False), (2, True), (3, True)]
    [problem] = results[0].problems
    assert problem.problem == "ongeldige CSV" and "aanhalingstekens" in (problem.allowed or "")


def test_a_quoted_cell_over_two_lines_is_one_row_and_the_rows_after_it_keep_their_numbers() -> None:
    # Excel's Alt+Enter in a cell: valid CSV, read as one row as before lines were read one by one
    lines = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()
    cells = lines[1].split(";")
    cells[lines[0].split(";").index("School")] = '"Het Stedelijk\nlocatie Zuid"'
    raw = "\r\n".join([lines[0], ";".join(cells), *lines[2:]]).encode()
    results = leerplicht.parse_batch(raw)
    assert [(r.row, r.ok) for r in results] == [(1, True), (2, True), (3, True)]
    truancy = results[0].referral.truancy if results[0].referral else None
    assert truancy is not None and truancy.school_name == "Het Stedelijk locatie Zuid"  # one line


def test_two_stray_quotes_in_one_column_do_not_make_two_youths_rows_one() -> None:
    # the first row's '"Mulder' opened a quote that the second row's 'Leeuwen"' closed: read as one
    # record, the second youth's row was neither accepted nor refused, and its Dossiernummer, BSN and
    # name went into the first youth's surname, which was accepted with the second row's hours
    first = good_row(1) | {"Achternaam": '"Mulder', "Uren verzuim": "70"}
    second = good_row(2) | {"Achternaam": 'Leeuwen"', "Uren verzuim": "16"}
    one, two = leerplicht.parse_batch(csv_bytes([first, second]))
    assert (one.row, one.ok, [p.problem for p in one.problems]) == (1, False, ["ongeldige CSV"])
    assert two.row == 2 and two.referral is not None
    assert (two.referral.case_reference, two.referral.youth.bsn) == ("LP-GEN-00002", second["BSN"])
    assert two.referral.truancy is not None and two.referral.truancy.hours == 16


def csv_in_order(headers: list[str], rows: list[dict[str, str]]) -> bytes:
    lines = [";".join(headers)] + [";".join(r.get(h, "") for h in headers) for r in rows]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    ("order", "column"),
    [
        ("School first", "School"),  # the cell over lines is the first: its rest reads as a whole row
        ("as exported", "Dossiernummer"),  # the first column of the export
        ("as exported", "School"),
    ],
)
def test_stray_quotes_in_any_column_leave_the_rows_after_them_their_own(order: str, column: str) -> None:
    # a stray '"' opening the first row's cell and one closing the second row's ran the two together:
    # when the cell was the first column, the second youth's row was taken in whole, its BSN and name
    # in the first row's cell (a School folded onto one line: accepted), and the second row was never
    # reported; a second row with a mistyped BSN went the same way
    headers = ["School", *[h for h in good_row(1) if h != "School"]] if order == "School first" else None
    first = good_row(1) | {column: '"' + (good_row(1).get(column) or "Het Stedelijk")}
    second = good_row(2) | {column: (good_row(2).get(column) or "Lyceum") + '"'}
    mistyped = good_row(3) | {"BSN": "123456789"}
    rows = [first, second, mistyped]
    raw = csv_in_order(headers, rows) if headers else csv_bytes(rows)
    one, two, three = leerplicht.parse_batch(raw)
    assert (one.row, one.ok, [p.problem for p in one.problems]) == (1, False, ["ongeldige CSV"])
    assert two.row == 2 and two.referral is not None and two.referral.youth.bsn == second["BSN"]
    assert (three.row, [p.field for p in three.problems]) == (3, ["BSN"])
    for result in (one, two, three):  # the first youth's BSN is in no other row's referral
        assert result.referral is None or first["BSN"] not in result.referral.model_dump_json()


def test_a_second_row_with_a_mistyped_bsn_is_not_taken_into_the_first() -> None:
    first = good_row(1) | {"Achternaam": '"Mulder'}
    second = good_row(2) | {"Achternaam": 'Leeuwen"', "BSN": "123456789"}
    one, two = leerplicht.parse_batch(csv_bytes([first, second]))
    assert (one.ok, [p.problem for p in one.problems]) == (False, ["ongeldige CSV"])
    assert (two.row, [p.field for p in two.problems]) == (2, ["BSN"])


@pytest.mark.parametrize("column", ["Achternaam", "Voornamen", "Dossiernummer", "Leerplichtambtenaar"])
def test_a_line_break_in_a_name_or_code_is_refused_on_its_column(column: str) -> None:
    rows = [good_row(1) | {column: '"Jan\nsen"'}, good_row(2)]
    first, second = leerplicht.parse_batch(csv_bytes(rows))
    assert [(p.field, p.problem) for p in first.problems] == [(column, "bevat een stuurteken (zoals NUL)")]
    assert "regeleinden" in (first.problems[0].allowed or "")
    assert (first.row, second.row, second.ok) == (1, 2, True)


def test_a_line_break_in_a_json_name_is_refused_on_its_field() -> None:
    with pytest.raises(PartnerFormatError) as caught:
        politie.parse(json_record("politie", **{"verdachte.achternaam": "Zq-Jan\nsen"}))
    (problem,) = caught.value.problems
    assert (problem.field, problem.problem) == ("verdachte.achternaam", "bevat een stuurteken (zoals NUL)")
    assert "Zq-Jan" not in str(caught.value)


def test_a_header_padded_with_many_empty_columns_is_read_at_once() -> None:
    # trimming them one by one copied the row each time: 80,000 took 11 s
    header = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()[:2]
    raw = "\r\n".join([header[0] + ";" * 300_000, header[1]]).encode()
    assert [r.ok for r in leerplicht.parse_batch(raw)] == [True]


def test_a_header_of_many_unknown_columns_is_answered_in_a_bounded_number_of_problems() -> None:
    # each unknown header cell was a problem with the whole list of headers: 400 kB of ';x' made an
    # answer of 200 MB
    header = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()[0]
    with pytest.raises(PartnerFormatError) as info:
        leerplicht.parse_batch((header + ";x" * 100_000).encode())
    problems = info.value.problems
    assert len(problems) == 51
    last = problems[-1]
    assert (last.field, last.problem) == ("(bericht)", "en nog 99950 problemen (niet getoond)")


def test_a_message_of_many_unknown_fields_is_answered_in_a_bounded_number_of_problems() -> None:
    raw = json.dumps({f"x{i}": 0 for i in range(20_000)}).encode()
    with pytest.raises(PartnerFormatError) as info:
        politie.parse(raw)
    problems = info.value.problems
    assert len(problems) == 51 and problems[-1].problem.startswith("en nog ")
    assert int(problems[-1].problem.split()[2]) > 19_900


def test_a_row_with_too_many_columns_is_a_row_error() -> None:
    lines = (DATA / "leerplicht/valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()
    raw = "\n".join([lines[0], lines[1] + ";extra", lines[2]]).encode()
    results = leerplicht.parse_batch(raw)
    assert [r.ok for r in results] == [False, True]
    assert results[0].problems[0].field == "(rij)"


def test_header_spelling_is_matched_leniently() -> None:
    raw = (DATA / "leerplicht/valid_batch_utf8.csv").read_bytes()
    header, rest = raw.split(b"\r\n", 1)
    header = header.replace("Ouders geïnformeerd op".encode(), b"ouders geinformeerd op").replace(
        b"BSN", b" bsn "
    )
    assert all(r.ok for r in leerplicht.parse_batch(header + b"\r\n" + rest))


# --- generated leerplicht batches -------------------------------------------------------------

HEADER = ";".join(leerplicht.HEADERS)
DEFECTS = {
    "BSN": lambda row: row | {"BSN": "123456789"},
    "Geboortedatum": lambda row: row | {"Geboortedatum": "31-04-2011"},
    "Uren verzuim": lambda row: row | {"Uren verzuim": "twaalf"},
    "Achternaam": lambda row: row | {"Achternaam": ""},
    "(rij)": lambda row: row | {"Verzuim vanaf": "01-03-2025", "Verzuim tot en met": "01-02-2025"},
    "Jeugdige akkoord": lambda row: row | {"Jeugdige akkoord": "misschien"},
}


def bsn_from(seed: int) -> str:
    """A valid BSN derived from seed: the check digit is chosen so the elfproef holds."""
    for n in range(seed, seed + 20):
        digits = str(n % 100_000_000).zfill(8)
        total = sum(w * int(d) for w, d in zip((9, 8, 7, 6, 5, 4, 3, 2), digits, strict=True))
        if total % 11 < 10 and digits != "00000000":
            return digits + str(total % 11)
    raise AssertionError("unreachable")


def good_row(i: int) -> dict[str, str]:
    return {
        "Dossiernummer": f"LP-GEN-{i:05d}",
        "BSN": bsn_from(10_000_000 + i * 37),
        "Voornamen": "Daniëlle",
        "Achternaam": "Mulder",
        "Geboortedatum": "05-09-2011",
        "Woonplaats": "Den Haag",
        "Verzuim vanaf": "06-01-2025",
        "Verzuim tot en met": "14-02-2025",
        "Uren verzuim": str(9 + i % 52),
        "Aantal keer te laat": str(i % 5),
        "Jeugdige akkoord": "ja",
        "Leerplichtambtenaar": "A. de Groot",
        "Gemeente": "Den Haag",
    }


def csv_bytes(rows: list[dict[str, str]], encoding: str = "utf-8") -> bytes:
    lines = [HEADER] + [";".join(r.get(h, "") for h in leerplicht.HEADERS) for r in rows]
    return "\r\n".join(lines).encode(encoding)


def test_bsn_generator_makes_valid_bsns() -> None:
    from schemas.bsn import is_valid_bsn

    assert all(is_valid_bsn(bsn_from(s)) for s in range(10_000_000, 10_005_000, 7))


def test_a_batch_of_1000_rows_with_37_bad_rows_gives_exactly_37_row_errors() -> None:
    defects = list(DEFECTS.items())
    bad_rows = set(range(7, 1000, 27))  # 37 rows
    rows = []
    for i in range(1, 1001):
        row = good_row(i)
        rows.append(defects[i % len(defects)][1](row) if i in bad_rows else row)
    results = leerplicht.parse_batch(csv_bytes(rows, "cp1252"))
    assert len(results) == 1000
    failed = [r.row for r in results if not r.ok]
    assert len(bad_rows) == 37
    assert failed == sorted(bad_rows)
    assert all(r.case_reference == f"LP-GEN-{r.row:05d}" for r in results)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([None, *DEFECTS]), min_size=1, max_size=30),
    st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]),
)
def test_generated_batches_report_each_defect_on_its_row(plan: list[str | None], encoding: str) -> None:
    rows = [good_row(i) if d is None else DEFECTS[d](good_row(i)) for i, d in enumerate(plan, start=1)]
    results = leerplicht.parse_batch(csv_bytes(rows, encoding))
    assert [r.row for r in results] == list(range(1, len(plan) + 1))
    for result, defect in zip(results, plan, strict=True):
        assert result.ok == (defect is None)
        if defect is not None:
            assert defect in [p.field for p in result.problems]


@pytest.mark.parametrize(
    ("cells", "field"),
    [
        ({"BRIN": "٢٠AB"}, "BRIN"),  # digits of another script, which the pattern's \d took
        ({"Gemeente": "G" * 190}, "Gemeente"),  # 'Leerplicht <gemeente>' over 200 characters
        ({"Tussenvoegsel": "van", "Achternaam": "B" * 197}, "(rij)"),  # 'van B...' over 200 characters
    ],
)
def test_a_cell_the_referral_could_not_hold_is_refused_on_the_export_s_own_column(
    cells: dict[str, str], field: str
) -> None:
    (result,) = leerplicht.parse_batch(csv_bytes([good_row(1) | cells]))
    assert [p.field for p in result.problems] == [field]


def test_a_gemeente_and_surname_at_their_limits_are_kept_whole() -> None:
    row = good_row(1) | {"Gemeente": "G" * 189, "Tussenvoegsel": "van", "Achternaam": "B" * 196}
    (result,) = leerplicht.parse_batch(csv_bytes([row]))
    assert result.referral is not None, result.problems
    assert result.referral.referrer.organisation == "Leerplicht " + "G" * 189
    assert result.referral.youth.surname == "van " + "B" * 196


# Cells of the JSON formats that the Referral could not hold were refused on '(vertaling).<field>'.
JSON_SAMPLES = {
    "politie": "valid_winkeldiefstal.json",
    "boa": "valid_project_vuurwerk.json",
    "preventief": "valid_wijkteam.json",
}


def json_record(kind: str, **changes: object) -> bytes:
    """A valid sample of a JSON format with some fields changed (dotted paths for nesting)."""
    import json

    record = json.loads((DATA / kind / JSON_SAMPLES[kind]).read_bytes())
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = record
        for part in parents:
            node = node[part]
        node[last] = value
    return json.dumps(record).encode()


def refused_on(module: ModuleType, raw: bytes) -> list[str]:
    with pytest.raises(PartnerFormatError) as caught:
        module.parse(raw)
    return [p.field for p in caught.value.problems]


@pytest.mark.parametrize(
    ("kind", "prefix", "surname"),
    [
        ("politie", "verdachte.voorvoegsel", "verdachte.achternaam"),
        ("boa", "betrokkene.tussenvoegsel", "betrokkene.achternaam"),
        ("preventief", "jongere.tussenvoegsel", "jongere.achternaam"),
    ],
)
def test_a_prefix_and_surname_over_200_together_are_refused_on_the_surname(
    kind: str, prefix: str, surname: str
) -> None:
    module = {"politie": politie, "boa": boa, "preventief": preventief}[kind]
    kept = module.parse(json_record(kind, **{prefix: "van", surname: "B" * 196}))
    assert kept.youth.surname == "van " + "B" * 196  # exactly 200: kept whole
    assert refused_on(module, json_record(kind, **{prefix: "van", surname: "B" * 197})) == [surname]
    with pytest.raises(PartnerFormatError) as caught:
        module.parse(json_record(kind, **{prefix: "van", surname: "B" * 197}))
    assert "200" in str(caught.value.problems[0].allowed) and "B" * 20 not in str(caught.value.problems)


def test_a_police_unit_that_would_not_fit_the_organisation_is_refused_on_eenheid() -> None:
    kept = politie.parse(json_record("politie", eenheid="E" * 184))
    assert kept.referrer.organisation == "Politie eenheid " + "E" * 184  # exactly 200
    assert refused_on(politie, json_record("politie", eenheid="E" * 185)) == ["eenheid"]


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("politie", "procesVerbaalNummer", "PL1500-٢٠٢٥031201-1"),  # \d took digits of any script
        ("politie", "feitcode", "F٠٠١"),
        ("boa", "bonnummer", "DH-٢٠٢٥-00001"),
        ("politie", "pleegdatum", "٠١-٠٣-٢٠٢٥"),
    ],
)
def test_digits_of_another_script_are_refused_where_the_document_says_0_to_9(
    kind: str, field: str, value: str
) -> None:
    module = {"politie": politie, "boa": boa}[kind]
    assert refused_on(module, json_record(kind, **{field: value})) == [field]


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f"])
@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("politie", "verdachte.achternaam"),
        ("politie", "omschrijving"),
        ("politie", "verbalisant.dienstnummer"),
        ("boa", "handhaver.organisatie"),
        ("preventief", "aanmeldnummer"),
        ("preventief", "aanleiding.omschrijving"),
    ],
)
def test_a_control_character_in_text_is_refused_on_its_field(kind: str, field: str, char: str) -> None:
    """PostgreSQL cannot store a NUL; no name, code or description holds a control character."""
    module = {"politie": politie, "boa": boa, "preventief": preventief}[kind]
    with pytest.raises(PartnerFormatError) as caught:
        module.parse(json_record(kind, **{field: f"Zq-tekst{char}met stuurteken"}))
    (problem,) = caught.value.problems
    assert (problem.field, problem.problem) == (field, "bevat een stuurteken (zoals NUL)")
    assert "Zq-tekst" not in str(caught.value) and "Zq-tekst" not in str(problem)


def test_tabs_and_line_breaks_stay_allowed_in_a_description() -> None:
    referral = politie.parse(json_record("politie", omschrijving="Regel een\r\n\tregel twee"))
    assert referral.offence is not None and referral.offence.description == "Regel een\r\n\tregel twee"


def test_a_control_character_in_a_leerplicht_cell_fails_only_its_row() -> None:
    rows = [good_row(1) | {"Achternaam": "Jan\x00sen"}, good_row(2)]
    first, second = leerplicht.parse_batch(csv_bytes(rows))
    assert [(p.field, p.problem) for p in first.problems] == [
        ("Achternaam", "bevat een stuurteken (zoals NUL)")
    ]
    assert second.referral is not None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_results_or_a_format_error(raw: bytes) -> None:
    problems = []
    try:
        results = leerplicht.parse_batch(raw)
    except PartnerFormatError as exc:
        results, problems = [], exc.problems
        assert problems
    assert all(r.ok != bool(r.problems) for r in results)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_after_a_valid_header_never_crashes(body: str) -> None:
    results = leerplicht.parse_batch((HEADER + "\n" + body).encode("utf-8"))
    assert all(r.row >= 1 for r in results)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["1e30", "9" * 40, "1e-30", "12,505", "€ 1.000,50", "NaN", "-0,01", "1E+2"]),
    )
)
def test_any_damage_amount_is_an_amount_or_a_clear_error_on_that_field(amount: object) -> None:
    import json

    record = json.loads((DATA / "politie" / "valid_winkeldiefstal.json").read_bytes())
    record["schade"] = {"bedragJeugdige": amount}
    referral: Referral | None = None
    try:
        referral = politie.parse(json.dumps(record).encode())
    except PartnerFormatError as exc:
        fields = [p.field for p in exc.problems]
    if referral is None:
        assert fields == ["schade.bedragJeugdige"]  # on the partner's own field, nothing else
    else:
        assert referral.damage is not None and 0 <= referral.damage.youth_share < 10**10
        assert referral.damage.youth_share == referral.damage.youth_share.quantize(Decimal("0.01"))


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("125,50", Decimal("125.50")),
        ("9.000", Decimal("9000.00")),
        ("€ 9.000,00", Decimal("9000.00")),
        ("9000.5", Decimal("9000.50")),
        ("9,000", None),  # nine thousand the English way: it was read as €9.00, under every cap
        ("1,500", None),
        ("4,500", None),
        ("1.5000", None),  # four decimals, not a thousands dot: it was read as €1.50
        ("12,345", None),
    ],
)
def test_a_damage_amount_is_read_by_the_decimals_written_not_their_value(
    written: str, read: Decimal | None
) -> None:
    import json

    record = json.loads((DATA / "politie" / "valid_winkeldiefstal.json").read_bytes())
    record["schade"] = {"bedragJeugdige": written}
    if read is not None:
        damage = politie.parse(json.dumps(record).encode()).damage
        assert damage is not None and damage.youth_share == read
        return
    with pytest.raises(PartnerFormatError) as refused:
        politie.parse(json.dumps(record).encode())
    [problem] = refused.value.problems
    assert problem.field == "schade.bedragJeugdige" and "9.000 (negenduizend)" in (problem.allowed or "")


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


@given(value=_JSON_VALUES, ascii_only=st.booleans(), indent=st.none() | st.integers(0, 2))
def test_the_json_decoder_reads_what_json_loads_reads(
    value: object, ascii_only: bool, indent: int | None
) -> None:
    """decode_json gives json.loads' value for JSON that names no key twice."""
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert decode_json(text) == json.loads(text)


class _Repeated(Exception):
    """A key named twice in one object."""


def _no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    if len({k for k, _ in pairs}) < len(pairs):
        raise _Repeated
    return dict(pairs)


@given(text=st.text(alphabet='{}[]":,. 0123456789eE+-truefalsn\\u\t\n\ud800x', max_size=40))
def test_the_json_decoder_fails_where_json_loads_fails(text: str) -> None:
    """Any text, JSON or not: the same value, the same kind of error json.loads raises, or, for an
    object that names a key twice, DuplicateKeyError."""
    try:
        expected: object = json.loads(text)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            decode_json(text)
        return
    try:
        json.loads(text, object_pairs_hook=_no_repeats)
    except _Repeated:
        with pytest.raises(DuplicateKeyError):
            decode_json(text)
        return
    got = decode_json(text)
    assert got == expected or (got != got and expected != expected)  # NaN is not equal to itself


@pytest.mark.parametrize("connector", JSON_CONNECTORS, ids=lambda c: c.__name__.rsplit(".", 1)[-1])
def test_json_python_cannot_read_is_a_format_error_on_the_message(connector: ModuleType) -> None:
    """An integer of more than 4,300 digits made json.loads raise a plain ValueError, answered with a
    500 over HTTP; nesting deeper than Python recurses is refused the same way."""
    cases = {
        b'{"a": ' + b"7" * 5000 + b"}": "een getal heeft te veel cijfers",
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}": "te diep genest",
    }
    for raw, problem in cases.items():
        with pytest.raises(PartnerFormatError) as caught:
            connector.parse(raw)
        assert [(p.field, p.problem) for p in caught.value.problems] == [("(bericht)", problem)]


def test_a_row_wrong_in_every_column_names_ten_problems_and_counts_the_rest() -> None:
    header = ";".join(leerplicht.HEADERS)
    raw = "\n".join([header, ";".join(["x"] * len(leerplicht.HEADERS))]).encode()
    [result] = leerplicht.parse_batch(raw)
    assert len(result.problems) == leerplicht.MAX_PROBLEMS_PER_ROW + 1
    *named, more = result.problems
    assert len({p.field for p in named}) == leerplicht.MAX_PROBLEMS_PER_ROW
    assert more.field == "(rij)" and more.problem.startswith("en nog ")


def test_canonical_names_stored_over_lines_before_still_read_back() -> None:
    # partner formats refuse a line break in a name or code; the canonical models do not, so a
    # referral or caseworker stored before that (a surname over two lines) still reads back
    from schemas.caseworker import Caseworker

    referral = politie.parse(json_record("politie"))
    stored = json.loads(referral.model_dump_json())
    stored["youth"]["surname"] = "Mul\nder"
    stored["case_reference"] = "PL\t1"
    assert Referral.model_validate(stored).youth.surname == "Mul\nder"
    assert Caseworker(caseworker_id="cw-1", name="Jan\tJansen", email="j@halt.nl", team="GOUDA").name


def test_the_one_line_pattern_documents_the_whitespace_stripped_at_the_ends() -> None:
    # a value is stripped before its pattern is checked: what the document shows must take it too
    import re

    from schemas._base import ONE_LINE

    parsed = politie.parse(json_record("politie", **{"verdachte.achternaam": "\tJansen\r\n"}))
    assert parsed.youth.surname.endswith(" Jansen")  # after its prefix (tussenvoegsel)
    assert re.fullmatch(ONE_LINE, "\tJansen\r\n") and not re.fullmatch(ONE_LINE, "Jan\nsen")
