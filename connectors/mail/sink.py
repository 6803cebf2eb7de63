"""The embedded SMTP sink: a real SMTP server (aiosmtpd) on a loopback port in the hub's event loop.

It keeps what it receives (in the store, or in memory) so a person trying the hub sees exactly
what a caseworker would get. Tests use it as their SMTP server: it can refuse a recipient, a sender
or a message with a chosen reply, ask for a login and refuse a wrong password, and be stopped and
started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from sqlalchemy import delete, func, insert, select

from hub.notify.tables import mail_sink
from hub.store import Store
from schemas.envelope import utcnow


@dataclass(frozen=True)
class SinkMail:
    """One received mail."""

    id: int
    received_at: datetime
    mail_from: str
    rcpt_to: list[str]
    subject: str | None
    message_id: str | None
    raw: str

    def as_json(self, *, with_raw: bool = True) -> dict[str, Any]:
        """For the API and the CLI."""
        out = {
            "id": self.id,
            "receivedAt": self.received_at.isoformat(),
            "from": self.mail_from,
            "to": self.rcpt_to,
            "subject": self.subject,
            "messageId": self.message_id,
        }
        if with_raw:
            out["raw"] = self.raw
        return out


class MailSink:
    """An aiosmtpd server that keeps the mails: in `store` (capped at `keep`) or in memory."""

    def __init__(self, store: Store | None = None, *, keep: int = 500, host: str = "127.0.0.1") -> None:
        self.store, self.keep, self.host = store, keep, host
        self.memory: deque[SinkMail] = deque(maxlen=keep)
        self.refuse: dict[str, str] = {}  # recipient address -> SMTP reply, e.g. "550 5.1.1 unknown"
        self.refuse_from: dict[str, str] = {}  # sender address -> SMTP reply to its MAIL FROM
        self.refuse_data: str | None = None  # the reply to every message, e.g. "554 5.6.0 rejected"
        # Set: a login is asked for (AUTH over plain text, loopback only) and another password refused
        # with 535; read as each connection opens.
        self.password: str | None = None
        self.port = 0
        self.ready = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()
        self._next = 0
        self._writes: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self, port: int = 0) -> int:
        """Listen (again) on `port` (0: a free one); return the port."""
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            login: dict[str, Any] = {}
            if self.password is not None:
                login = {"authenticator": self._authenticate, "auth_require_tls": False}
            session = SMTP(self, hostname="ketenhub-sink", ident="ketenhub mail sink", **login)
            self._sessions.add(session)
            return session

        self._server = await loop.create_server(factory, self.host, port or self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self.ready.set()
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop open connections (the SMTP server goes 'down')."""
        self.ready.clear()
        if self._server is not None:
            self._server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            self._sessions.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=5)

    async def run(self) -> None:
        """Background task of the hub: serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def endpoint(self) -> tuple[str, int]:
        """Where the mailer sends to; waits until the sink listens."""
        await asyncio.wait_for(self.ready.wait(), 10)
        return self.host, self.port

    # -- aiosmtpd handler hooks ---------------------------------------------------------------
    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """A login with the sink's password succeeds; any other is refused (aiosmtpd: 535)."""
        given = auth_data.password if isinstance(auth_data, LoginPassword) else None
        ok = self.password is not None and given == self.password.encode()
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        """Accept a sender, or refuse it with the scripted reply."""
        if address in self.refuse_from:
            return self.refuse_from[address]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        """Accept a recipient, or refuse it with the scripted reply."""
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        """Keep the mail, or refuse it with the scripted reply."""
        if self.refuse_data is not None:
            return self.refuse_data
        raw = bytes(envelope.original_content or envelope.content)
        headers = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        values = {
            "received_at": utcnow(),
            "mail_from": str(envelope.mail_from or ""),
            "rcpt_to": ",".join(envelope.rcpt_tos),
            "subject": str(headers.get("Subject") or "") or None,
            "message_id": str(headers.get("Message-ID") or "") or None,
            "raw": raw.decode("utf-8", "replace"),
        }
        self._next += 1
        self.memory.append(_mail(self._next, values))
        if self.store is not None:
            # Written after the reply, not before: the sender may hold the database's write lock
            # (SQLite) while it waits for this "250", and must not wait on us.
            task = asyncio.create_task(self._persist(values))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        return "250 Message accepted for delivery"

    async def _persist(self, values: dict[str, Any]) -> None:
        assert self.store is not None
        async with self._write_lock, self.store.transaction() as tx:
            await tx.execute(insert(mail_sink).values(**values))
            newest = (await tx.execute(select(func.max(mail_sink.c.id)))).scalar_one()
            await tx.execute(delete(mail_sink).where(mail_sink.c.id <= newest - self.keep))

    # -- reading ------------------------------------------------------------------------------
    async def mails(self, limit: int = 100) -> list[SinkMail]:
        """The newest mails first."""
        if self.store is None:
            return list(reversed(self.memory))[:limit]
        return await stored_mails(self.store, limit)


def _mail(id_: int, v: dict[str, Any]) -> SinkMail:
    return SinkMail(
        id=id_,
        received_at=v["received_at"],
        mail_from=v["mail_from"],
        rcpt_to=[r for r in str(v["rcpt_to"]).split(",") if r],
        subject=v["subject"],
        message_id=v["message_id"],
        raw=v["raw"],
    )


async def stored_mails(store: Store, limit: int = 100) -> list[SinkMail]:
    """What the embedded sink kept, newest first (also for `ketenhub mails` in another process)."""
    async with store.connect() as conn:
        rows = (await conn.execute(select(mail_sink).order_by(mail_sink.c.id.desc()).limit(limit))).all()
    return [_mail(r.id, r._asdict()) for r in rows]


async def stored_mail(store: Store, mail_id: int) -> SinkMail | None:
    """One mail the sink kept, by id, however old (the list shows the newest)."""
    async with store.connect() as conn:
        row = (await conn.execute(select(mail_sink).where(mail_sink.c.id == mail_id))).first()
    return _mail(row.id, row._asdict()) if row is not None else None


def text_of(raw: str) -> str:
    """A mail's plain-text part, as a mail client shows it; the whole message when it has none."""
    msg = BytesParser(policy=policy.default).parsebytes(raw.encode())
    body = msg.get_body(("plain",)) if isinstance(msg, EmailMessage) else None
    return body.get_content() if body is not None else raw
