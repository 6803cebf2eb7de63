"""Rules 8, 9 and 10 as pure functions over canonical consents, handovers and a day."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from hub.clock import local_day
from schemas.consent import (
    MAX_CUSTODIANS,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    DataCategory,
    GrantorRole,
    Permission,
)
from schemas.dates import age_on
from schemas.handover import HandoverStatus
from schemas.referral import Referral

CUSTODY_ROLES = frozenset({GrantorRole.OUDER_MET_GEZAG, GrantorRole.VOOGD})


def consent_day(consent: Consent, *, named: int = 0) -> date:
    """The day of consent: the day the last permit was given, when the consent came about. A refusal
    does not bring a consent about: a parent's refusal two days after a 15-year-old's permit moved the
    day past the 16th birthday, where the refusal no longer counts, and made the consent complete.
    Nor does a permit that counts for nobody: one by someone the youth's referral shows without
    custody (`named`), or does not name where it names every custodian there can be, recorded after
    the 16th birthday, made the youth 16 on the day of consent and the consent complete without the
    custodians' permits asked for at 15. Without any permit
    that counts, the day of the last permit; without any permit, the day of the last answer."""
    with_custody, without = _shown(named)
    # room for custodians the referral does not name: as many as are stated, or can hold custody
    room = (consent.custodians or MAX_CUSTODIANS) - len(with_custody)

    def counts(name: str) -> bool:
        return name in with_custody or (name not in without and room > 0)

    permits = [g for g in consent.grantors if g.permission is Permission.PERMIT]
    counting = [g for g in permits if g.role not in CUSTODY_ROLES or counts(person(g.name))]
    return max(local_day(g.given_at) for g in counting or permits or consent.grantors)


class Required(StrEnum):
    """Whose permit rule 8 asks for."""

    JEUGDIGE = "JEUGDIGE"
    GEZAGHEBBERS = "GEZAGHEBBERS"  # every parent or guardian with custody


def required_for(age: int) -> frozenset[Required]:
    """Rule 8: under 12 the custodians; 12-15 the youth and the custodians; 16 and over the youth."""
    if age < 12:
        return frozenset({Required.GEZAGHEBBERS})
    if age < 16:
        return frozenset({Required.JEUGDIGE, Required.GEZAGHEBBERS})
    return frozenset({Required.JEUGDIGE})


# In `Completeness.missing`: the consent lacks the number of custodians, without which nobody can
# tell whether the custodians' permits are all there.
NUMBER_OF_CUSTODIANS = "AANTAL_GEZAGHEBBERS"


def person(name: str) -> str:
    """A name as rule 8 tells people apart: casefolded, its whitespace runs made one space. The
    same person typed twice ('Ouder A', 'ouder  a') is one custodian, and one the referral names."""
    return " ".join(name.casefold().split())


class Named(int):
    """How many people the youth's referrals name as holding custody (see `named_custodians`), and
    whom they show with custody and without, by `person`.

    An int, as every judgement of a consent takes it (`named`); a plain int, as consents were judged
    before, names nobody. A name in `without_custody` is one a referral explicitly says has no
    custody (custody is assumed where the referrer did not say); in `with_custody` one it names as
    holding it. Where the youth's referrals disagree on a person, the latest that names them decides.
    `over`: whom the latest referral naming custodians names with custody, when that is more people
    than can hold it (a police list assumes custody where the officer did not say): each must permit.
    """

    with_custody: frozenset[str]
    without_custody: frozenset[str]
    over: frozenset[str]

    def __new__(
        cls,
        count: int,
        with_custody: frozenset[str] = frozenset(),
        without_custody: frozenset[str] = frozenset(),
        over: frozenset[str] = frozenset(),
    ) -> Named:
        named = super().__new__(cls, count)
        named.with_custody, named.without_custody = with_custody, without_custody - with_custody
        named.over = over
        return named


def named_custodians(referral: Referral | None) -> Named:
    """How many people a referral names as holding custody (0 without a referral), and whom.

    A lower bound only, never the number itself: a referrer names the parents it knows of (the BOA
    and leerplicht formats carry one parent at most), and the police list of legal representatives
    is optional, with custody assumed where the officer did not say.
    """
    if referral is None:
        return Named(0)
    guardians = referral.youth.guardians
    with_custody = frozenset(person(g.name) for g in guardians if g.has_custody)
    return Named(
        # more than the law allows is a list with custody assumed, not more people to ask: one of
        # them holds none, and who cannot be told (`over`)
        min(len(with_custody), MAX_CUSTODIANS),
        with_custody,
        frozenset(person(g.name) for g in guardians if not g.has_custody),
        with_custody if len(with_custody) > MAX_CUSTODIANS else frozenset(),
    )


def _may_be_one(a: str, b: str) -> bool:
    """Whether two names (as `person` writes them) may be one person written two ways by two
    referrers: the same first letter, and a part of the last word in common ('maria jansen', 'm.
    jansen', 'maria de vries-jansen')."""
    first, second = a.split(), b.split()
    if not first or not second:
        return True
    if first[0][0] != second[0][0]:
        return False
    return bool(set(first[-1].split("-")) & set(second[-1].split("-")))


def _at_least(names: Iterable[str]) -> int:
    """How many people `names` are at least: names that may be one person written two ways count
    once (two parents with one surname and one first letter count once too: a lower bound)."""
    groups: list[list[str]] = []
    for name in sorted(names):
        for group in groups:
            if any(_may_be_one(name, other) for other in group):
                group.append(name)
                break
        else:
            groups.append([name])
    return len(groups)


def named_by(referrals: Iterable[Referral]) -> Named:
    """What a youth's referrals, the latest first, name together: each person's custody as the latest
    referral naming them says (custody is given and taken away; a later referral knows the later
    state), and as many custodians as the one naming most or as the people they show with custody
    together, whichever is more (up to what the law allows; names that may be one person written two
    ways count once: `_at_least`). Never the latest referral's count alone:
    a BOA or leerplicht referral names one parent at most, and would lower what an earlier police
    referral showed; and one naming the mother and a later one the father show two custodians, both
    of whom must permit (rule 8), though neither names more than one."""
    count, custody, over = 0, dict[str, bool](), None
    for referral in referrals:
        named = named_custodians(referral)
        count = max(count, int(named))
        for name in named.with_custody:
            custody.setdefault(name, True)
        for name in named.without_custody:
            custody.setdefault(name, False)
        if over is None and named.with_custody:  # the latest referral naming custodians says whether
            over = named.over  # it names too many: one naming two since settles who they are
    with_custody = frozenset(n for n, has in custody.items() if has)
    return Named(
        max(count, min(_at_least(with_custody), MAX_CUSTODIANS)),
        with_custody,
        frozenset(n for n, has in custody.items() if not has),
        over or frozenset(),
    )


def _shown(named: int) -> tuple[frozenset[str], frozenset[str]]:
    """Whom `named` shows with custody and without: nobody for a plain number."""
    if isinstance(named, Named):
        return named.with_custody, named.without_custody
    return frozenset(), frozenset()


def _over(named: int) -> frozenset[str]:
    """Whom `named` names with custody, all of whom must permit (`Named.over`): nobody for a number."""
    return named.over if isinstance(named, Named) else frozenset()


def custodians_shown(consent: Consent, *, named: int) -> int:
    """The fewest custodians there are, by what the referral names and whom the consent itself
    records as holding custody (each custodian once, by `person`, whatever they answered). Someone
    the referral shows without custody is not one, whatever role they were recorded in."""
    _, without = _shown(named)
    answered = {person(g.name) for g in consent.grantors if g.role in CUSTODY_ROLES} - without
    # the referral names more with custody than can hold it: each of them must permit anyway
    # (`completeness`), and their permits are no sign of more custodians than the law allows
    answered -= _over(named)
    return max(int(named), len(answered))


@dataclass(frozen=True)
class Completeness:
    """Whether the right people permitted (rule 8), and if not, who is missing or denied.

    `missing` names a role once per missing permit, and `NUMBER_OF_CUSTODIANS` when the custodians'
    permits are asked for but their number was not stated. `custodians_needed` is how many custodians
    must permit, when that is asked for and known.

    A permit in a custody role does not count as a custodian's when the youth's referral shows its
    grantor without custody (`no_custody`, by role), nor when the referral names the custodians
    needed and not its grantor (`not_named`, by role): a role the caseworker typed does not outweigh
    what the referral shows. Roles only, never names: they are the parents' personal data. When the
    referral names more people with custody than can hold it (`over_named`), each of them must permit.
    """

    day: date
    age: int
    required: frozenset[Required]
    missing: tuple[str, ...] = ()
    denied: tuple[GrantorRole, ...] = ()
    custodians_needed: int | None = None
    stated: int | None = None
    named: int = 0
    no_custody: tuple[GrantorRole, ...] = ()
    not_named: tuple[GrantorRole, ...] = ()
    over_named: int = 0  # how many the referral names with custody, when more than can hold it

    @property
    def complete(self) -> bool:
        """True when every required permit is there and nobody denied."""
        return not self.missing and not self.denied


def completeness(consent: Consent, *, named: int) -> Completeness:
    """Rule 8 on the day of consent. One missing permit, or a deny by anyone whose permit is asked
    for, means no consent.

    Under 16 every custodian must permit: as many as the caseworker stated (`consent.custodians`),
    and never fewer than the youth's referral names (`named`, see `named_custodians`). Without a
    stated number the consent is not complete, unless as many custodians as the law allows (two)
    permitted: one permit would otherwise stand for every custodian's.

    Where the referral names people (`named` a `Named`), it decides who the custodians are: a permit
    by someone it shows without custody counts for nobody, and one by someone it does not name counts
    only for a custodian it does not name either (a BOA or leerplicht referral names one parent at
    most), never in place of one it names with custody.
    """
    day = consent_day(consent, named=named)
    age = age_on(consent.youth.birth_date, day)
    required = required_for(age)
    # Only a refusal by someone whose permit rule 8 asks for counts: at 16 the youth decides alone,
    # under 12 the custodians do.
    asked = {GrantorRole.JEUGDIGE} if Required.JEUGDIGE in required else set()
    if Required.GEZAGHEBBERS in required:
        asked |= CUSTODY_ROLES
    denied = tuple(g.role for g in consent.grantors if g.permission is Permission.DENY and g.role in asked)
    permits = [g for g in consent.grantors if g.permission is Permission.PERMIT]
    missing: list[str] = []
    if Required.JEUGDIGE in required and not any(g.role is GrantorRole.JEUGDIGE for g in permits):
        missing.append(GrantorRole.JEUGDIGE.value)
    needed = None
    no_custody: list[GrantorRole] = []
    not_named: list[GrantorRole] = []
    over_named = 0
    if Required.GEZAGHEBBERS in required:
        with_custody, without = _shown(named)
        roles = {person(g.name): g.role for g in permits if g.role in CUSTODY_ROLES}
        no_custody = [role for name, role in roles.items() if name in without]
        confirmed = sum(1 for name in roles if name in with_custody)
        others = [role for name, role in roles.items() if name not in with_custody | without]

        def counted(need: int) -> int:
            """The custodians' permits that count: of those the referral names with custody, and
            of others only as many as there are custodians it does not name."""
            return confirmed + min(len(others), max(need - len(with_custody), 0))

        if consent.custodians is None and counted(MAX_CUSTODIANS) >= MAX_CUSTODIANS:
            need = MAX_CUSTODIANS  # as many as can hold custody permitted: nobody else can be asked
        elif consent.custodians is None:
            missing.append(NUMBER_OF_CUSTODIANS)
            need = max(named, 1)  # missing for certain, whatever the number turns out to be
        else:
            need = needed = max(consent.custodians, named)
        have = counted(need)
        if have < confirmed + len(others):
            not_named = others
        short = max(need - have, 0)
        if over := _over(named):
            # more named with custody than can hold it (the police list assumes custody where the
            # officer did not say): who holds it cannot be told, so each of them must permit. Any two
            # of three made it complete, and the one custodian among them never asked
            over_named = len(over)
            short = max(short, len(over - set(roles)))
        missing += [GrantorRole.OUDER_MET_GEZAG.value] * short
    return Completeness(
        day,
        age,
        required,
        tuple(missing),
        denied,
        needed,
        consent.custodians,
        int(named),
        no_custody=tuple(no_custody),
        not_named=tuple(not_named),
        over_named=over_named,
    )


def explain(check: Completeness) -> str | None:
    """Why a consent is not complete, in words a caseworker can act on; None when it is complete."""
    if check.complete:
        return None
    parts = []
    if NUMBER_OF_CUSTODIANS in check.missing:
        parts.append(
            f"Het aantal gezaghebbers is niet opgegeven: de jeugdige was {check.age} op de dag van "
            "toestemming, dan is de toestemming van iedere gezaghebber nodig (regel 8). Stel vast "
            "hoeveel mensen het gezag hebben en leg de toestemming opnieuw vast met dat aantal "
            "(`custodians`; in FHIR de extensie custodian-count)."
        )
    if GrantorRole.JEUGDIGE.value in check.missing:
        parts.append("De toestemming van de jeugdige ontbreekt.")
    short = check.missing.count(GrantorRole.OUDER_MET_GEZAG.value)
    # why permits given did not count, where a custodian's permit is missing for it
    for role in sorted(set(check.no_custody)) if short else ():
        parts.append(
            f"De verwijzing van de jeugdige toont geen gezag voor wie toestemming gaf in de rol {role}: "
            "die toestemming telt niet als die van een gezaghebber (regel 8). Leg de toestemming vast "
            "van wie volgens de verwijzing het gezag heeft."
        )
    for role in sorted(set(check.not_named)) if short else ():
        parts.append(
            f"Wie toestemming gaf in de rol {role}, staat niet bij de gezaghebbers die de verwijzing "
            "van de jeugdige noemt: die toestemming telt niet in plaats van die van een gezaghebber "
            "die de verwijzing wel noemt (regel 8). Is het dezelfde persoon, leg de naam dan vast "
            "zoals de verwijzing die noemt; anders is de toestemming van die gezaghebber nodig."
        )
    if short and check.over_named:
        parts.append(
            f"De verwijzing noemt {check.over_named} mensen met gezag, meer dan er het gezag kunnen "
            "hebben; wie het heeft, is zo niet vast te stellen, dus is de toestemming van ieder van "
            f"hen nodig (regel 8). Van hen ontbreekt de toestemming van {short}. Noemt een latere "
            "verwijzing wie het gezag heeft, dan telt die."
        )
    elif short and check.custodians_needed is not None:
        source = (
            f"opgegeven: {check.stated}; de verwijzing noemt er {check.named}"
            if check.named > (check.stated or 0)
            else "zoals opgegeven"
        )
        parts.append(
            f"Van de {check.custodians_needed} gezaghebbers ({source}) ontbreekt de toestemming van {short}."
        )
    elif short:
        parts.append(f"De toestemming van ten minste {short} gezaghebber(s) ontbreekt.")
    if check.denied:
        parts.append("Geweigerd door: " + ", ".join(sorted({d.value for d in check.denied})) + ".")
    return " ".join(parts)


class Gap(StrEnum):
    """Why a consent does not cover a disclosure (rule 9)."""

    INGETROKKEN = "INGETROKKEN"
    VERLOPEN = "VERLOPEN"
    NOG_NIET_GELDIG = "NOG_NIET_GELDIG"
    ANDER_DOEL = "ANDER_DOEL"
    ANDERE_ONTVANGER = "ANDERE_ONTVANGER"
    CATEGORIE_NIET_GEDEKT = "CATEGORIE_NIET_GEDEKT"
    ONVOLLEDIG = "ONVOLLEDIG"


@dataclass(frozen=True)
class Disclosure:
    """What is to be disclosed: for which purpose, to whom, which categories, on which day."""

    purpose: ConsentPurpose
    receiver: str
    categories: frozenset[DataCategory]
    day: date


@dataclass(frozen=True)
class Coverage:
    """The verdict of one consent on one disclosure."""

    consent_id: str | None
    gaps: tuple[Gap, ...] = ()
    uncovered: frozenset[DataCategory] = field(default_factory=frozenset)

    @property
    def covers(self) -> bool:
        """True when nothing is missing."""
        return not self.gaps


def coverage(consent: Consent, disclosure: Disclosure, *, named: int) -> Coverage:
    """Rule 9: ACTIEF, valid on the day, its purpose, its receiver, every category, and complete
    (rule 8; `named`: the custodians the youth's referral names, see `named_custodians`)."""
    gaps: list[Gap] = []
    if consent.status is ConsentStatus.INGETROKKEN:
        gaps.append(Gap.INGETROKKEN)
    elif consent.status is ConsentStatus.VERLOPEN or disclosure.day > consent.valid_until:
        gaps.append(Gap.VERLOPEN)
    if disclosure.day < consent.valid_from:
        gaps.append(Gap.NOG_NIET_GELDIG)
    if consent.purpose is not disclosure.purpose:
        gaps.append(Gap.ANDER_DOEL)
    if disclosure.receiver not in consent.recipient_organisations:
        gaps.append(Gap.ANDERE_ONTVANGER)
    uncovered = disclosure.categories - set(consent.data_categories)
    if uncovered:
        gaps.append(Gap.CATEGORIE_NIET_GEDEKT)
    if not completeness(consent, named=named).complete:
        gaps.append(Gap.ONVOLLEDIG)
    return Coverage(consent.consent_id, tuple(gaps), frozenset(uncovered))


def find_covering(
    consents: Iterable[Consent], disclosure: Disclosure, *, named: int
) -> tuple[Consent | None, list[Coverage]]:
    """The consent that covers the disclosure (the one valid longest), and every verdict."""
    verdicts = [(c, coverage(c, disclosure, named=named)) for c in consents]
    covering = [c for c, v in verdicts if v.covers]
    best = max(covering, key=lambda c: c.valid_until) if covering else None
    return best, [v for _, v in verdicts]


# Rule 10 --------------------------------------------------------------------------------------
OPEN = frozenset({HandoverStatus.WACHT_OP_TOESTEMMING})
DISCLOSED = frozenset(
    {
        HandoverStatus.VERZONDEN,
        HandoverStatus.ONTVANGEN,
        HandoverStatus.GEACCEPTEERD,
        HandoverStatus.GEWEIGERD,
    }
)
# Ended before it was delivered (its consent stopped covering it), yet perhaps after a POST that got
# no 2xx: the receiver may have it all the same.
LAPSED = frozenset({HandoverStatus.VERLOPEN})


@dataclass(frozen=True)
class HandoverView:
    """What rule 10 needs to know of a handover. `may_have`: its receiver got it or may have it,
    whatever its status says now: delivered, sent without an answer it was taken (a webhook that
    stored it and answered 500, a timeout), or answered by the receiver."""

    handover_id: str
    receiver: str
    purpose: ConsentPurpose
    status: HandoverStatus
    consent_id: str | None
    may_have: bool
    categories: frozenset[DataCategory] = frozenset()  # what it shares


@dataclass(frozen=True)
class WithdrawalEffects:
    """What a withdrawal does: handovers to withdraw, receivers to tell (they may have data), and
    waiting handovers kept because another of the youth's consents names them."""

    withdraw: tuple[str, ...]
    tell: tuple[tuple[str, str], ...]  # (handover id, receiver)
    kept: tuple[str, ...] = ()


def will_cover(consent: Consent, handover: HandoverView, day: date, *, named: int) -> bool:
    """Whether a consent covers a handover on `day` or will from its first day (rule 9, rule 8's
    `named` custodians): its only gap, if any, is that it has not started. One incomplete or
    refused, of too few categories, or ended never will: consents are not changed, only recorded
    anew, and recording one routes waiting handovers again."""
    disclosure = Disclosure(handover.purpose, handover.receiver, handover.categories, day)
    return set(coverage(consent, disclosure, named=named).gaps) <= {Gap.NOG_NIET_GELDIG}


def withdrawal_effects(
    consent: Consent,
    handovers: Sequence[HandoverView],
    *,
    others: Iterable[Consent] = (),
    day: date,
    named: int = 0,
) -> WithdrawalEffects:
    """Rule 10: handovers sent under this consent are withdrawn, and so are handovers still waiting
    for a consent to these receivers for this purpose, and one that lapsed under it after its
    receiver may have got it. Of those, every receiver that may have the handover is told, by what
    it may have (`may_have`), not by the status: a handover back to waiting, or lapsed, after a POST
    that failed may be with its receiver all the same; one sent but not yet tried is not.

    A waiting handover its receiver has not had that another of the youth's consents (`others`)
    covers on `day`, or will from its first day (`will_cover`, with the `named` custodians of rule
    8), waits for that one, which the youth did not withdraw: it is kept. One its receiver may have
    (a POST without a 2xx) may have gone under the consent withdrawn, so it is withdrawn and its
    receiver told, as before: the other consent may be used for a new one."""
    standing = [c for c in others if c.consent_id != consent.consent_id]
    withdraw: list[str] = []
    tell: list[tuple[str, str]] = []
    kept: list[str] = []
    for h in handovers:
        under_it = h.consent_id == consent.consent_id and (
            h.status in DISCLOSED or (h.status in LAPSED and h.may_have)
        )
        waiting_for_it = (
            h.status in OPEN
            and h.purpose is consent.purpose
            and h.receiver in consent.recipient_organisations
        )
        if waiting_for_it and not h.may_have and any(will_cover(c, h, day, named=named) for c in standing):
            kept.append(h.handover_id)
            continue
        if under_it or waiting_for_it:
            withdraw.append(h.handover_id)
            if h.may_have:
                tell.append((h.handover_id, h.receiver))
    return WithdrawalEffects(tuple(withdraw), tuple(tell), tuple(kept))
