"""Review findings on the mail path, as pure functions: the delegate's line added when the mail is sent
(rules 16, 17), and the BSN check that skips validated phone numbers and ids but nothing else (rule 16)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hub.notify.templates import render, with_behalf
from schemas.bsn import contains_bsn, is_valid_bsn
from schemas.notification import MailNotification

MATCH: dict[str, Any] = {
    "match_type": "GEZINSMATCH",
    "match_id": "123456782",  # a Verwijsindex id of digits only that passes the elfproef
    "case_reference": "sig-1",
    "counterparts": [
        {"name": "Kees de Wit", "organisation": "Jeugdhulp", "email": "k@j.nl", "phone": "+31 (0)612345683"}
    ],
}
NOTICE = {"subject": "Overdracht wacht", "detail": "Toestemming ontbreekt.", "case_reference": "HO-1"}
BORGING = {"from_name": "Kees Dekker", "reason": "uit dienst is", "signal_ids": ["s-1"], "match_ids": []}


@pytest.mark.parametrize(("template", "ctx"), [("match", MATCH), ("notice", NOTICE), ("borging", BORGING)])
def test_the_delegates_line_added_at_send_time_is_the_line_the_template_writes(
    template: str, ctx: dict[str, Any]
) -> None:
    rendered = render(template, ctx)
    assert "vervanger" not in rendered.text
    expected = render(template, {**ctx, "on_behalf_of_name": "Ilse Bakker"})
    assert with_behalf(template, rendered.text, rendered.html, "Ilse Bakker") == (
        expected.text,
        expected.html,
    )
    assert "vervanger van Ilse Bakker" in expected.text and "vervanger van Ilse Bakker" in expected.html


def test_the_borging_mail_read_by_a_delegate_says_for_whom() -> None:
    """The borging mail tells the one who took the signals over "U bent nu de contactpersoon"; sent on
    a day they were away, their own delegate read it, with no line saying it was not theirs."""
    rendered = render("borging", BORGING)
    text, html = with_behalf("borging", rendered.text, rendered.html, "Ilse Bakker")
    assert text.startswith("Beste collega,\n\nU ontvangt dit bericht als vervanger van Ilse Bakker")
    assert html is not None and "vervanger van Ilse Bakker" in html
    assert "vervanger" not in rendered.text  # queued without it: who reads it is decided when it goes


def _mail(body: str, not_bsn: list[str]) -> MailNotification:
    return MailNotification(
        recipient_caseworker_id="cw-1", template="match", subject="Match", body_text=body,
        case_reference="sig-1", not_bsn=not_bsn,
    )  # fmt: skip


def test_validated_phone_numbers_and_ids_do_not_trip_the_bsn_check() -> None:
    phone, match_id = MATCH["counterparts"][0]["phone"], MATCH["match_id"]
    assert contains_bsn(phone) and contains_bsn(match_id) and is_valid_bsn("612345683")
    rendered = render("match", MATCH)
    assert phone in rendered.text and match_id in rendered.text
    assert set(rendered.not_bsn) >= {phone, match_id}
    with pytest.raises(ValidationError, match="looks like a BSN"):  # what the reviewer saw
        MailNotification(
            recipient_caseworker_id="cw-1", template="match", subject=rendered.subject,
            body_text=rendered.text, body_html=rendered.html, case_reference="sig-1",
        )  # fmt: skip
    mail = MailNotification(
        recipient_caseworker_id="cw-1", template="match", subject=rendered.subject,
        body_text=rendered.text, body_html=rendered.html, case_reference="sig-1",
        not_bsn=list(rendered.not_bsn),
    )  # fmt: skip
    assert phone in mail.body_text and match_id in mail.body_text


def test_a_bsn_in_free_text_is_still_refused() -> None:
    bsn = "111222333"
    assert is_valid_bsn(bsn)
    phone = "+31 (0)612345683"
    for body, safe in [
        (f"Bel {phone}. Jongere {bsn}.", [phone]),  # beside a known-safe value
        (f"Jongere {bsn}", ["1", "11", "333", "2"]),  # short values cannot cut into a run of digits
        (f"Jongere 9{bsn}1 en {bsn}", [f"9{bsn}1"]),
    ]:
        with pytest.raises(ValidationError, match="looks like a BSN") as info:
            _mail(body, safe)
        assert bsn not in str(info.value)
    ctx = {**MATCH, "counterparts": [{**MATCH["counterparts"][0], "organisation": f"Jeugdhulp {bsn}"}]}
    rendered = render("match", ctx)
    with pytest.raises(ValidationError, match="looks like a BSN"):
        MailNotification(
            recipient_caseworker_id="cw-1", template="match", subject=rendered.subject,
            body_text=rendered.text, body_html=rendered.html, case_reference="sig-1",
            not_bsn=list(rendered.not_bsn),
        )  # fmt: skip


def test_a_message_queued_before_the_new_fields_still_reads() -> None:
    old = {
        "notification_id": "n-1", "recipient_caseworker_id": "cw-omar", "template": "match",
        "subject": "Match", "body_text": "Beste collega,\n\nU ontvangt dit bericht als vervanger van X.",
        "body_html": None, "case_reference": "sig-1",
    }  # fmt: skip
    mail = MailNotification.model_validate(old)
    assert mail.for_caseworker_id is None and mail.not_bsn == []


def test_a_counterparts_e_mail_address_built_on_nine_digits_does_not_trip_the_bsn_check() -> None:
    """A Verwijsindex counterpart's address built on a staff number whose nine digits pass the elfproef
    made every match mail naming it fail the check: the match went to the DLQ, unmailed (rule 16)."""
    email = "612345683@jeugdzorg.nl"
    assert contains_bsn(email)
    ctx = {**MATCH, "counterparts": [{"name": "Kees de Wit", "organisation": "Jeugdhulp", "email": email}]}
    rendered = render("match", ctx)
    mail = MailNotification(
        recipient_caseworker_id="cw-1", template="match", subject=rendered.subject,
        body_text=rendered.text, body_html=rendered.html, case_reference="sig-1",
        not_bsn=list(rendered.not_bsn),
    )  # fmt: skip
    assert email in mail.body_text and email in (mail.body_html or "")
    # the address is exempt where it stands, not its digits elsewhere in the mail
    with pytest.raises(ValidationError, match="looks like a BSN"):
        _mail(f"{email} en jongere 612345683", list(rendered.not_bsn))


@pytest.mark.parametrize(("signal_count", "match_count"), [(340, 680), (5_000, 20_000)])
def test_the_borging_mail_of_any_size_stays_a_mail_the_hub_can_queue(
    signal_count: int, match_count: int
) -> None:
    """It listed every signal and match id: past some 340 signals with two matches each the text
    outgrew MailNotification, and the borging, in the same transaction, failed every round. Ids as
    long as the index allows, and ones the HTML part escapes, keep it well within the limits."""
    signal_ids = [f"s{i:05d}&" + "x" * 93 for i in range(signal_count)]  # 100 characters, a Code's most
    match_ids = [f"m{i:05d}&" + "y" * 93 for i in range(match_count)]
    ctx = {
        "from_name": "Ë" * 200,
        "reason": "uit dienst is",
        "signal_ids": signal_ids,
        "match_ids": match_ids,
    }
    rendered = render("borging", ctx)
    text, html = with_behalf("borging", rendered.text, rendered.html, "Ë" * 200)
    mail = MailNotification(
        recipient_caseworker_id="cw-1", for_caseworker_id="cw-2", template="borging",
        subject=rendered.subject, body_text=text, body_html=html, case_reference="borging-cw-2",
        not_bsn=list(rendered.not_bsn),
    )  # fmt: skip
    assert len(mail.body_text) < 30_000 and len(mail.body_html or "") < 150_000
    assert f"Overgenomen: {signal_count} signalen, {match_count} open matches:" in mail.body_text
    assert f"- en nog {signal_count - 100} signalen" in mail.body_text
    assert f"- en nog {match_count - 100} open matches" in mail.body_text
    assert [s for s in signal_ids if s in mail.body_text] == signal_ids[:100]
    assert [m for m in match_ids if m in mail.body_text] == match_ids[:100]
    assert "overzicht van signalen in Aurah" in mail.body_text


def test_a_borging_mail_of_a_few_signals_lists_them_all_without_a_pointer_elsewhere() -> None:
    rendered = render("borging", {**BORGING, "signal_ids": ["s-1", "s-2"], "match_ids": ["m-1"]})
    assert "Overgenomen: 2 signalen, 1 open match:\n- signaal s-1\n- signaal s-2\n- open match m-1\n" in (
        rendered.text
    )
    assert "en nog" not in rendered.text and "Aurah" not in rendered.text
