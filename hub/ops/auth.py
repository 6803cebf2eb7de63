"""Operators: argon2 password hashes, roles, and server-side sessions behind a signed HttpOnly cookie."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.problems import Problem
from hub.audit import AuditEntry, write_audit
from hub.logging import get_logger
from hub.ops.tables import ROLES, operator_sessions, operators
from hub.store import Store
from schemas.envelope import utcnow

COOKIE = "ketenhub_ops"
SYSTEM = "ketenhub-ops"
ANONYMOUS = "anonymous"  # who tried a login under a name that is no operator's, in the audit log
SESSION_TTL = timedelta(hours=8)
# Each role may do what the roles before it may: viewer sees health, operator acts on dead letters,
# privacy officer may also see payloads unmasked.
RANK = {role: i for i, role in enumerate(ROLES)}
T = TypeVar("T")
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not-a-password")  # verify against this for unknown users: same timing
# A hash or check takes about 150 ms of CPU and 64 MiB: never on the event loop, where each login
# held every partner's request and every consumer for that long, and two at a time at most.
# argon2-cffi releases the interpreter lock while it works.
_ARGON2 = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")


async def _in_argon2_thread(work: Callable[..., T], *args: str) -> T:
    return await asyncio.get_running_loop().run_in_executor(_ARGON2, work, *args)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
USERNAME_MAX = 100  # the operators table's column
log = get_logger(__name__)


@dataclass(frozen=True)
class Operator:
    """A logged-in operator."""

    username: str
    role: str

    def may(self, role: str) -> bool:
        """True when this operator's role includes `role`."""
        return RANK[self.role] >= RANK[role]


async def add_operator(store: Store, username: str, password: str, role: str, *, by: str = SYSTEM) -> bool:
    """Create an operator, or reset the password and role of an existing one, ending their sessions.

    A disabled operator stays disabled (`set_disabled` lets them in again). Audited as done by `by`;
    returns True when the operator is disabled.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 10:
        raise ValueError("password must be at least 10 characters")
    if not username.strip() or _CONTROL.search(username):
        raise ValueError("username must be non-empty text without control characters")
    if len(username) > USERNAME_MAX:
        raise ValueError(f"username must be at most {USERNAME_MAX} characters")
    if _CONTROL.search(password):  # a line ending kept from a file (CRLF): nobody could log in with it
        raise ValueError("password must not hold control characters (a line ending, a tab)")
    hashed = await _in_argon2_thread(_hasher.hash, password)
    async with store.transaction() as session:
        disabled = (
            await session.execute(select(operators.c.disabled).where(operators.c.username == username))
        ).scalar_one_or_none()
        if disabled is not None:
            await session.execute(
                update(operators)
                .where(operators.c.username == username)
                .values(password_hash=hashed, role=role)
            )
            ended = await _end_sessions(session, username)  # an old cookie must not outlive a reset
            action = "operator.reset"
        else:
            await session.execute(
                insert(operators).values(
                    username=username, password_hash=hashed, role=role, created_at=utcnow(), disabled=False
                )
            )
            ended, action = 0, "operator.added"
        await _audit(session, action, by, operator=username, role=role, sessions_ended=ended)
    return bool(disabled)


class UnknownOperator(LookupError):
    """No operator has that name."""


async def set_disabled(store: Store, username: str, disabled: bool, *, by: str = SYSTEM) -> int:
    """Disable an operator (no login from now on) or enable them again; either way their sessions
    end. Audited as done by `by`; returns how many sessions ended. UnknownOperator when there is none."""
    async with store.transaction() as session:
        found = await session.execute(
            update(operators)
            .where(operators.c.username == username)
            .values(disabled=disabled)
            .returning(operators.c.username)
        )
        if found.first() is None:
            raise UnknownOperator(username)
        ended = await _end_sessions(session, username)
        action = "operator.disabled" if disabled else "operator.enabled"
        await _audit(session, action, by, operator=username, sessions_ended=ended)
    return ended


async def _end_sessions(session: AsyncSession, username: str) -> int:
    ended = await session.execute(
        delete(operator_sessions)
        .where(operator_sessions.c.username == username)
        .returning(operator_sessions.c.token_hash)
    )
    return len(ended.all())


async def _audit(
    session: AsyncSession, action: str, user: str, *, transaction_id: str | None = None, **objects: Any
) -> None:
    """Operators' accounts and logins concern no youth: no youth key, only who, what and from where."""
    entry = AuditEntry(action=action, user=user[:200], objects=objects)
    await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)


def _sign(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()[:32]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def login(
    store: Store,
    secret: str,
    username: str,
    password: str,
    *,
    address: str | None = None,
    transaction_id: str | None = None,
) -> str | None:
    """Check the password; on success start a session and return the cookie value.

    Every attempt is audited, a failed one also logged; neither holds the password, and a name that
    is no operator's (it may be a password typed in the wrong field) is left out of both.
    """
    if _CONTROL.search(username):  # no operator has such a name, and PostgreSQL cannot look up a NUL
        username = ""
    async with store.connect() as conn:
        row = (
            await conn.execute(
                select(operators.c.password_hash, operators.c.disabled).where(
                    operators.c.username == username
                )
            )
        ).first()
    try:
        await _in_argon2_thread(_hasher.verify, row.password_hash if row else _DUMMY, password)
        why = "unknown user" if row is None else "disabled" if row.disabled else None
    except (VerificationError, InvalidHashError):
        why = "unknown user" if row is None else "wrong password"
    if why is not None:
        name = username if row is not None else None
        log.warning("operator login failed", operator=name, reason=why, address=address)
        async with store.transaction() as session:
            await _audit(
                session,
                "operator.login_failed",
                name or ANONYMOUS,
                transaction_id=transaction_id,
                operator=name,
                reason=why,
                address=address,
            )
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()
    async with store.transaction() as session:
        # The password checked may have been reset (or the operator disabled) while it was checked,
        # and that reset ended the sessions there were: look again, and hold the row until this
        # session is in, so that a reset after this one ends it too.
        current = (
            await session.execute(
                select(operators.c.password_hash, operators.c.disabled)
                .where(operators.c.username == username)
                .with_for_update(read=True)
            )
        ).first()
        if row is None or current is None or current.password_hash != row.password_hash or current.disabled:
            log.warning(
                "operator login failed", operator=username, reason="changed meanwhile", address=address
            )
            await _audit(
                session,
                "operator.login_failed",
                username,
                transaction_id=transaction_id,
                operator=username,
                reason="changed meanwhile",
                address=address,
            )
            return None
        await session.execute(delete(operator_sessions).where(operator_sessions.c.expires_at < now))
        await session.execute(
            insert(operator_sessions).values(
                token_hash=_token_hash(token), username=username, created_at=now, expires_at=now + SESSION_TTL
            )
        )
        await _audit(session, "operator.logged_in", username, transaction_id=transaction_id, address=address)
    log.info("operator logged in", operator=username, address=address)
    return f"{token}.{_sign(secret, token)}"


async def logout(
    store: Store, cookie: str | None, *, address: str | None = None, transaction_id: str | None = None
) -> None:
    """End the session of this cookie (server side: the cookie is useless afterwards); audited."""
    if cookie:
        token = cookie.partition(".")[0]
        async with store.transaction() as session:
            ended = (
                await session.execute(
                    delete(operator_sessions)
                    .where(operator_sessions.c.token_hash == _token_hash(token))
                    .returning(operator_sessions.c.username)
                )
            ).first()
            if ended is not None:
                await _audit(
                    session,
                    "operator.logged_out",
                    ended.username,
                    transaction_id=transaction_id,
                    address=address,
                )


async def operator_of(store: Store, secret: str, cookie: str | None) -> Operator | None:
    """The operator behind a session cookie, or None (unsigned, unknown, expired, or disabled)."""
    if not cookie or "." not in cookie:
        return None
    token, _, signature = cookie.partition(".")
    # as bytes: compare_digest refuses text with non-ASCII characters (a TypeError, not a mismatch)
    if not hmac.compare_digest(signature.encode(), _sign(secret, token).encode()):
        return None
    async with store.connect() as conn:
        row = (
            await conn.execute(
                select(
                    operators.c.username,
                    operators.c.role,
                    operators.c.disabled,
                    operator_sessions.c.expires_at,
                )
                .join(operators, operators.c.username == operator_sessions.c.username)
                .where(operator_sessions.c.token_hash == _token_hash(token))
            )
        ).first()
    if row is None or row.disabled:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
    if expires < utcnow():
        return None
    return Operator(row.username, row.role)


async def optional_operator(request: Request) -> Operator | None:
    """The logged-in operator of this request, if any."""
    hub = request.app.state.hub
    return await operator_of(hub.store, hub.settings.secret_value(), request.cookies.get(COOKIE))


async def current_operator(operator: Annotated[Operator | None, Depends(optional_operator)]) -> Operator:
    """401 for anonymous requests."""
    if operator is None:
        raise Problem(401, "Not logged in", "Log in at /ops/login first.")
    return operator


def requires(role: str) -> object:
    """A dependency: the logged-in operator, 403 unless their role includes `role`."""

    async def check(operator: Annotated[Operator, Depends(current_operator)]) -> Operator:
        if not operator.may(role):
            raise Problem(403, "Not allowed", f"This needs the role {role}.")
        return operator

    return Depends(check)


CurrentOperator = Annotated[Operator, Depends(current_operator)]
