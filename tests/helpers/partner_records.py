"""Hypothesis strategies for partner records, written in each partner's own format (JSON; for
leerplicht one row of a CSV export, column header to cell text).

Each strategy draws a `Drawn`: the record as the partner sends it (lenient spellings of dates,
booleans and amounts, padded text) and the facts a canonical Referral must keep, stated in the
canonical terms. The facts are written out here, not computed by the connectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from schemas.consent import DUTCH_TIME
from schemas.referral import Gender, GuardianRelation, Reason, Referral, ReferrerType, Track

WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2)


@dataclass
class Drawn:
    """A partner record, the canonical facts it must give, and the values that must never be echoed."""

    record: dict[str, Any]
    facts: dict[str, Any]
    secrets: list[str] = field(default_factory=list)


def fact(referral: Referral, key: str) -> Any:
    """The value of a fact key ('youth.birth_date', 'damage', ...) in a Referral, to compare."""
    if key == "damage":
        d = referral.damage
        return None if d is None else (d.youth_share, d.case_total)
    if key == "youth.guardians":
        return [g.model_dump() for g in referral.youth.guardians]
    node: Any = referral
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _bsn(n: int) -> str | None:
    digits = str(n).zfill(8)
    check = sum(w * int(d) for w, d in zip(WEIGHTS, digits, strict=True)) % 11
    bsn = digits + str(check)
    return bsn if check < 10 and bsn != "000000000" else None


# Valid BSNs; one with a leading zero may be sent with 8 digits (rule 1).
bsns = st.integers(min_value=0, max_value=99_999_999).map(_bsn).filter(lambda b: b is not None)


@st.composite
def sent_bsn(draw: st.DrawFn) -> tuple[str, str]:
    """(as sent, canonical)."""
    bsn: str = draw(bsns)
    if bsn.startswith("0") and draw(st.booleans()):
        return bsn[1:], bsn
    return bsn, bsn


# Names of four letters or more, capitalised: they cannot occur in the hub's own Dutch error text.
# Drawn from a pool (drawing them letter by letter made each record cost thousands of draws).
WORDS = (
    "Noah",
    "Sanne",
    "Daniëlle",
    "Eriç",
    "Jayden",
    "Yasmina",
    "Mohammed",
    "Zoë",
    "Ömer",
    "Chloé",
    "Berg",
    "Haddou",
    "Bouzid",
    "Visser",
    "Mulder",
    "Jansen",
    "Kramer",
    "Oudshoorn",
    "Çelik",
    "Nguyen",
    "Hoekstra",
    "Smit",
    "Groot",
    "Leiden",
    "Gouda",
    "Escamp",
    "Wassenaar",
    "Zoetermeer",
    "Voorburg",
)
word = st.sampled_from(WORDS)
names = st.lists(word, min_size=1, max_size=3).map(" ".join)
prefixes = st.sampled_from(["van", "de", "van der", "van den", "ter", "el", "'t"])
prose = st.one_of(
    st.sampled_from(
        ["Winkeldiefstal.", "Vernieling van een bushokje (3 ruiten).", "Overlast € 50, ‘s avonds"]
    ),
    st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=30),
)
emails = st.builds(
    "{}.{}@{}.{}".format,
    st.sampled_from(["a", "jan", "m.el"]),
    st.integers(0, 999),
    st.sampled_from(["halt", "mail", "wijkteam"]),
    st.sampled_from(["nl", "example"]),
)
phones = st.builds("{}-{}".format, st.sampled_from(["06", "070", "0900"]), st.integers(100_000, 99_999_999))


# Feitcodes in either case: the format reads them case-insensitively.
feitcodes = st.builds(
    "{}{:03d}{}".format, st.sampled_from("FVAGOWfva"), st.integers(0, 999), st.sampled_from(["", "A", "b"])
)


def padded(value: str) -> st.SearchStrategy[str]:
    """The value as sent: sometimes with surrounding blanks, which the format strips."""
    return st.sampled_from([value, f" {value}", f"{value}  ", f"\t{value} "])


@st.composite
def text(draw: st.DrawFn, values: st.SearchStrategy[str]) -> tuple[str, str]:
    """(as sent, as kept)."""
    value = draw(values)
    return draw(padded(value)), value


def date_as_sent(draw: st.DrawFn, day: date) -> str:
    forms = [
        f"{day.day:02d}-{day.month:02d}-{day.year:04d}",
        f"{day.day}-{day.month}-{day.year:04d}",
        f"{day.day:02d}/{day.month:02d}/{day.year:04d}",
        f"{day.day:02d}.{day.month:02d}.{day.year:04d}",
        day.isoformat(),
    ]
    return draw(st.sampled_from(forms))


def bool_as_sent(draw: st.DrawFn, value: bool) -> Any:
    if value:
        return draw(st.sampled_from([True, 1, "ja", "Ja", " JA ", "j", "true", "waar", "yes", "y", "1"]))
    return draw(st.sampled_from([False, 0, "nee", "Nee", "n", "false", "onwaar", "no", "0"]))


cents = st.integers(min_value=0, max_value=999_999_999_999)


def amount_as_sent(draw: st.DrawFn, amount: Decimal) -> Any:
    whole, frac = divmod(int(amount * 100), 100)
    comma = f"{whole},{frac:02d}"
    grouped = f"{whole:,}".replace(",", ".") + f",{frac:02d}"
    forms: list[Any] = [comma, grouped, f"€ {grouped}", f"EUR {comma}", f"{whole}.{frac:02d}"]
    if frac == 0:
        forms += [whole, f"{whole:,}".replace(",", ".")]
    if amount < 10**6:
        forms.append(float(amount))
    return draw(st.sampled_from(forms))


births = st.dates(min_value=date(1995, 1, 1), max_value=date(2016, 12, 31))


def _later(draw: st.DrawFn, birth: date) -> date:
    return birth + timedelta(days=draw(st.integers(min_value=0, max_value=30 * 365)))


def optional(draw: st.DrawFn, full: bool) -> bool:
    """Whether an optional field is sent: always when `full` (so every field can be made invalid)."""
    return full or draw(st.booleans())


@st.composite
def youth(draw: st.DrawFn, full: bool) -> dict[str, Any]:
    """The youth's facts, shared by the formats; each format spells them its own way."""
    sent, bsn = draw(sent_bsn())
    birth = draw(births)
    prefix = draw(prefixes) if optional(draw, full) else None
    given_sent, given = draw(text(names))
    surname_sent, surname = draw(text(names))
    place_sent, place = draw(text(names))
    return {
        "bsn_sent": sent,
        "bsn": bsn,
        "birth": birth,
        "prefix": prefix,
        "given_sent": given_sent,
        "given": given,
        "surname_sent": surname_sent,
        "surname": f"{prefix} {surname}" if prefix else surname,
        "place_sent": place_sent,
        "place": place,
        "secrets": [sent, bsn, given, surname],
    }


@st.composite
def contact(draw: st.DrawFn, full: bool) -> dict[str, Any]:
    """An officer's or parent's name, e-mail and phone: (sent, kept)."""
    name_sent, name = draw(text(names))
    email = draw(emails) if optional(draw, full) else None
    phone = draw(phones) if optional(draw, full) else None
    return {"name_sent": name_sent, "name": name, "email": email, "phone": phone}


# --- politie -----------------------------------------------------------------------------------

POLITIE_GENDERS = {"M": Gender.MAN, "V": Gender.VROUW, "O": Gender.ONBEKEND, "X": Gender.ONBEKEND}
POLITIE_RELATIONS = {
    "moeder": GuardianRelation.OUDER,
    "vader": GuardianRelation.OUDER,
    "ouder": GuardianRelation.OUDER,
    "voogd": GuardianRelation.VOOGD,
    "pleegouder": GuardianRelation.PLEEGOUDER,
    "anders": GuardianRelation.OVERIG,
}


@st.composite
def guardian(
    draw: st.DrawFn, full: bool, relations: dict[str, GuardianRelation]
) -> tuple[dict[str, Any], dict[str, Any]]:
    c = draw(contact(full))
    relation = draw(st.sampled_from(sorted(relations)))
    custody = draw(st.booleans())
    sent = {"naam": c["name_sent"], "relatie": relation, "gezag": bool_as_sent(draw, custody)}
    sent |= {k: v for k, v in (("telefoon", c["phone"]), ("email", c["email"])) if v is not None}
    kept = {"name": c["name"], "relation": relations[relation], "has_custody": custody,
            "phone": c["phone"], "email": c["email"]}  # fmt: skip
    return sent, kept


@st.composite
def politie_records(draw: st.DrawFn, full: bool = False) -> Drawn:
    """A police referral record and what the Referral must say."""
    y = draw(youth(full))
    officer = draw(contact(full))
    gender = draw(st.sampled_from(sorted(POLITIE_GENDERS)))
    committed = _later(draw, y["birth"])
    pv = draw(st.builds("PL{:04d}-{:010d}-{}".format, st.integers(0, 9999), st.integers(0, 10**10 - 1),
                        st.integers(0, 999)))  # fmt: skip
    feitcode = draw(feitcodes)
    confessed, youth_ok = draw(st.booleans()), draw(st.booleans())
    parents_ok = draw(st.booleans()) if optional(draw, full) else None
    informed = _later(draw, committed) if optional(draw, full) else None
    prior = draw(st.integers(min_value=0, max_value=100))
    ovj = draw(st.booleans())
    guardians = draw(st.lists(guardian(full, POLITIE_RELATIONS), min_size=1 if full else 0, max_size=3))
    dienstnummer = str(draw(st.integers(1000, 99_999_999))) if optional(draw, full) else None
    article = (
        draw(st.sampled_from(["art. 310 Sr", "art. 350 Sr", "Art. 453 Sr"])) if optional(draw, full) else None
    )
    description = draw(prose) if optional(draw, full) else None
    record: dict[str, Any] = {
        "procesVerbaalNummer": draw(padded(pv)),
        "verbalisant": {"naam": officer["name_sent"]},
        "feitcode": draw(padded(feitcode)),
        "pleegdatum": date_as_sent(draw, committed),
        "verdachte": {
            "bsn": y["bsn_sent"],
            "voornamen": y["given_sent"],
            "achternaam": y["surname_sent"],
            "geboortedatum": date_as_sent(draw, y["birth"]),
            "geslacht": gender,
            "gemeente": y["place_sent"],
        },
        "wettelijkVertegenwoordigers": [g for g, _ in guardians],
        "bekennend": bool_as_sent(draw, confessed),
        "jeugdigeAkkoord": bool_as_sent(draw, youth_ok),
        "eerdereHaltverwijzingen": prior,
        "ovjToestemming": bool_as_sent(draw, ovj),
    }
    optionals = {
        ("verbalisant", "dienstnummer"): dienstnummer,
        ("verbalisant", "email"): officer["email"],
        ("verbalisant", "telefoon"): officer["phone"],
        ("verdachte", "voorvoegsel"): y["prefix"],
        ("wetsartikel",): article,
        ("omschrijving",): description,
        ("oudersAkkoord",): None if parents_ok is None else bool_as_sent(draw, parents_ok),
        ("oudersGeinformeerdOp",): None if informed is None else date_as_sent(draw, informed),
    }
    team = draw(text(names)) if optional(draw, full) else None
    if optional(draw, full):
        optionals |= {("eenheid",): "Den Haag", ("parketnummer",): "09/123456-25"}
    optionals[("basisteam",)] = team[0] if team else None
    place = draw(text(names)) if optional(draw, full) else None
    optionals[("pleegplaats",)] = place[0] if place else None
    damage = None
    if optional(draw, full):
        share = Decimal(draw(cents)) / 100
        total = (
            share + Decimal(draw(st.integers(min_value=0, max_value=10**6))) / 100
            if optional(draw, full)
            else None
        )
        if total is not None and total > Decimal("9999999999.99"):
            total = share
        record["schade"] = {"bedragJeugdige": amount_as_sent(draw, share)}
        if total is not None:
            record["schade"]["bedragTotaal"] = amount_as_sent(draw, total)
        damage = (share, share if total is None else total)
    _put_all(record, optionals)
    facts = {
        "referrer.type": ReferrerType.POLITIE,
        "referrer.organisation": "Politie eenheid Den Haag",
        "referrer.unit": team[1] if team else None,
        "referrer.officer_name": officer["name"],
        "referrer.officer_id": dienstnummer,
        "referrer.email": officer["email"],
        "referrer.phone": officer["phone"],
        "case_reference": pv,
        **_youth_facts(y, POLITIE_GENDERS[gender]),
        "youth.guardians": [g for _, g in guardians],
        "track": Track.HALT_STRAF,
        "offence.committed_on": committed,
        "offence.feitcode": feitcode.upper(),
        "offence.article": article,
        "offence.municipality": place[1] if place else None,
        "offence.description": description,
        "damage": damage,
        "confessed": confessed,
        "youth_agreed": youth_ok,
        "parents_agreed": parents_ok,
        "parents_informed_at": informed,
        "prior_halt_referrals": prior,
        "ovj_approval": ovj,
    }
    return Drawn(record, facts, y["secrets"])


def _put_all(record: dict[str, Any], values: dict[tuple[str, ...], Any]) -> None:
    for path, value in values.items():
        if value is not None:
            node = record
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value


def _youth_facts(y: dict[str, Any], gender: Gender) -> dict[str, Any]:
    return {
        "youth.bsn": y["bsn"],
        "youth.given_names": y["given"],
        "youth.surname": y["surname"],
        "youth.birth_date": y["birth"],
        "youth.gender": gender,
        "youth.municipality": y["place"],
    }


# --- BOA ---------------------------------------------------------------------------------------

BOA_GENDERS = POLITIE_GENDERS


@st.composite
def boa_records(draw: st.DrawFn, full: bool = False) -> Drawn:
    """A BOA handheld-app referral and what the Referral must say."""
    y = draw(youth(full))
    officer = draw(contact(full))
    gender = draw(st.sampled_from(sorted(BOA_GENDERS)))
    d = _later(draw, y["birth"])
    hour, minute, second = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    offset = draw(st.sampled_from(["+01:00", "+02:00", "Z", None]))
    if offset is None:  # the app's local time as it was written down: that is the day
        committed = d
        tijdstip = draw(
            st.sampled_from(
                [
                    f"{d.isoformat()}T{hour:02d}:{minute:02d}",
                    f"{d.day:02d}-{d.month:02d}-{d.year:04d} {hour:02d}:{minute:02d}",
                    f"{d.day}-{d.month}-{d.year:04d} {hour}:{minute:02d}:{second:02d}",
                ]
            )
        )
    else:  # a moment with its offset: the day is the one it was in the Netherlands
        tijdstip = f"{d.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}{offset}"
        committed = datetime.fromisoformat(tijdstip).astimezone(DUTCH_TIME).date()
        # on the birth day, early, with an offset east of the Dutch one: the Dutch day before it,
        # which the parser refuses (rightly) as before the youth was born
        assume(committed >= y["birth"])
    towns = st.sampled_from(["DH", "LEI", "GOUD"])
    bon = draw(st.builds("{}-{}-{:04d}".format, towns, st.integers(2000, 2099), st.integers(0, 99_999_999)))
    feitcode = draw(feitcodes)
    project = draw(st.sampled_from(["DH-JAARWISSELING-2526", "lei-apv-2025", "X1", "GOUDA-" + "9" * 24]))
    project = project if optional(draw, full) else None
    boa_nummer = draw(st.builds("BOA-DH-{}".format, st.integers(0, 999_999)))
    org_sent, org = draw(text(names))
    town_sent, town = draw(text(names))
    confessed, youth_ok = draw(st.booleans()), draw(st.booleans())
    parents_ok = draw(st.booleans()) if optional(draw, full) else None
    informed = _later(draw, committed) if optional(draw, full) else None
    parent = draw(contact(full)) if optional(draw, full) else None
    custody = draw(st.booleans())
    amount = Decimal(draw(cents)) / 100 if optional(draw, full) else None
    description = draw(prose) if optional(draw, full) else None
    record: dict[str, Any] = {
        "bonnummer": draw(padded(bon)),
        "tijdstip": tijdstip,
        "feitcode": feitcode,
        "handhaver": {"naam": officer["name_sent"], "boaNummer": boa_nummer, "organisatie": org_sent},
        "locatie": {"gemeente": town_sent},
        "betrokkene": {
            "bsn": y["bsn_sent"],
            "voornaam": y["given_sent"],
            "achternaam": y["surname_sent"],
            "geboortedatum": date_as_sent(draw, y["birth"]),
            "geslacht": gender,
            "woonplaats": y["place_sent"],
        },
        "bekend": bool_as_sent(draw, confessed),
        "akkoordJeugdige": bool_as_sent(draw, youth_ok),
    }
    optionals: dict[tuple[str, ...], Any] = {
        ("handhaver", "email"): officer["email"],
        ("handhaver", "telefoon"): officer["phone"],
        ("betrokkene", "tussenvoegsel"): y["prefix"],
        ("projectcode",): project,
        ("feitomschrijving",): description,
        ("akkoordOuders",): None if parents_ok is None else bool_as_sent(draw, parents_ok),
        ("oudersGeinformeerdOp",): None if informed is None else date_as_sent(draw, informed),
        ("schadebedrag",): None if amount is None else amount_as_sent(draw, amount),
    }
    if optional(draw, full):
        optionals |= {
            ("appVersie",): "HandhaafApp 4.2.1",
            ("locatie", "straat"): "Grote Markt",
            ("locatie", "lat"): draw(st.floats(min_value=-90, max_value=90)),
            ("locatie", "lon"): draw(st.floats(min_value=-180, max_value=180)),
        }
    if parent is not None:
        record["ouder"] = {"naam": parent["name_sent"], "gezag": bool_as_sent(draw, custody)}
        optionals |= {("ouder", "telefoon"): parent["phone"], ("ouder", "email"): parent["email"]}
    _put_all(record, optionals)
    guardians = []
    if parent is not None:
        guardians = [{"name": parent["name"], "relation": GuardianRelation.OUDER, "has_custody": custody,
                      "phone": parent["phone"], "email": parent["email"]}]  # fmt: skip
    facts = {
        "referrer.type": ReferrerType.BOA,
        "referrer.organisation": org,
        "referrer.officer_name": officer["name"],
        "referrer.officer_id": boa_nummer,
        "referrer.email": officer["email"],
        "referrer.phone": officer["phone"],
        "case_reference": bon,
        **_youth_facts(y, BOA_GENDERS[gender]),
        "youth.guardians": guardians,
        "track": Track.HALT_STRAF,
        "offence.committed_on": committed,
        "offence.feitcode": feitcode.upper(),
        "offence.municipality": town,
        "offence.description": description,
        "damage": None if amount is None else (amount, amount),
        "confessed": confessed,
        "youth_agreed": youth_ok,
        "parents_agreed": parents_ok,
        "parents_informed_at": informed,
        "boa_project": project.upper() if project else None,
    }
    return Drawn(record, facts, y["secrets"])


# --- preventief --------------------------------------------------------------------------------

PREVENTIEF_GENDERS = {"man": Gender.MAN, "vrouw": Gender.VROUW, "anders": Gender.ONBEKEND,
                      "onbekend": Gender.ONBEKEND}  # fmt: skip
PREVENTIEF_RELATIONS = {
    "ouder": GuardianRelation.OUDER,
    "voogd": GuardianRelation.VOOGD,
    "pleegouder": GuardianRelation.PLEEGOUDER,
    "anders": GuardianRelation.OVERIG,
}
CATEGORIES = {
    "overlast": Reason.BALDADIG_OVERLAST,
    "fysieke-agressie": Reason.FYSIEKE_AGRESSIE,
    "verbale-agressie": Reason.VERBALE_AGRESSIE,
    "diefstal": Reason.DIEFSTAL,
    "vernieling": Reason.VERNIELING,
    "online": Reason.DIGITAAL_GRENSOVERSCHRIJDEND,
    "schoolverzuim": Reason.SCHOOLVERZUIM,
    "vuurwerk": Reason.VUURWERK,
    "middelen": Reason.ALCOHOL_DRUGS,
    "anders": Reason.OVERIG,
}


@st.composite
def preventief_records(draw: st.DrawFn, full: bool = False) -> Drawn:
    """A preventive referral and what the Referral must say."""
    y = draw(youth(full))
    referrer = draw(contact(full))
    kind = draw(st.sampled_from(["WIJKTEAM", "JONGERENWERK", "SCHOOL", "WIJKAGENT"]))
    org_sent, org = draw(text(names))
    gender = draw(st.sampled_from(sorted(PREVENTIEF_GENDERS)))
    happened = _later(draw, y["birth"])
    category = draw(st.sampled_from(sorted(CATEGORIES)))
    number = draw(st.builds("{}-{}".format, st.sampled_from(["WT", "JW-GOU", "SCH"]), st.integers(0, 10**30)))
    description = draw(prose)
    youth_ok = draw(st.booleans())
    parents_ok = draw(st.booleans()) if optional(draw, full) else None
    informed = _later(draw, happened) if optional(draw, full) else None
    parents = draw(st.lists(guardian(full, PREVENTIEF_RELATIONS), min_size=1 if full else 0, max_size=3))
    place = draw(text(names)) if optional(draw, full) else None
    record: dict[str, Any] = {
        "aanmeldnummer": draw(padded(number)),
        "verwijzer": {"soort": kind, "organisatie": org_sent, "naam": referrer["name_sent"]},
        "jongere": {
            "bsn": y["bsn_sent"],
            "voornamen": y["given_sent"],
            "achternaam": y["surname_sent"],
            "geboortedatum": date_as_sent(draw, y["birth"]),
            "geslacht": gender,
            "gemeente": y["place_sent"],
        },
        "ouders": [p for p, _ in parents],
        "aanleiding": {
            "datum": date_as_sent(draw, happened),
            "categorie": category,
            "omschrijving": description,
        },
        "jongereAkkoord": bool_as_sent(draw, youth_ok),
    }
    _put_all(
        record,
        {
            ("verwijzer", "email"): referrer["email"],
            ("verwijzer", "telefoon"): referrer["phone"],
            ("jongere", "tussenvoegsel"): y["prefix"],
            ("aanleiding", "plaats"): place[0] if place else None,
            ("oudersAkkoord",): None if parents_ok is None else bool_as_sent(draw, parents_ok),
            ("oudersGeinformeerdOp",): None if informed is None else date_as_sent(draw, informed),
            ("school",): "De Regenboog" if optional(draw, full) else None,
        },
    )
    facts = {
        "referrer.type": ReferrerType.PREVENTIEF,
        "referrer.organisation": org,
        "referrer.unit": kind,
        "referrer.officer_name": referrer["name"],
        "referrer.email": referrer["email"],
        "referrer.phone": referrer["phone"],
        "case_reference": number,
        **_youth_facts(y, PREVENTIEF_GENDERS[gender]),
        "youth.guardians": [p for _, p in parents],
        "track": Track.PREVENTIEF,
        "offence.committed_on": happened,
        "offence.municipality": place[1] if place else None,
        "offence.description": description,
        "reason": CATEGORIES[category],
        "youth_agreed": youth_ok,
        "parents_agreed": parents_ok,
        "parents_informed_at": informed,
    }
    return Drawn(record, facts, y["secrets"])


# --- leerplicht --------------------------------------------------------------------------------

LEERPLICHT_GENDERS = {"M": Gender.MAN, "V": Gender.VROUW, "man": Gender.MAN, "Vrouw": Gender.VROUW,
                      "O": Gender.ONBEKEND, "X": Gender.ONBEKEND}  # fmt: skip
brins = st.builds(
    "{:02d}{}{}".format, st.integers(0, 99), st.sampled_from(["AB", "xy", "Rd"]), st.sampled_from(["", "07"])
)


def cell(draw: st.DrawFn, value: Any) -> str:
    """A value as a cell of the export: text, sometimes with blanks around it."""
    return draw(padded(str(value)))


@st.composite
def leerplicht_records(draw: st.DrawFn, full: bool = False) -> Drawn:
    """A row of a leerplicht export (column header -> cell) and what the Referral must say."""
    y = draw(youth(full))
    officer = draw(contact(full))
    parent = draw(contact(full)) if optional(draw, full) else None
    town_sent, town = draw(text(names))
    dossier = draw(st.builds("LP-{}-{}-{:04d}".format, st.sampled_from(["DH", "RSW", "ZTM"]),
                             st.integers(2000, 2099), st.integers(0, 99_999)))  # fmt: skip
    start = _later(draw, y["birth"])
    end = start + timedelta(days=draw(st.integers(min_value=0, max_value=365)))
    hours = draw(st.integers(min_value=0, max_value=10_000))
    late = draw(st.integers(min_value=0, max_value=10_000)) if optional(draw, full) else None
    gender = draw(st.sampled_from(sorted(LEERPLICHT_GENDERS))) if optional(draw, full) else None
    school = draw(text(names)) if optional(draw, full) else None
    brin = draw(brins) if optional(draw, full) else None
    youth_ok = draw(st.booleans()) if optional(draw, full) else None
    parents_ok = draw(st.booleans()) if optional(draw, full) else None
    informed = _later(draw, start) if optional(draw, full) else None
    prior = draw(st.integers(min_value=0, max_value=100)) if optional(draw, full) else None
    ovj = draw(st.booleans()) if optional(draw, full) else None
    record = {
        "Dossiernummer": draw(padded(dossier)),
        "BSN": y["bsn_sent"],
        "Voornamen": y["given_sent"],
        "Achternaam": y["surname_sent"],
        "Geboortedatum": date_as_sent(draw, y["birth"]),
        "Woonplaats": y["place_sent"],
        "Verzuim vanaf": date_as_sent(draw, start),
        "Verzuim tot en met": date_as_sent(draw, end),
        "Uren verzuim": cell(draw, hours),
        "Leerplichtambtenaar": officer["name_sent"],
        "Gemeente": town_sent,
    }
    optionals = {
        "Tussenvoegsel": y["prefix"],
        "Geslacht": gender,
        "School": school[0] if school else None,
        "BRIN": brin,
        "Aantal keer te laat": None if late is None else cell(draw, late),
        "Naam ouder/verzorger": parent["name_sent"] if parent else None,
        "Telefoon ouder/verzorger": parent["phone"] if parent else None,
        "E-mail ouder/verzorger": parent["email"] if parent else None,
        "Jeugdige akkoord": None if youth_ok is None else cell(draw, bool_as_sent(draw, youth_ok)),
        "Ouders akkoord": None if parents_ok is None else cell(draw, bool_as_sent(draw, parents_ok)),
        "Ouders geinformeerd op": None if informed is None else date_as_sent(draw, informed),
        "Eerdere Halt-verwijzingen": None if prior is None else cell(draw, prior),
        "OvJ-toestemming": None if ovj is None else cell(draw, bool_as_sent(draw, ovj)),
        "E-mail leerplichtambtenaar": officer["email"],
        "Telefoon leerplichtambtenaar": officer["phone"],
    }
    record |= {column: value for column, value in optionals.items() if value is not None}
    guardians = []
    if parent is not None:  # the export says nothing of custody or relation: a parent with custody
        guardians = [{"name": parent["name"], "relation": GuardianRelation.OUDER, "has_custody": True,
                      "phone": parent["phone"], "email": parent["email"]}]  # fmt: skip
    facts = {
        "referrer.type": ReferrerType.LEERPLICHT,
        "referrer.organisation": f"Leerplicht {town}",
        "referrer.unit": None,
        "referrer.officer_name": officer["name"],
        "referrer.officer_id": None,
        "referrer.email": officer["email"],
        "referrer.phone": officer["phone"],
        "case_reference": dossier,
        **_youth_facts(y, Gender.ONBEKEND if gender is None else LEERPLICHT_GENDERS[gender]),
        "youth.guardians": guardians,
        "track": Track.HALT_SCHOOLVERZUIM,
        "offence": None,
        "truancy.period_start": start,
        "truancy.period_end": end,
        "truancy.hours": hours,
        "truancy.times_late": 0 if late is None else late,
        "truancy.school_name": school[1] if school else None,
        "truancy.school_brin": brin.upper() if brin else None,
        "reason": None,
        "damage": None,
        "youth_agreed": youth_ok,
        "parents_agreed": parents_ok,
        "parents_informed_at": informed,
        "prior_halt_referrals": 0 if prior is None else prior,
        "ovj_approval": bool(ovj),
    }
    return Drawn(record, facts, y["secrets"])
