"""Rules 8, 9 and 10 and minimisation, as pure functions."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from hub.consent.minimise import minimise
from hub.consent.rules import (
    Disclosure,
    Gap,
    HandoverView,
    age_on,
    completeness,
    coverage,
    custodians_shown,
    explain,
    find_covering,
    named_by,
    named_custodians,
    person,
    withdrawal_effects,
)
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
from schemas.handover import HandoverStatus
from schemas.referral import Guardian, Referral

BIRTH = date(2010, 6, 15)
BSN = "111222333"
YOUTH, PARENT, GUARD = GrantorRole.JEUGDIGE, GrantorRole.OUDER_MET_GEZAG, GrantorRole.VOOGD


def grantor(role: GrantorRole, day: date, *, name: str = "", deny: bool = False) -> Grantor:
    return Grantor(
        role=role,
        name=name or role.value.lower(),
        permission=Permission.DENY if deny else Permission.PERMIT,
        given_at=datetime(day.year, day.month, day.day, 11, 0, tzinfo=UTC),
        method="SCHRIFTELIJK",
    )


def consent(*grantors: Grantor, **extra: object) -> Consent:
    values: dict[str, object] = {
        "consent_id": "c1",
        "youth": ConsentYouth(bsn=BSN, birth_date=BIRTH),
        "purpose": ConsentPurpose.WARME_OVERDRACHT,
        "recipient_organisations": ["jongerenwerk-dh"],
        "data_categories": [DataCategory.PERSONALIA, DataCategory.VERWIJZING],
        "grantors": list(grantors),
        "recorded_by": "cw1",
        "valid_from": date(2020, 1, 1),
        "valid_until": date(2030, 1, 1),
    }
    values.update(extra)
    return Consent(**values)  # type: ignore[arg-type]


def test_age_counts_completed_years() -> None:
    assert age_on(BIRTH, date(2022, 6, 14)) == 11
    assert age_on(BIRTH, date(2022, 6, 15)) == 12
    assert age_on(date(2008, 2, 29), date(2020, 2, 28)) == 11
    assert age_on(date(2008, 2, 29), date(2020, 3, 1)) == 12


TWELFTH, SIXTEENTH = date(2022, 6, 15), date(2026, 6, 15)
DAY_BEFORE_12, DAY_BEFORE_16 = date(2022, 6, 14), date(2026, 6, 14)


@pytest.mark.parametrize(
    ("day", "roles", "complete"),
    [
        # the day before the 12th birthday: the parents decide; the youth alone is not enough
        (DAY_BEFORE_12, [PARENT], True),
        (DAY_BEFORE_12, [YOUTH], False),
        (DAY_BEFORE_12, [GUARD], True),
        # on the 12th birthday: youth and parents both
        (TWELFTH, [PARENT], False),
        (TWELFTH, [YOUTH], False),
        (TWELFTH, [YOUTH, PARENT], True),
        # the day before the 16th birthday: still both
        (DAY_BEFORE_16, [YOUTH], False),
        (DAY_BEFORE_16, [YOUTH, PARENT], True),
        # on the 16th birthday: the youth alone
        (SIXTEENTH, [YOUTH], True),
        (SIXTEENTH, [PARENT], False),
    ],
)
def test_rule_8_who_must_consent_by_age_on_the_day(
    day: date, roles: list[GrantorRole], complete: bool
) -> None:
    # one custodian, stated: under 16 the number is part of the consent (see the tests below)
    result = completeness(consent(*(grantor(r, day) for r in roles), custodians=1), named=0)
    assert result.complete is complete


def test_rule_8_day_of_consent_is_the_last_answer() -> None:
    # youth answered at 11 (not needed then), the parent on the 12th birthday: now the youth must consent,
    # and did, so it is complete; without the youth's permit it would not be.
    c = consent(grantor(YOUTH, DAY_BEFORE_12), grantor(PARENT, TWELFTH), custodians=1)
    assert completeness(c, named=0).day == TWELFTH and completeness(c, named=0).complete
    assert not completeness(consent(grantor(PARENT, TWELFTH), custodians=1), named=0).complete


def test_rule_8_a_deny_or_a_missing_custodian_means_no_consent() -> None:
    day = date(2024, 1, 1)  # 13
    denied = completeness(
        consent(grantor(YOUTH, day), grantor(PARENT, day, deny=True), custodians=1), named=0
    )
    assert not denied.complete and denied.denied == (PARENT,)
    two_custodians = consent(grantor(YOUTH, day), grantor(PARENT, day, name="Ouder A"), custodians=2)
    assert not completeness(two_custodians, named=2).complete
    assert completeness(two_custodians, named=2).missing == ("OUDER_MET_GEZAG",)
    both = consent(
        grantor(YOUTH, day),
        grantor(PARENT, day, name="Ouder A"),
        grantor(PARENT, day, name="Ouder B"),
        custodians=2,
    )
    assert completeness(both, named=2).complete
    # a deny counts from those whose permit rule 8 asks for: the youth and the custodians at 12-15
    youth_denies = consent(grantor(YOUTH, day, deny=True), grantor(PARENT, day), custodians=1)
    assert completeness(youth_denies, named=0).denied == (YOUTH,)


def test_rule_8_a_deny_by_someone_whose_permit_is_not_asked_for_does_not_block() -> None:
    """16 and over the youth decides alone, under 12 the custodians do: a parent's refusal of a
    17-year-old's own consent (or a 10-year-old's refusal of the parents') kept the handover waiting
    for good, where rule 8 asks for no permit of theirs."""
    sixteen = completeness(consent(grantor(YOUTH, SIXTEENTH), grantor(PARENT, SIXTEENTH, deny=True)), named=0)
    assert sixteen.complete and sixteen.denied == ()
    eleven = completeness(
        consent(grantor(YOUTH, DAY_BEFORE_12, deny=True), grantor(PARENT, DAY_BEFORE_12), custodians=1),
        named=0,
    )
    assert eleven.complete and eleven.denied == ()
    # the youth's own deny at 16 still means no consent
    assert completeness(consent(grantor(YOUTH, SIXTEENTH, deny=True)), named=0).denied == (YOUTH,)


def test_rule_8_a_refusal_does_not_move_the_day_of_consent() -> None:
    """A 15-year-old's permit, then a parent's refusal after the 16th birthday: the day of consent
    moved to the refusal, the youth counted as 16, the refusal no longer counted, and the consent
    was complete without the parent's permit it needed on the day it came about."""
    c = consent(grantor(YOUTH, DAY_BEFORE_16), grantor(PARENT, SIXTEENTH, deny=True), custodians=1)
    result = completeness(c, named=0)
    assert result.day == DAY_BEFORE_16 and result.age == 15
    assert not result.complete and result.denied == (PARENT,)


# Rule 8, "one missing permit means no consent": how many custodians there are is stated by the
# caseworker; a referral names them only as far as its referrer knows (a lower bound).
@pytest.mark.parametrize(
    ("day", "youth"),
    [(DAY_BEFORE_12, ()), (TWELFTH, (YOUTH,)), (DAY_BEFORE_16, (YOUTH,))],
    ids=["under-12", "12", "15"],
)
def test_rule_8_under_16_each_stated_custodian_must_permit(day: date, youth: tuple[GrantorRole]) -> None:
    def judged(custodians: int | None, *parents: str, named: int = 0) -> tuple[bool, tuple[str, ...]]:
        grantors = [grantor(r, day) for r in youth] + [grantor(PARENT, day, name=n) for n in parents]
        result = completeness(consent(*grantors, custodians=custodians), named=named)
        return result.complete, result.missing

    assert judged(1, "Ouder A") == (True, ())
    assert judged(2, "Ouder A") == (False, ("OUDER_MET_GEZAG",))
    assert judged(2, "Ouder A", "Ouder B") == (True, ())
    assert judged(2, "Ouder A", "ouder a") == (False, ("OUDER_MET_GEZAG",))  # one person, twice
    # the referral names two: one stated is not believed, both permits are needed
    assert judged(1, "Ouder A", named=2) == (False, ("OUDER_MET_GEZAG",))
    # no number: not complete, also when the referral names one (a lower bound only) ...
    assert judged(None, "Ouder A") == (False, ("AANTAL_GEZAGHEBBERS",))
    assert judged(None, "Ouder A", named=1) == (False, ("AANTAL_GEZAGHEBBERS",))
    # ... unless two custodians permitted: custody is held by two people at most, nobody is left
    assert judged(None, "Ouder A", "Ouder B") == (True, ())
    assert judged(None, "Ouder A", "Ouder B", named=2) == (True, ())
    assert judged(None, "Ouder A", "ouder a") == (False, ("AANTAL_GEZAGHEBBERS",))  # one person, twice
    if youth:  # the youth's permit alone: the number and at least one custodian's permit missing
        assert judged(None) == (False, ("AANTAL_GEZAGHEBBERS", "OUDER_MET_GEZAG"))


def test_rule_8_no_number_under_16_is_incomplete_and_says_the_number_must_be_stated() -> None:
    """One custodian's permit counted as every custodian's when the number was not known: with two
    parents holding custody, a BOA or leerplicht referral (one parent at most) made one enough."""
    result = completeness(consent(grantor(YOUTH, TWELFTH), grantor(PARENT, TWELFTH)), named=1)
    assert not result.complete and result.missing == ("AANTAL_GEZAGHEBBERS",)
    assert result.custodians_needed is None
    reason = explain(result)
    assert reason is not None and "aantal gezaghebbers is niet opgegeven" in reason
    assert "custodians" in reason and BSN not in reason
    assert coverage(consent(grantor(YOUTH, TWELFTH), grantor(PARENT, TWELFTH)), ASK, named=1).gaps == (
        Gap.ONVOLLEDIG,
    )


def test_rule_8_at_16_no_number_is_asked_for() -> None:
    alone = completeness(consent(grantor(YOUTH, SIXTEENTH)), named=2)
    assert alone.complete and alone.custodians_needed is None and explain(alone) is None
    assert completeness(consent(grantor(YOUTH, SIXTEENTH), custodians=2), named=2).complete


def test_rule_8_the_number_needed_is_the_stated_one_or_what_the_referral_names() -> None:
    one = consent(grantor(YOUTH, TWELFTH), grantor(PARENT, TWELFTH, name="Ouder A"), custodians=1)
    assert completeness(one, named=0).custodians_needed == 1
    short = completeness(one, named=2)
    assert short.custodians_needed == 2 and not short.complete
    reason = explain(short)
    assert reason is not None and "de verwijzing noemt er 2" in reason
    # the floor a stated number must reach: the referral's count, or the custodians who answered
    assert custodians_shown(one, named=2) == 2
    two_answered = consent(
        grantor(PARENT, TWELFTH, name="Ouder A"), grantor(PARENT, TWELFTH, name="Ouder B", deny=True)
    )
    assert custodians_shown(two_answered, named=1) == 2


def test_a_referral_names_only_the_guardians_with_custody(referral: Referral) -> None:
    assert named_custodians(None) == 0
    assert named_custodians(referral) == 1
    youth = referral.youth.model_copy(
        update={
            "guardians": [
                *referral.youth.guardians,
                Guardian(name="Pleegouder", relation="PLEEGOUDER", has_custody=False),
                Guardian(name="Voogd", relation="VOOGD"),
            ]
        }
    )
    assert named_custodians(referral.model_copy(update={"youth": youth})) == 2
    # the police list assumes custody where the officer did not say: three "custodians" are two
    stepparent = Guardian(name="Stiefouder", relation="OUDER")
    crowded = youth.model_copy(update={"guardians": [*youth.guardians, stepparent]})
    assert named_custodians(referral.model_copy(update={"youth": crowded})) == 2


# Rule 8 and the referral's guardians: the role a caseworker types for a grantor does not outweigh
# what the referral shows of that person's custody. Reasons name roles, never the parents.
FOURTEEN = date(2024, 9, 1)
MOTHER, FATHER = "Maria Jansen", "Piet de Vries"


def with_guardians(referral: Referral, *guardians: Guardian) -> Referral:
    return referral.model_copy(
        update={"youth": referral.youth.model_copy(update={"guardians": list(guardians)})}
    )


@pytest.fixture
def split(referral: Referral) -> Referral:
    """A referral naming the mother with custody and the father without."""
    return with_guardians(referral, Guardian(name=MOTHER), Guardian(name=FATHER, has_custody=False))


def test_rule_8_a_permit_by_a_parent_the_referral_shows_without_custody_does_not_count(
    split: Referral,
) -> None:
    """The father, whom the referral shows without custody, recorded as OUDER_MET_GEZAG with one
    custodian stated: the consent was complete without the mother's permit, and handovers went."""
    named = named_custodians(split)
    c = consent(grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name=FATHER), custodians=1)
    result = completeness(c, named=named)
    assert not result.complete and result.age == 14
    assert result.missing == ("OUDER_MET_GEZAG",) and result.no_custody == (PARENT,)
    reason = explain(result)
    assert reason is not None and "toont geen gezag" in reason and "in de rol OUDER_MET_GEZAG" in reason
    assert "Van de 1 gezaghebbers (zoals opgegeven) ontbreekt de toestemming van 1." in reason
    assert "Piet" not in reason and "Vries" not in reason and "Maria" not in reason and BSN not in reason
    assert coverage(c, ASK, named=named).gaps == (Gap.ONVOLLEDIG,)
    # he is no custodian: one stated is not too few, the mother's permit can be added to it
    assert custodians_shown(c, named=named) == 1
    # as a VOOGD, or refusing, alike: his refusal still blocks, as any refusal in a custody role does
    as_guardian = consent(grantor(YOUTH, FOURTEEN), grantor(GUARD, FOURTEEN, name=FATHER), custodians=1)
    assert completeness(as_guardian, named=named).no_custody == (GUARD,)
    refusing = consent(
        grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name=FATHER, deny=True), custodians=1
    )
    assert completeness(refusing, named=named).denied == (PARENT,)


def test_rule_8_a_permit_that_counts_for_nobody_does_not_move_the_day_of_consent(split: Referral) -> None:
    """The youth permitted at 15; the mother, with custody, never did. The father, whom the referral
    shows without custody, permitted after the 16th birthday: his permit made the day of consent,
    the youth counted as 16 and alone, and the consent was complete (a handover went out)."""
    named = named_custodians(split)
    c = consent(grantor(YOUTH, DAY_BEFORE_16), grantor(PARENT, SIXTEENTH, name=FATHER), custodians=1)
    result = completeness(c, named=named)
    assert (result.day, result.age) == (DAY_BEFORE_16, 15)
    assert not result.complete and result.missing == ("OUDER_MET_GEZAG",)
    # nor one by someone it does not name, where it names every custodian there can be
    both = named_custodians(with_guardians(split, Guardian(name=MOTHER), Guardian(name=FATHER)))
    stranger = consent(grantor(YOUTH, DAY_BEFORE_16), grantor(PARENT, SIXTEENTH, name="Iemand"), custodians=2)
    result = completeness(stranger, named=both)
    assert (result.day, result.age, result.complete) == (DAY_BEFORE_16, 15, False)
    # where it names one of two, an unnamed permit may be the other custodian's: it counts
    one = named_custodians(with_guardians(split, Guardian(name=MOTHER)))
    assert completeness(stranger, named=one).age == 16
    # a custodian's permit after the birthday does move it: at 16 the youth, who permitted, decides
    mother = consent(grantor(YOUTH, DAY_BEFORE_16), grantor(PARENT, SIXTEENTH, name=MOTHER), custodians=2)
    assert completeness(mother, named=named).age == 16
    # and so does the youth's own permit again at 16, whoever else answered
    again = consent(
        grantor(YOUTH, DAY_BEFORE_16), grantor(PARENT, SIXTEENTH, name=FATHER), grantor(YOUTH, SIXTEENTH)
    )
    assert completeness(again, named=named).complete


def test_rule_8_three_named_with_custody_must_each_permit(referral: Referral) -> None:
    """The police list assumes custody where the officer did not say: mother, father and a
    stepfather all "with custody". Permits of any two made the consent complete, though one of
    the two people who hold custody may never have been asked."""
    stepfather = "Kees Bakker"
    three = with_guardians(referral, Guardian(name=MOTHER), Guardian(name=FATHER), Guardian(name=stepfather))
    named = named_custodians(three)
    for stated in (2, None):
        two = consent(
            grantor(YOUTH, FOURTEEN),
            grantor(PARENT, FOURTEEN, name=MOTHER),
            grantor(PARENT, FOURTEEN, name=stepfather),
            custodians=stated,
        )
        result = completeness(two, named=named)
        assert not result.complete and result.missing.count("OUDER_MET_GEZAG") == 1, result
        reason = explain(result)
        assert reason is not None and "noemt 3 mensen met gezag" in reason and "Jansen" not in reason
        every = two.model_copy(update={"grantors": [*two.grantors, grantor(PARENT, FOURTEEN, name=FATHER)]})
        assert completeness(every, named=named).complete
        # and the three permits, with two custodians stated, are no sign of a third custodian
        assert custodians_shown(every, named=named) == 2
    # a later referral naming two with custody settles who they are; an earlier one naming two
    # does not settle a later one naming three
    later_two = with_guardians(referral, Guardian(name=MOTHER), Guardian(name=stepfather))
    settled = named_by([later_two, three])
    assert settled.over == frozenset() and completeness(two, named=settled).complete
    unsettled = named_by([three, later_two])
    assert len(unsettled.over) == 3 and not completeness(two, named=unsettled).complete
    # two named with custody: as before, both permits make it complete
    assert completeness(
        consent(
            grantor(YOUTH, FOURTEEN),
            grantor(PARENT, FOURTEEN, name=MOTHER),
            grantor(PARENT, FOURTEEN, name=FATHER),
            custodians=2,
        ),
        named=named_custodians(with_guardians(referral, Guardian(name=MOTHER), Guardian(name=FATHER))),
    ).complete


def test_rule_8_the_mothers_permit_makes_it_complete(split: Referral) -> None:
    named = named_custodians(split)
    c = consent(
        grantor(YOUTH, FOURTEEN),
        grantor(PARENT, FOURTEEN, name=FATHER),
        grantor(PARENT, FOURTEEN, name=MOTHER),
        custodians=1,
    )
    result = completeness(c, named=named)
    assert result.complete and result.missing == () and explain(result) is None
    assert custodians_shown(c, named=named) == 1  # recording it with one custodian is not refused
    assert completeness(
        consent(grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name=MOTHER), custodians=1), named=named
    ).complete
    # no number stated: the father's permit does not make two custodians' permits
    unstated = completeness(c.model_copy(update={"custodians": None}), named=named)
    assert unstated.missing == ("AANTAL_GEZAGHEBBERS",)


def test_rule_8_names_match_whatever_their_case_and_spacing(split: Referral) -> None:
    named = named_custodians(split)
    father = grantor(PARENT, FOURTEEN, name="  PIET   de  VRIES ")
    assert not completeness(consent(grantor(YOUTH, FOURTEEN), father, custodians=1), named=named).complete
    mother = grantor(PARENT, FOURTEEN, name="maria\tJANSEN")
    assert completeness(consent(grantor(YOUTH, FOURTEEN), father, mother, custodians=1), named=named).complete
    spaced = with_guardians(
        split, Guardian(name="Maria  JANSEN"), Guardian(name="piet de vries", has_custody=False)
    )
    c = consent(grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name=FATHER), custodians=1)
    assert completeness(c, named=named_custodians(spaced)).no_custody == (PARENT,)
    # one person typed twice is one custodian, spacing apart
    twice = consent(grantor(PARENT, FOURTEEN, name="Ouder A"), grantor(PARENT, FOURTEEN, name="ouder  a"))
    assert custodians_shown(twice, named=0) == 1


def test_rule_8_a_referral_without_guardians_changes_nothing(referral: Referral) -> None:
    bare = named_custodians(with_guardians(referral))
    assert bare == 0
    c = consent(grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name=FATHER), custodians=1)
    assert completeness(c, named=bare) == completeness(c, named=0)
    assert completeness(c, named=bare).complete
    assert not completeness(c.model_copy(update={"custodians": 2}), named=bare).complete


def test_rule_8_a_permit_by_someone_the_referral_does_not_name(split: Referral) -> None:
    """The referral names the one custodian stated, and someone else permitted in a custody role:
    a different spelling or a different person; either way the named custodian's permit is not there."""
    named = named_custodians(split)
    c = consent(grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name="M. Jansen"), custodians=1)
    result = completeness(c, named=named)
    assert not result.complete and result.missing == ("OUDER_MET_GEZAG",) and result.not_named == (PARENT,)
    reason = explain(result)
    assert reason is not None and "staat niet bij de gezaghebbers die de verwijzing" in reason
    assert "Jansen" not in reason
    # a second custodian the referral does not name (a BOA or leerplicht referral names one parent
    # at most) counts, beside the one it names
    two = consent(
        grantor(YOUTH, FOURTEEN),
        grantor(PARENT, FOURTEEN, name=MOTHER),
        grantor(GUARD, FOURTEEN, name="Kees Bakker"),
        custodians=2,
    )
    assert completeness(two, named=named).complete
    # ... but not in place of the one it names
    instead = two.model_copy(update={"grantors": [two.grantors[0], two.grantors[2], c.grantors[1]]})
    assert completeness(instead, named=named).missing == ("OUDER_MET_GEZAG",)


def test_rule_8_the_age_bands_stand(split: Referral) -> None:
    named = named_custodians(split)
    # 16 and 17: the youth alone, whatever the referral shows of the parents
    for day in (SIXTEENTH, date(2027, 9, 1)):
        alone = completeness(consent(grantor(YOUTH, day)), named=named)
        assert alone.complete and alone.no_custody == ()
        with_father = consent(grantor(YOUTH, day), grantor(PARENT, day, name=FATHER, deny=True))
        assert completeness(with_father, named=named).complete
    # under 12: the custodians alone; the father's permit is not the mother's
    only_father = consent(grantor(PARENT, DAY_BEFORE_12, name=FATHER), custodians=1)
    assert completeness(only_father, named=named).missing == ("OUDER_MET_GEZAG",)
    only_mother = consent(grantor(PARENT, DAY_BEFORE_12, name=MOTHER), custodians=1)
    assert completeness(only_mother, named=named).complete


def test_rule_8_the_latest_referral_naming_a_person_decides_their_custody(
    referral: Referral, split: Referral
) -> None:
    father_with = with_guardians(referral, Guardian(name=FATHER))
    c = consent(grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name=FATHER), custodians=1)
    # custody given to the father since: the later referral shows it, and nothing says the mother's
    # ended, so both hold it now and both must permit (this once counted one, and the father's permit
    # alone made the consent complete)
    later = named_by([father_with, split])
    assert later.without_custody == frozenset() and later == 2
    assert completeness(c, named=later).missing == ("OUDER_MET_GEZAG",)
    both = c.model_copy(
        update={"grantors": [*c.grantors, grantor(PARENT, FOURTEEN, name=MOTHER)], "custodians": 2}
    )
    assert completeness(both, named=later).complete
    # custody taken away since
    assert completeness(c, named=named_by([split, father_with])).no_custody == (PARENT,)
    # a later referral naming fewer does not lower the count: the father is still shown with custody
    # (by `father_with`, later than `split`), and the latest names the mother: two
    assert named_by([with_guardians(referral, Guardian(name=MOTHER)), father_with, split]) == 2
    assert named_by([with_guardians(referral, Guardian(name=MOTHER)), split]) == 1
    assert named_by([]) == 0


def test_rule_8_two_referrals_each_naming_another_custodian_show_two(referral: Referral) -> None:
    """A BOA referral naming the mother and a leerplicht referral naming the father (each format carries
    one parent at most): both hold custody, so under 16 both must permit. Counted as the most any one
    referral names, one parent's permit made the consent complete, and a stated 1 was accepted."""
    named = named_by(
        [with_guardians(referral, Guardian(name=FATHER)), with_guardians(referral, Guardian(name=MOTHER))]
    )
    assert named == 2 and named.with_custody == {person(MOTHER), person(FATHER)}
    only_father = consent(grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name=FATHER), custodians=1)
    assert custodians_shown(only_father, named=named) == 2  # the stated 1 is below what is shown: 422
    result = completeness(only_father, named=named)
    assert not result.complete and result.missing == ("OUDER_MET_GEZAG",)
    both = consent(
        grantor(YOUTH, FOURTEEN),
        grantor(PARENT, FOURTEEN, name=FATHER),
        grantor(PARENT, FOURTEEN, name=MOTHER),
        custodians=2,
    )
    assert completeness(both, named=named).complete
    # one person written two ways by two referrers is one: the mother's permit alone completes it
    for variant in ("M. Jansen", "Maria de Vries-Jansen", "maria  JANSEN"):
        one = named_by(
            [
                with_guardians(referral, Guardian(name=variant)),
                with_guardians(referral, Guardian(name=MOTHER)),
            ]
        )
        assert one == 1, variant
        only_mother = consent(grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN, name=MOTHER), custodians=1)
        assert custodians_shown(only_mother, named=one) == 1
        assert completeness(only_mother, named=one).complete, variant
    # the same person twice, typed apart, is one
    assert (
        named_by(
            [
                with_guardians(referral, Guardian(name=MOTHER.upper())),
                with_guardians(referral, Guardian(name=MOTHER)),
            ]
        )
        == 1
    )


GOOD = consent(grantor(YOUTH, SIXTEENTH))
ASK = Disclosure(
    purpose=ConsentPurpose.WARME_OVERDRACHT,
    receiver="jongerenwerk-dh",
    categories=frozenset({DataCategory.PERSONALIA}),
    day=date(2027, 1, 1),
)


def test_rule_9_covering_consent() -> None:
    assert coverage(GOOD, ASK, named=0).covers


@pytest.mark.parametrize(
    ("changes", "ask", "gap"),
    [
        ({}, {"receiver": "wijkteam-dh"}, Gap.ANDERE_ONTVANGER),
        ({}, {"purpose": ConsentPurpose.DELEN_NA_MATCH}, Gap.ANDER_DOEL),
        (
            {},
            {"categories": frozenset({DataCategory.PERSONALIA, DataCategory.DELICT})},
            Gap.CATEGORIE_NIET_GEDEKT,
        ),
        ({"valid_until": date(2026, 12, 31)}, {}, Gap.VERLOPEN),
        ({"status": ConsentStatus.VERLOPEN}, {}, Gap.VERLOPEN),
        ({"valid_from": date(2027, 1, 2), "valid_until": date(2028, 1, 1)}, {}, Gap.NOG_NIET_GELDIG),
        ({"status": ConsentStatus.INGETROKKEN}, {}, Gap.INGETROKKEN),
        ({"grantors": [grantor(PARENT, SIXTEENTH)]}, {}, Gap.ONVOLLEDIG),
    ],
)
def test_rule_9_every_way_a_consent_fails_to_cover(
    changes: dict[str, object], ask: dict[str, object], gap: Gap
) -> None:
    c = GOOD.model_copy(update=changes)
    d = Disclosure(**{**ASK.__dict__, **ask})  # type: ignore[arg-type]
    verdict = coverage(c, d, named=0)
    assert not verdict.covers and verdict.gaps == (gap,)
    assert find_covering([c], d, named=0)[0] is None


def test_rule_9_validity_is_inclusive_and_best_consent_wins() -> None:
    last_day = GOOD.model_copy(update={"valid_until": ASK.day})
    assert coverage(last_day, ASK, named=0).covers
    longer = GOOD.model_copy(update={"consent_id": "c2", "valid_until": date(2031, 1, 1)})
    assert find_covering([last_day, longer], ASK, named=0)[0] is longer


def _view(handover_id: str, status: HandoverStatus, consent_id: str | None, **extra: object) -> HandoverView:
    values: dict[str, object] = {
        "receiver": "jongerenwerk-dh",
        "purpose": ConsentPurpose.WARME_OVERDRACHT,
        "may_have": False,
        "categories": frozenset({DataCategory.PERSONALIA, DataCategory.VERWIJZING}),
    }
    values.update(extra)
    return HandoverView(handover_id, status=status, consent_id=consent_id, **values)  # type: ignore[arg-type]


WITHDRAWN_ON = date(2026, 7, 1)


def test_rule_10_withdrawal_effects() -> None:
    views = [
        _view("sent", HandoverStatus.GEACCEPTEERD, "c1", may_have=True),
        _view("waiting", HandoverStatus.WACHT_OP_TOESTEMMING, None),
        _view("other", HandoverStatus.VERZONDEN, "c9", may_have=True),
        _view("elsewhere", HandoverStatus.WACHT_OP_TOESTEMMING, None, receiver="wijkteam-dh"),
        _view("old", HandoverStatus.INGETROKKEN, "c1", may_have=True),
    ]
    effects = withdrawal_effects(GOOD, views, day=WITHDRAWN_ON)
    assert set(effects.withdraw) == {"sent", "waiting"}
    assert effects.tell == (("sent", "jongerenwerk-dh"),)


def test_rule_10_tells_every_receiver_that_may_have_it_whatever_its_status() -> None:
    """A receiver that stored a handover and answered 500 may have it. When its retry found the
    consent incomplete (back to waiting) or past its last day (VERLOPEN), the withdrawal judged by the
    status alone: it withdrew the waiting one without telling, and left the lapsed one alone."""
    views = [
        _view("waiting-again", HandoverStatus.WACHT_OP_TOESTEMMING, None, may_have=True),
        _view("lapsed-after-a-post", HandoverStatus.VERLOPEN, "c1", may_have=True),
        _view("lapsed-unsent", HandoverStatus.VERLOPEN, "c1"),  # never left: nothing to withdraw
        _view("lapsed-under-another", HandoverStatus.VERLOPEN, "c9", may_have=True),
        _view("sent-not-yet-tried", HandoverStatus.VERZONDEN, "c1"),  # withdrawn before it left
    ]
    effects = withdrawal_effects(GOOD, views, day=WITHDRAWN_ON)
    assert effects.withdraw == ("waiting-again", "lapsed-after-a-post", "sent-not-yet-tried")
    assert effects.tell == (
        ("waiting-again", "jongerenwerk-dh"),
        ("lapsed-after-a-post", "jongerenwerk-dh"),
    )


def test_rule_10_a_waiting_handover_another_consent_names_waits_for_that_one() -> None:
    """The youth gave two consents naming jongerenwerk for a warm handover (the second, say, with
    one more category, starting next month) and withdrew the first. The withdrawal withdrew the
    waiting handover too, though the consent still standing was the one it waited for."""
    waiting = [
        _view("waiting", HandoverStatus.WACHT_OP_TOESTEMMING, None),
        _view("waiting-after-a-post", HandoverStatus.WACHT_OP_TOESTEMMING, None, may_have=True),
        _view("sent", HandoverStatus.VERZONDEN, "c1", may_have=True),  # went under the withdrawn one
    ]
    later = GOOD.model_copy(update={"consent_id": "c2", "valid_from": date(2026, 8, 1)})
    effects = withdrawal_effects(GOOD, waiting, others=[GOOD, later], day=WITHDRAWN_ON)
    # one its receiver may have got under the consent withdrawn is withdrawn and told all the same
    assert effects.withdraw == ("waiting-after-a-post", "sent")
    assert effects.tell == (("waiting-after-a-post", "jongerenwerk-dh"), ("sent", "jongerenwerk-dh"))
    assert effects.kept == ("waiting",)

    # a consent that no longer stands, or never will cover it, keeps nothing waiting: consents are
    # not changed, so an incomplete or refused one, or one of too few categories, stays so
    for other in (
        later.model_copy(update={"status": ConsentStatus.INGETROKKEN}),
        later.model_copy(update={"status": ConsentStatus.VERLOPEN}),
        later.model_copy(update={"valid_from": date(2020, 1, 1), "valid_until": date(2026, 6, 30)}),
        later.model_copy(update={"recipient_organisations": ["wijkteam-dh"]}),
        later.model_copy(update={"purpose": ConsentPurpose.DELEN_NA_MATCH}),
        later.model_copy(update={"data_categories": [DataCategory.PERSONALIA]}),
        later.model_copy(update={"grantors": [grantor(YOUTH, SIXTEENTH, deny=True)]}),
        later.model_copy(update={"grantors": [grantor(YOUTH, FOURTEEN)]}),  # at 14: the parents too
    ):
        effects = withdrawal_effects(GOOD, waiting, others=[other], day=WITHDRAWN_ON)
        assert effects.withdraw == ("waiting", "waiting-after-a-post", "sent"), other
        assert effects.kept == ()
    # on its last day it still stands; one that covers it today keeps it too (routing sends it)
    last_day = later.model_copy(update={"valid_from": date(2026, 6, 1), "valid_until": WITHDRAWN_ON})
    assert withdrawal_effects(GOOD, waiting, others=[last_day], day=WITHDRAWN_ON).kept == ("waiting",)
    # rule 8 as the youth's referral says it: with two custodians named, the youth's permit at 14 and
    # one parent's are not enough, at 16 the youth's alone is
    one_parent = later.model_copy(
        update={"grantors": [grantor(YOUTH, FOURTEEN), grantor(PARENT, FOURTEEN)], "custodians": 1}
    )
    assert withdrawal_effects(GOOD, waiting, others=[one_parent], day=WITHDRAWN_ON).kept == ("waiting",)
    assert withdrawal_effects(GOOD, waiting, others=[one_parent], day=WITHDRAWN_ON, named=2).kept == ()
    assert withdrawal_effects(GOOD, waiting, others=[later], day=WITHDRAWN_ON, named=2).kept == ("waiting",)


def test_minimisation_leaves_uncovered_categories_out(referral: Referral) -> None:
    data = minimise(referral, [DataCategory.PERSONALIA, DataCategory.DELICT], [DataCategory.PERSONALIA])
    assert set(data) == {"PERSONALIA"}
    text = str(data)
    assert referral.offence is not None and referral.offence.description not in text
    assert "guardians" not in text and "referrer_organisation" not in text
    both = minimise(referral, [DataCategory.PERSONALIA, DataCategory.DELICT], list(DataCategory))
    assert set(both) == {"PERSONALIA", "DELICT"}


@pytest.fixture
def referral() -> Referral:
    return Referral.model_validate(
        {
            "referrer": {"type": "POLITIE", "organisation": "Politie Den Haag"},
            "case_reference": "PV-1",
            "youth": {
                "bsn": BSN,
                "given_names": "Sam",
                "surname": "Jansen",
                "birth_date": "2010-06-15",
                "municipality": "Den Haag",
                "guardians": [{"name": "Ouder Jansen"}],
            },
            "track": "HALT_STRAF",
            "offence": {"committed_on": "2024-03-01", "description": "graffiti op de schoolmuur"},
        }
    )
