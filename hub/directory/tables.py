"""Tables of the caseworker directory."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Date, ForeignKey, Integer, String, Table

from hub.directory.ids import CASEWORKER_ID_MAX
from hub.store.tables import metadata

caseworkers = Table(
    "caseworkers",
    metadata,
    Column("caseworker_id", String(CASEWORKER_ID_MAX), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("phone", String(40), nullable=True),
    Column("team", String(20), nullable=False),
    Column("meldingsbevoegd", Boolean, nullable=False, default=False),
    Column("delegate_id", String(CASEWORKER_ID_MAX), nullable=True),
    Column("active", Boolean, nullable=False, default=True),
)

absences = Table(
    "caseworker_absences",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "caseworker_id",
        String(CASEWORKER_ID_MAX),
        ForeignKey("caseworkers.caseworker_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("start", Date, nullable=False),
    Column("end", Date, nullable=False),
)
