"""The parent letter for a stored signal: only the letter's own data, never a reason or offence."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from fastapi import Response

from hub.config import Settings
from hub.letters import (
    SENDER_DEFAULTS,
    Afzender,
    LetterContact,
    LetterJeugdige,
    ParentLetterData,
    render_parent_letter_html,
    render_parent_letter_pdf,
)


def letter_data(row: Any, settings: Settings, day: date) -> ParentLetterData:
    """The letter's content from a signals row and the configured sender."""
    sender = Afzender(**(SENDER_DEFAULTS | settings.verwijsindex.letter_sender))
    contact = row.contact
    return ParentLetterData(
        kenmerk=row.signal_id,
        datum=day,
        jeugdige=LetterJeugdige(
            voornamen=row.given_names,
            geslachtsnaam=row.surname,
            geboortedatum=row.birth_date,
            geslacht=row.gender,
            gemeente=row.municipality,
        ),
        aangemaakt=row.created,
        einddatum=row.end_date,
        contactpersoon=LetterContact(
            naam=contact["name"],
            email=contact.get("email") or sender.email,
            telefoon=contact.get("phone") or sender.telefoon,
        ),
        afzender=sender,
    )


async def letter_response(row: Any, settings: Settings, accept: str, *, day: date) -> Response:
    """HTML, or PDF when the client accepts application/pdf.

    The PDF is made in a worker thread: fpdf is pure Python, some 45 ms a letter (and 0.4 s to
    import on the first), which on the event loop held every other request.
    """
    data = letter_data(row, settings, day)
    if "application/pdf" in accept.lower():
        return Response(
            await asyncio.to_thread(render_parent_letter_pdf, data),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="ouderbrief-{row.signal_id}.pdf"'},
        )
    return Response(render_parent_letter_html(data), media_type="text/html; charset=utf-8")
