"""Hypothesis properties of rules 2-6 (intake), 9 (consent before a handover) and 11 (the index whitelist).

Each property states the rule as DOMAIN.md words it, over generated referrals, consents and signals;
the bounds are the 2024 configuration (`hub/intake/intake_rules.json`).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.verwijsindex.component import VerwijsindexConnector
from connectors.verwijsindex.contract import Organisatie, SignaalRegistratie
from connectors.verwijsindex.mapping import registratie_van
from hub.consent.minimise import minimise
from hub.consent.rules import Disclosure, coverage, find_covering
from hub.errors import PermanentError
from hub.intake import IntakeRules, decide, load_intake_rules
from hub.intake.config import BoaProject
from hub.signals import commands
from schemas.consent import (
    Consent,
    ConsentPurpose,
    ConsentStatus,
    ConsentYouth,
    DataCategory,
    Grantor,
    GrantorRole,
    Permission,
)
from schemas.dates import age_on, birthday
from schemas.referral import Decision, Referral, ReferrerType, Track
from schemas.signal import VerwijsindexSignal
from tests.helpers.partner_records import bsns, names

RULES: IntakeRules = load_intake_rules()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def codes(decision: Decision) -> list[str]:
    return [r.code for r in decision.reasons]


# --- generated referrals -----------------------------------------------------------------------

FEITCODES = [f.feitcode for f in RULES.halt_feiten] + ["F999", "X123"]
PROJECT_CODES = [p.code for p in RULES.boa_projects] + ["ONBEKEND-1"]
TRACK_OF = {
    ReferrerType.POLITIE: Track.HALT_STRAF,
    ReferrerType.BOA: Track.HALT_STRAF,
    ReferrerType.LEERPLICHT: Track.HALT_SCHOOLVERZUIM,
    ReferrerType.PREVENTIEF: Track.PREVENTIEF,
}
maybe_bool = st.sampled_from([True, False, None])
offence_days = st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31))
amounts = st.one_of(
    st.sampled_from(["0", "900.00", "900.01", "3600.00", "4500.00", "4500.01"]).map(Decimal),
    st.integers(min_value=0, max_value=1_000_000).map(lambda c: Decimal(c) / 100),
)
# Counts near the rule-5 bounds, and anywhere.
counts = st.one_of(st.sampled_from([0, 8, 9, 10, 11, 12, 13, 59, 60, 61]), st.integers(0, 80))


def born_around(draw: st.DrawFn, day: date, low: int, high: int) -> date:
    """A birth date that makes the youth between `low` and `high` on `day`, often a day from a birthday."""
    years = draw(st.integers(min_value=low, max_value=high))
    return birthday(day, -years) + timedelta(days=draw(st.sampled_from([-1, 0, 1]) | st.integers(-364, 364)))


@st.composite
def referrals(draw: st.DrawFn, referrer: ReferrerType | None = None) -> Referral:
    kind = referrer or draw(st.sampled_from(list(ReferrerType)))
    track = TRACK_OF[kind]
    day = draw(offence_days)
    birth = born_around(draw, day, 8, 25)
    data: dict[str, Any] = {
        "referrer": {"type": kind, "organisation": "Verwijzer"},
        "case_reference": "REF-1",
        "youth": {
            "bsn": draw(bsns),
            "given_names": draw(names),
            "surname": draw(names),
            "birth_date": birth,
            "municipality": "Den Haag",
        },
        "track": track,
        "confessed": draw(maybe_bool),
        "youth_agreed": draw(maybe_bool),
        "parents_agreed": draw(maybe_bool),
        "ovj_approval": draw(st.booleans()),
        "prior_halt_referrals": draw(st.integers(min_value=0, max_value=3)),
    }
    if track is Track.HALT_SCHOOLVERZUIM:
        data["truancy"] = {
            "period_start": day - timedelta(days=30),
            "period_end": day,
            "hours": draw(counts),
            "times_late": draw(counts),
        }
    else:
        data["offence"] = {
            "committed_on": day,
            "feitcode": draw(st.sampled_from(FEITCODES)) if track is Track.HALT_STRAF else None,
            "municipality": draw(st.sampled_from(["Den Haag", "den haag", "Leiden", "Gouda"])),
        }
        if kind is ReferrerType.BOA:
            data["boa_project"] = draw(st.none() | st.sampled_from(PROJECT_CODES))
    if track is not Track.HALT_SCHOOLVERZUIM and draw(st.booleans()):
        share = draw(amounts)
        data["damage"] = {"youth_share": share, "case_total": share + draw(amounts)}
    return Referral.model_validate(data)


# --- rule 2 ------------------------------------------------------------------------------------


@FAST
@given(referrals())
def test_rule_2_age_on_the_offence_date_per_track(referral: Referral) -> None:
    """HALT_STRAF and HALT_SCHOOLVERZUIM: at least 12 and under 18; PREVENTIEF: 10 to 23."""
    # the offence date; for truancy its last day
    day = referral.offence.committed_on if referral.offence else referral.truancy.period_end  # type: ignore[union-attr]
    birth = referral.youth.birth_date
    if referral.track is Track.PREVENTIEF:
        in_range = birthday(birth, 10) <= day < birthday(birth, 24)
    else:
        in_range = birthday(birth, 12) <= day < birthday(birth, 18)
    assert ("LEEFTIJD_BUITEN_BEREIK" not in codes(decide(referral, RULES))) == in_range


# --- rule 3 ------------------------------------------------------------------------------------


@FAST
@given(referrals())
def test_rule_3_halt_straf_needs_confession_consent_and_under_16_the_parents(referral: Referral) -> None:
    """A Halt-straf starts only when the youth confessed and agreed, and, under 16, the parents agreed."""
    found = set(codes(decide(referral, RULES)))
    rule_3 = {"NIET_BEKEND", "JEUGDIGE_NIET_AKKOORD", "OUDERS_NIET_AKKOORD"}
    if referral.track is not Track.HALT_STRAF:
        assert not found & rule_3
        return
    under_16 = referral.offence_date < birthday(referral.youth.birth_date, 16)
    expected = set()
    if referral.confessed is not True:
        expected.add("NIET_BEKEND")
    if referral.youth_agreed is not True:
        expected.add("JEUGDIGE_NIET_AKKOORD")
    if under_16 and referral.parents_agreed is not True:
        expected.add("OUDERS_NIET_AKKOORD")
    assert found & rule_3 == expected


# --- rule 4 ------------------------------------------------------------------------------------

BOA_ARTICLES = {"art. 453 Sr", "art. 45 Alcoholwet"}


@FAST
@given(referrals(ReferrerType.BOA) | referrals())
def test_rule_4_a_boa_refers_drunkenness_alcohol_or_inside_a_running_project(referral: Referral) -> None:
    """BOA: art. 453 Sr, art. 45 Alcoholwet, or an offence inside a project running that day in
    that municipality; any other BOA referral is rejected with that reason, other referrers never."""
    rejected = "BOA_BUITEN_BEVOEGDHEID" in codes(decide(referral, RULES))
    if referral.referrer.type is not ReferrerType.BOA:
        assert not rejected
        return
    offence = referral.offence
    assert offence is not None and offence.feitcode is not None
    feit = next((f for f in RULES.halt_feiten if f.feitcode == offence.feitcode), None)
    in_article = feit is not None and feit.article in BOA_ARTICLES
    in_project = any(
        p.start <= offence.committed_on <= p.end
        and offence.feitcode in p.feitcodes
        and p.municipality.lower() == (offence.municipality or "").lower()
        and referral.boa_project in (None, p.code)
        for p in RULES.boa_projects
    )
    assert rejected == (not (in_article or in_project))


def a_year_after(start: date) -> date:
    """The last day of a year from `start`, both days counted: the day before the same calendar day
    a year later (1 January to 31 December); from 29 February, 28 February. A project ending on the
    same calendar day was accepted, and ran a year and a day."""
    if (start.month, start.day) == (2, 29):
        return date(start.year + 1, 2, 28)
    return start.replace(year=start.year + 1) - timedelta(days=1)


@settings(max_examples=100, deadline=None)
@given(st.dates(min_value=date(2023, 1, 1), max_value=date(2027, 12, 31)), st.integers(0, 800))
def test_rule_4_a_boa_project_lasts_at_most_one_year(start: date, days: int) -> None:
    end = start + timedelta(days=days)
    project = {"code": "P-1", "name": "p", "municipality": "Gouda", "feitcodes": ["F350"]}
    try:
        BoaProject.model_validate(project | {"start": start, "end": end})
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted == (end <= a_year_after(start))


# --- rule 5 ------------------------------------------------------------------------------------


@FAST
@given(referrals(ReferrerType.LEERPLICHT), st.integers(min_value=0, max_value=2))
def test_rule_5_truancy_outside_the_bounds_or_repeated_needs_the_ovj(referral: Referral, prior: int) -> None:
    """9-60 hours or 12-60 times late, and a first truancy referral; otherwise OvJ approval, else rejected.

    More than 60 of either is outside the bounds, whatever the other count."""
    t = referral.truancy
    assert t is not None
    found = codes(decide(referral, RULES, prior_truancy_referrals=prior))
    within = (9 <= t.hours <= 60 or 12 <= t.times_late <= 60) and t.hours <= 60 and t.times_late <= 60
    assert ("SCHOOLVERZUIM_BUITEN_GRENZEN" in found) == (not within and not referral.ovj_approval)
    assert ("SCHOOLVERZUIM_HERHAALD" in found) == (prior > 0 and not referral.ovj_approval)


# --- rule 6 ------------------------------------------------------------------------------------


@FAST
@given(referrals())
def test_rule_6_damage_above_the_caps_needs_the_ovj(referral: Referral) -> None:
    """Above €900 per person or €4,500 per case, OvJ approval is needed."""
    found = [r.field for r in decide(referral, RULES).reasons if r.code == "SCHADE_BOVEN_GRENS"]
    d = referral.damage
    expected = []
    if d is not None and not referral.ovj_approval:
        expected += ["damage.youth_share"] if d.youth_share > Decimal(900) else []
        expected += ["damage.case_total"] if d.case_total > Decimal(4500) else []
    assert found == expected


@FAST
@given(referrals())
def test_rules_2_to_6_a_decision_is_accepted_exactly_when_no_rule_fails(referral: Referral) -> None:
    decision = decide(referral, RULES)
    assert decision.accepted == (not decision.reasons)
    text = decision.model_dump_json()
    assert referral.youth.bsn not in text
    assert referral.youth.given_names not in text and referral.youth.surname not in text


# --- rule 9 ------------------------------------------------------------------------------------

RECEIVERS = ["jongerenwerk-dh", "wijkteam-escamp", "brijder"]
categories = st.frozensets(st.sampled_from(list(DataCategory)), min_size=1)
days = st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31))


@st.composite
def consents(draw: st.DrawFn) -> Consent:
    start = draw(days)
    given_on = start - timedelta(days=draw(st.integers(0, 10)))
    birth = born_around(draw, given_on, *draw(st.sampled_from([(8, 20), (11, 12), (15, 16)])))
    # every grantor permits, or one denies, or one is left out
    roles = [GrantorRole.JEUGDIGE, GrantorRole.OUDER_MET_GEZAG]
    answers = [(role, Permission.PERMIT, role.value.lower()) for role in roles]
    match draw(st.sampled_from(["all", "deny", "missing"])):
        case "deny":
            i = draw(st.integers(0, 1))
            answers[i] = (answers[i][0], Permission.DENY, answers[i][2])
        case "missing":
            answers.pop(draw(st.integers(0, 1)))
    if draw(st.booleans()):  # a second parent with custody, who permits
        answers.append((GrantorRole.OUDER_MET_GEZAG, Permission.PERMIT, "tweede ouder"))
    at = datetime(given_on.year, given_on.month, given_on.day, 10, tzinfo=UTC)
    return Consent(
        consent_id=f"c-{draw(st.integers(0, 999))}",
        youth=ConsentYouth(bsn=draw(bsns), birth_date=birth),
        purpose=draw(st.sampled_from(list(ConsentPurpose))),
        recipient_organisations=draw(st.lists(st.sampled_from(RECEIVERS), min_size=1, unique=True)),
        data_categories=sorted(draw(categories)),
        grantors=[
            Grantor(role=r, name=name, permission=p, given_at=at, method="SCHRIFTELIJK")
            for r, p, name in answers
        ],
        recorded_by="cw1",
        valid_from=start,
        valid_until=start + timedelta(days=draw(st.integers(0, 400))),
        status=draw(st.sampled_from([ConsentStatus.ACTIEF] * 3 + list(ConsentStatus))),
        custodians=draw(st.sampled_from([None, 1, 2])),
    )


disclosures = st.builds(
    Disclosure,
    purpose=st.sampled_from(list(ConsentPurpose)),
    receiver=st.sampled_from(RECEIVERS),
    categories=categories,
    day=days,
)


def rule_8_complete(consent: Consent, named: int) -> bool:
    """Rule 8 on the day of consent: under 12 the parents, 12-15 youth and parents, 16+ the youth.
    Every parent: as many as stated, at least as many as the referral names; none stated, no consent
    unless two permitted (custody is held by two people at most)."""
    age = age_on(consent.youth.birth_date, min(g.given_at.date() for g in consent.grantors))
    permits = {g.role for g in consent.grantors if g.permission is Permission.PERMIT}
    parents = {
        g.name
        for g in consent.grantors
        if g.permission is Permission.PERMIT and g.role is GrantorRole.OUDER_MET_GEZAG
    }
    stated = consent.custodians
    if age < 16 and len(parents) < (2 if stated is None else max(stated, named)):
        return False
    needs = {GrantorRole.OUDER_MET_GEZAG} if age < 12 else set()
    needs |= {GrantorRole.JEUGDIGE} if age >= 12 else set()
    needs |= {GrantorRole.OUDER_MET_GEZAG} if age < 16 else set()
    # a refusal counts only from someone whose permit is asked for
    if any(g.permission is Permission.DENY and g.role in needs for g in consent.grantors):
        return False
    return needs <= permits


@st.composite
def near(draw: st.DrawFn, consent: Consent) -> Disclosure:
    """A disclosure the consent was meant for, with each of its parts sometimes drawn at random."""
    period = (consent.valid_until - consent.valid_from).days
    fitting = Disclosure(
        purpose=consent.purpose,
        receiver=draw(st.sampled_from(consent.recipient_organisations)),
        categories=frozenset(draw(st.sets(st.sampled_from(consent.data_categories), min_size=1))),
        day=consent.valid_from + timedelta(days=draw(st.integers(0, period))),
    )
    other = draw(disclosures)
    parts = ("purpose", "receiver", "categories", "day")
    off = draw(st.sampled_from([None, *parts]))  # all fit, or one part is drawn at random
    keep = {k: k != off for k in parts}
    return Disclosure(**{k: getattr(fitting if keep[k] else other, k) for k in keep})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_rule_9_a_handover_is_covered_only_by_an_active_consent_for_its_purpose_receiver_and_data(
    data: st.DataObject,
) -> None:
    """ACTIEF, valid on the day, for the handover's purpose and receiver, every shared category, and
    given by whom rule 8 asks: then it covers; if any of these is missing, it does not."""
    consent = data.draw(consents())
    disclosure = data.draw(near(consent) | disclosures)
    named = data.draw(st.integers(0, 2))  # custodians the youth's referral names
    expected = (
        consent.status is ConsentStatus.ACTIEF
        and consent.valid_from <= disclosure.day <= consent.valid_until
        and consent.purpose is disclosure.purpose
        and disclosure.receiver in consent.recipient_organisations
        and disclosure.categories <= set(consent.data_categories)
        and rule_8_complete(consent, named)
    )
    assert coverage(consent, disclosure, named=named).covers == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(consents(), max_size=4), disclosures, st.integers(0, 2))
def test_rule_9_the_consent_used_for_a_handover_covers_it(
    found: list[Consent], disclosure: Disclosure, named: int
) -> None:
    best, verdicts = find_covering(found, disclosure, named=named)
    covering = [c for c, v in zip(found, verdicts, strict=True) if v.covers]
    assert (best is None) == (not covering)
    if best is not None:
        assert best in covering


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(referrals(), categories, categories)
def test_rule_9_a_handover_carries_only_categories_asked_for_and_covered(
    referral: Referral, asked: frozenset[DataCategory], covered: frozenset[DataCategory]
) -> None:
    data = minimise(referral, asked, covered)
    assert set(data) <= {c.value for c in asked & covered}
    text = json.dumps(data)
    if DataCategory.PERSONALIA not in asked & covered:
        assert referral.youth.bsn not in text


# --- rule 11 -----------------------------------------------------------------------------------

WHITELIST = {
    "jeugdige.bsn",
    "jeugdige.voornamen",
    "jeugdige.voorvoegsel",
    "jeugdige.geslachtsnaam",
    "jeugdige.geboortedatum",
    "jeugdige.geslacht",
    "jeugdige.gemeente",
    "organisatie.code",
    "organisatie.naam",
    "contactpersoon.naam",
    "contactpersoon.email",
    "contactpersoon.telefoon",
    "aangemaakt",
    "einddatum",
}
ORGANISATIE = Organisatie(code="halt-den-haag", naam="Halt Den Haag")
# What a canonical signal may hold beyond the whitelist; none of it may reach the index.
secrets = st.sampled_from(["Zq-vernieling-art-350", "Zq-signaleringsinstrument-hoog", "Zq-gevaar-thuis"])


def leaves(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        return set().union(*(leaves(v, f"{prefix}{k}.") for k, v in node.items())) if node else {prefix[:-1]}
    return {prefix[:-1]}


@st.composite
def signals(draw: st.DrawFn) -> VerwijsindexSignal:
    created = draw(days)
    birth = created - timedelta(days=draw(st.integers(min_value=0, max_value=23 * 365 - 10)))
    end = created + timedelta(days=draw(st.integers(min_value=1, max_value=365)))
    end = min(end, birthday(birth, 23), created.replace(year=created.year + 2, day=min(created.day, 28)))
    return VerwijsindexSignal.model_validate(
        {
            "signal_id": "sig-1",
            "youth": {
                "bsn": draw(bsns),
                "given_names": draw(names),
                "surname": draw(names),
                "birth_date": birth,
                "gender": draw(st.sampled_from(["MAN", "VROUW", "ONBEKEND"])),
                "municipality": draw(names),
            },
            "organisation": draw(secrets),
            "caseworker": {
                "name": draw(names),
                "organisation": draw(secrets),
                "email": "cw@halt.nl",
                "phone": draw(st.none() | st.just("070-1234567")),
            },
            "caseworker_id": draw(secrets),
            "created": created,
            "end_date": max(end, created + timedelta(days=1)),
            "status": draw(st.sampled_from(["ACTIEF", "VERLOPEN"])),
            "parent_letter_sent_at": draw(st.none() | st.just(created)),
            "youth_informed_at": draw(st.none() | st.just(created)),
            "deferral_reason": draw(st.none() | secrets),
        }
    )


@FAST
@given(signals())
def test_rule_11_a_signal_body_carries_only_whitelisted_fields(signal: VerwijsindexSignal) -> None:
    """Never a reason, an offence, the screening result or a parent's details: only the whitelist."""
    body = registratie_van(signal, ORGANISATIE)
    sent = json.loads(body.model_dump_json())
    assert leaves(sent) <= WHITELIST
    text = json.dumps(sent)
    assert "Zq-" not in text


class _RecordingClient:
    def __init__(self) -> None:
        self.sent: list[SignaalRegistratie] = []

    async def register(self, signal_id: str, body: SignaalRegistratie, transaction_id: str) -> None:
        self.sent.append(body)


EXTRA = st.sampled_from(
    [
        ("reason", "VERNIELING"),
        ("offence", {"feitcode": "F350", "article": "art. 350 Sr"}),
        ("screening_result", "hoog risico"),
        ("guardians", [{"name": "P. de Vries", "phone": "06-12345678"}]),
        ("youth.guardians", [{"name": "P. de Vries"}]),
        ("youth.reason", "VERNIELING"),
        ("caseworker.parent_phone", "06-12345678"),
    ]
)


@FAST
@given(signals(), EXTRA)
def test_rule_11_a_register_command_with_anything_more_is_refused_and_not_sent(
    signal: VerwijsindexSignal, extra: tuple[str, Any]
) -> None:
    path, value = extra
    command = commands.register_command(signal, "tx-1")
    node = command.payload
    *parents, key = path.split(".")
    for part in parents:
        node = node[part]
    node[key] = value
    client = _RecordingClient()
    connector = VerwijsindexConnector(client, ORGANISATIE, None)  # type: ignore[arg-type]
    with pytest.raises(PermanentError):
        asyncio.run(connector.deliver(command))
    assert client.sent == []
