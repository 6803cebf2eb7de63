"""Mail templates (Dutch, plain text with an HTML alternative), as pure functions of a context.

Rule 16: a match mail carries the counterpart's contact details, the match type and our case
reference, nothing about the youth. The templates only ever read the keys listed here, so a
context that happens to hold more (a BSN, a name) cannot leak into a mail.

Who reads a caseworker's mail is decided when it is sent, which may be days after it was queued: the
hub queues the mail without the line for a delegate ("als vervanger van ..."), and the mail connector
adds it with `with_behalf` once it knows who reads it, where the template itself would have put it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

MATCH_TYPES = {
    "CLIENTMATCH": "cliëntmatch (dezelfde jongere)",
    "GEZINSMATCH": "gezinsmatch (jongeren met een gezamenlijke ouder)",
}


GREETING = "Beste collega,\n\n"
# Notices about a warm handover to the caseworker who asked for it: the generic notice, each under
# its own name (the mail's template says which, in the mail queue and the audit log).
HANDOVER_NOTICES = frozenset(
    {
        "handover.waiting",
        "handover.unanswered",
        "handover.declined",
        "handover.lapsed",
        "handover.undelivered",
        "handover.notice_undelivered",
    }
)
# The templates with a line for a delegate. The borging mail too: it tells the one who took the signals
# over that they are the contact now, and read by their own delegate (they are away when it goes) it
# says for whom.
BEHALF_TEMPLATES = frozenset({"match", "borging", "notice", *HANDOVER_NOTICES})


@dataclass(frozen=True)
class Rendered:
    """A rendered mail; `not_bsn`: the validated phone numbers, e-mail addresses and ids it shows
    (MailNotification)."""

    subject: str
    text: str
    html: str
    not_bsn: tuple[str, ...] = ()


def _page(title: str, paragraphs: list[str], table: list[tuple[str, str]] | None = None) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{escape(k)}</th><td>{escape(v)}</td></tr>"
        for k, v in table or []
    )
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    grid = f"<table>{rows}</table>" if rows else ""
    return (
        "<!DOCTYPE html><html lang='nl'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title></head><body style='font-family:sans-serif'>"
        f"<h2>{escape(title)}</h2>{grid}{body}</body></html>"
    )


def behalf_line(absent_name: str) -> str:
    """The line that tells a delegate for whom they read the mail."""
    return f"U ontvangt dit bericht als vervanger van {absent_name}, die afwezig is."


def _behalf(ctx: Mapping[str, Any]) -> list[str]:
    absent = ctx.get("on_behalf_of_name")
    if not absent:
        return []
    return [behalf_line(str(absent))]


def with_behalf(template: str, text: str, html: str | None, absent_name: str) -> tuple[str, str | None]:
    """A mail rendered without `on_behalf_of_name`, with the delegate's line added where the template
    puts it (the first line after the greeting, the first paragraph of the HTML part): the same
    mail as rendered with it. Templates without such a line, or text of another shape, stay as they are.
    """
    if template not in BEHALF_TEMPLATES or not text.startswith(GREETING):
        return text, html
    line = behalf_line(absent_name)
    text = f"{GREETING}{line}\n{text[len(GREETING) :]}"
    # every value in the HTML part is escaped: "<p>" is the template's own first paragraph
    if html is not None and "<p>" in html:
        html = html.replace("<p>", f"<p>{escape(line)}</p><p>", 1)
    return text, html


def _contact_lines(counterparts: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for c in counterparts:
        parts = [str(c.get("organisation") or "")]
        parts += [str(c[k]) for k in ("email", "phone") if c.get(k)]
        out.append((str(c.get("name") or "onbekend"), ", ".join(p for p in parts if p)))
    return out


def match_mail(ctx: Mapping[str, Any]) -> Rendered:
    """A Verwijsindex match: counterpart contacts, type, case reference (keys: match_type,
    case_reference, match_id, counterparts, on_behalf_of_name)."""
    kind = MATCH_TYPES.get(str(ctx["match_type"]), str(ctx["match_type"]))
    ref = str(ctx["case_reference"])
    contacts = _contact_lines(list(ctx["counterparts"]))
    table = [("Soort match", kind), ("Halt-zaak (signaal)", ref), ("Match", str(ctx["match_id"]))]
    intro = "De Verwijsindex Haaglanden meldt een match op een signaal van Halt Den Haag."
    advice = (
        "Neem contact op met de andere betrokken professional(s) om af te stemmen. "
        "Om welke jongere het gaat, ziet u bij het signaal met het genoemde nummer, in Aurah bij de zaak "
        "waarvoor het werd geregistreerd; deze mail noemt bewust geen naam of BSN."
    )
    text = GREETING + "\n".join(
        [
            *_behalf(ctx),
            intro,
            "",
            *(f"{k}: {v}" for k, v in table),
            "",
            "Contactgegevens van de andere professional(s):",
            *(f"- {name}: {detail}" for name, detail in contacts),
            "",
            advice,
            "",
            "Dit bericht is automatisch verstuurd door ketenhub.",
        ]
    )
    html = _page(
        "Match in de Verwijsindex",
        [*_behalf(ctx), intro, "Contactgegevens van de andere professional(s):"],
        table,
    ).replace(
        "</body>",
        "<ul>"
        + "".join(f"<li><b>{escape(n)}</b>: {escape(d)}</li>" for n, d in contacts)
        + f"</ul><p>{escape(advice)}</p><p><small>Automatisch verstuurd door ketenhub.</small></p></body>",
    )
    # a counterpart's phone number and e-mail address were validated as such (an address may be
    # built on a staff number of nine digits); the rest of what a counterpart shows is still read
    validated = [str(c[k]) for c in ctx["counterparts"] for k in ("phone", "email") if c.get(k)]
    return Rendered(
        f"Match in de Verwijsindex ({kind.split(' ')[0]}), zaak {ref}",
        text,
        html,
        not_bsn=(ref, str(ctx["match_id"]), *validated),
    )


# The borging mail names at most this many signals, and as many matches: a caseworker who held
# hundreds would make a mail past what MailNotification takes, and the borging would fail each round.
BORGING_LISTED = 100


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _listed(ids: list[str], label: str, rest: str) -> list[str]:
    """The lines for the first `BORGING_LISTED` of `ids`, and one saying how many more there are."""
    lines = [f"- {label} {i}" for i in ids[:BORGING_LISTED]]
    if len(ids) > BORGING_LISTED:
        lines.append(f"- en nog {len(ids) - BORGING_LISTED} {rest}")
    return lines


def borging_mail(ctx: Mapping[str, Any]) -> Rendered:
    """Borging summary for the delegate (keys: from_name, reason, signal_ids, match_ids,
    on_behalf_of_name): the counts, and the first `BORGING_LISTED` signal and match ids."""
    signals_ = [str(s) for s in ctx.get("signal_ids", [])]
    matches_ = [str(m) for m in ctx.get("match_ids", [])]
    why = str(ctx.get("reason", "afwezigheid"))
    intro = (
        f"Omdat {ctx['from_name']} {why}, zijn de lopende signalen in de Verwijsindex aan u "
        "overgedragen (borging). U bent nu de contactpersoon; de Verwijsindex is bijgewerkt."
    )
    taken = (
        f"Overgenomen: {_count(len(signals_), 'signaal', 'signalen')}, "
        f"{_count(len(matches_), 'open match', 'open matches')}:"
    )
    lines = _listed(signals_, "signaal", "signalen") + _listed(matches_, "open match", "open matches")
    overview = None  # where to find the rest, when some are left out
    if max(len(signals_), len(matches_)) > BORGING_LISTED:
        overview = (
            f"Deze mail noemt hooguit {BORGING_LISTED} signalen en {BORGING_LISTED} open matches. Alle "
            "signalen waarvan u nu de contactpersoon bent, met hun matches, ziet u in het overzicht van "
            "signalen in Aurah."
        )
    body = [*_behalf(ctx), intro, "", taken, *lines]
    if overview is not None:
        body += ["", overview]
    text = GREETING + "\n".join([*body, "", "ketenhub"])
    items = "".join(f"<li>{escape(x[2:])}</li>" for x in lines)
    after = f"<p>{escape(overview)}</p>" if overview is not None else ""
    html = _page("Signalen aan u overgedragen", [*_behalf(ctx), intro, taken]).replace(
        "</body>", f"<ul>{items}</ul>{after}</body>"
    )
    shown = (*signals_[:BORGING_LISTED], *matches_[:BORGING_LISTED])
    return Rendered(f"Borging: {len(signals_)} signaal/signalen overgenomen", text, html, not_bsn=shown)


def notice_mail(ctx: Mapping[str, Any]) -> Rendered:
    """A generic notice (handover waiting, not answered): keys subject, detail, case_reference."""
    detail = str(ctx["detail"])
    ref = str(ctx["case_reference"])
    text = GREETING + "\n".join([*_behalf(ctx), detail, "", f"Zaak: {ref}", "", "ketenhub"])
    html = _page(str(ctx["subject"]), [*_behalf(ctx), detail, f"Zaak: {ref}"])
    return Rendered(str(ctx["subject"]), text, html, not_bsn=(ref,))


TEMPLATES: dict[str, Callable[[Mapping[str, Any]], Rendered]] = {
    "match": match_mail,
    "borging": borging_mail,
    "notice": notice_mail,
    **dict.fromkeys(HANDOVER_NOTICES, notice_mail),
}


def render(template: str, ctx: Mapping[str, Any]) -> Rendered:
    """Render a known template; KeyError names an unknown one."""
    try:
        fn = TEMPLATES[template]
    except KeyError:
        raise KeyError(f"unknown mail template {template!r}; known: {sorted(TEMPLATES)}") from None
    return fn(ctx)
