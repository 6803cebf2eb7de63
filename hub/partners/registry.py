"""Register partners, rotate their keys, list them, and authenticate a presented key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.errors import HubError
from hub.partners.keys import PartnerType, hash_key, key_id_of, matches, new_key
from hub.partners.tables import partners
from schemas.envelope import utcnow

SYSTEM = "ketenhub-partners"


class PartnerExists(HubError):
    """A partner with this name is already registered."""


class UnknownPartner(HubError):
    """No partner has this name."""


@dataclass(frozen=True)
class Partner:
    """A registered partner (without its key)."""

    id: str
    name: str
    type: PartnerType
    key_id: str
    created_at: datetime
    rotated_at: datetime | None
    active: bool
    # The Kafka connector source it speaks for (rule 7; hub.intake.sources), when it claimed one.
    kafka_source: str | None = None


def _partner(row: object) -> Partner:
    m = row._mapping  # type: ignore[attr-defined]
    return Partner(
        id=m["id"],
        name=m["name"],
        type=PartnerType(m["type"]),
        key_id=m["key_id"],
        created_at=m["created_at"],
        rotated_at=m["rotated_at"],
        active=bool(m["active"]),
        kafka_source=m["kafka_source"],
    )


async def add_partner(
    session: AsyncSession, name: str, type_: PartnerType, *, user: str = "cli"
) -> tuple[Partner, str]:
    """Register a partner; returns it and its API key (shown once, only the hash is stored)."""
    exists = await session.execute(select(partners.c.id).where(partners.c.name == name))
    if exists.first() is not None:
        raise PartnerExists(f"partner {name!r} already exists")
    key_id, key = new_key()
    partner_id, now = str(uuid.uuid4()), utcnow()
    await session.execute(
        insert(partners).values(
            id=partner_id,
            name=name,
            type=type_.value,
            key_id=key_id,
            key_hash=hash_key(key_id, key),
            created_at=now,
            rotated_at=None,
            active=True,
        )
    )
    await write_audit(
        session,
        AuditEntry(action="partner.added", user=user, objects={"partner": name, "type": type_.value}),
        transaction_id=None,
        system=SYSTEM,
    )
    return Partner(partner_id, name, type_, key_id, now, None, True), key


async def rotate_key(session: AsyncSession, name: str, *, user: str = "cli") -> tuple[Partner, str]:
    """Give a partner a new key; the old one stops working within http.key_cache_s."""
    row = (await session.execute(select(partners).where(partners.c.name == name))).first()
    if row is None:
        raise UnknownPartner(f"no partner named {name!r}")
    key_id, key = new_key()
    now = utcnow()
    await session.execute(
        update(partners)
        .where(partners.c.name == name)
        .values(key_id=key_id, key_hash=hash_key(key_id, key), rotated_at=now)
    )
    await write_audit(
        session,
        AuditEntry(action="partner.key_rotated", user=user, objects={"partner": name}),
        transaction_id=None,
        system=SYSTEM,
    )
    return replace(_partner(row), key_id=key_id, rotated_at=now), key


async def set_active(session: AsyncSession, name: str, active: bool, *, user: str = "cli") -> Partner:
    """Revoke a partner (its key stops working within http.key_cache_s; what it sent before stays)
    or let it in again with the key it had; audited either way."""
    row = (await session.execute(select(partners).where(partners.c.name == name))).first()
    if row is None:
        raise UnknownPartner(f"no partner named {name!r}")
    await session.execute(update(partners).where(partners.c.name == name).values(active=active))
    await write_audit(
        session,
        AuditEntry(
            action="partner.enabled" if active else "partner.disabled", user=user, objects={"partner": name}
        ),
        transaction_id=None,
        system=SYSTEM,
    )
    return replace(_partner(row), active=active)


async def find_partner(session: AsyncSession, name: str) -> Partner:
    """The partner of this name; UnknownPartner when there is none."""
    row = (await session.execute(select(partners).where(partners.c.name == name))).first()
    if row is None:
        raise UnknownPartner(f"no partner named {name!r}")
    return _partner(row)


async def list_partners(session: AsyncSession) -> list[Partner]:
    """Every registered partner, by name."""
    rows = await session.execute(select(partners).order_by(partners.c.name))
    return [_partner(r) for r in rows]


async def authenticate(session: AsyncSession, key: str) -> Partner | None:
    """The active partner holding this key, or None."""
    key_id = key_id_of(key)
    if key_id is None:
        return None
    row = (await session.execute(select(partners).where(partners.c.key_id == key_id))).first()
    if row is None or not matches(key, key_id, row._mapping["key_hash"]):
        return None
    partner = _partner(row)
    return partner if partner.active else None
