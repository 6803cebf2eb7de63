"""Sending over SMTP with aiosmtplib: plain, STARTTLS or implicit TLS, optional login, reused connections.

Errors are typed for the retry ladder: SMTP 4xx replies and connection trouble are TransientError,
5xx replies are PermanentError (dead letter at once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiosmtplib

from connectors.mail.message import OutgoingMail
from hub.config import SmtpSettings
from hub.errors import PermanentError, TransientError
from hub.logging import get_logger

log = get_logger(__name__)
Endpoint = Callable[[], Awaitable[tuple[str, int]]]


def classify(exc: BaseException) -> Exception:
    """An aiosmtplib (or socket) error as TransientError or PermanentError; never echoes addresses."""
    if isinstance(exc, OSError):  # connection refused, dropped, timed out, or a refusing greeting
        return TransientError(f"SMTP server unreachable ({type(exc).__name__})")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        kind = PermanentError if codes and all(c >= 500 for c in codes) else TransientError
        return kind(f"SMTP server refused the recipient ({', '.join(map(str, codes))})")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"SMTP {exc.code}: {str(exc.message)[:120]}"
        return PermanentError(text) if exc.code >= 500 else TransientError(text)
    return TransientError(f"SMTP error ({type(exc).__name__})")


class SmtpMailer:
    """A few SMTP connections (`smtp.connections`), opened when needed, reused, reopened when dropped."""

    def __init__(self, settings: SmtpSettings, endpoint: Endpoint | None = None) -> None:
        self.settings = settings
        self._endpoint = endpoint
        # Last in, first out: a quiet hub keeps reusing one connection; a busy one opens more.
        self._slots: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for _ in range(settings.connections):
            self._slots.put_nowait(_Slot())
        self.sent = 0
        self.connections = 0

    async def _where(self) -> tuple[str, int]:
        if self._endpoint is not None:
            return await self._endpoint()
        assert self.settings.host is not None
        return self.settings.host, self.settings.port

    async def _new_client(self) -> aiosmtplib.SMTP:
        s = self.settings
        host, port = await self._where()
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            timeout=s.timeout_s,
            use_tls=s.tls == "implicit",
            start_tls=s.tls == "starttls",
        )
        await client.connect()  # logs in too when a username is set
        self.connections += 1
        return client

    async def send(self, msg: OutgoingMail) -> None:
        """Send one message; raises TransientError or PermanentError."""
        slot = await self._slots.get()
        try:
            await self._send_on(slot, msg)
        finally:
            self._slots.put_nowait(slot)

    async def _send_on(self, slot: _Slot, msg: OutgoingMail) -> None:
        for attempt in (1, 2):
            try:
                if slot.client is None or not slot.client.is_connected:
                    slot.client = await self._new_client()
                await slot.client.sendmail(msg.sender, msg.recipients, msg.data)
                self.sent += 1
                return
            except aiosmtplib.SMTPServerDisconnected as exc:
                # An idle connection the server closed: one fresh connection, then give up.
                slot.drop()
                if attempt == 2:
                    raise classify(exc) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                error = classify(exc)
                if isinstance(exc, OSError) or isinstance(error, TransientError):
                    slot.drop()  # e.g. 421: the server is closing the channel
                else:
                    await slot.reset()
                raise error from None

    async def ping(self) -> None:
        """Raise when the SMTP server does not answer (readiness)."""
        client = await self._new_client()
        with contextlib.suppress(Exception):
            await client.quit()

    async def aclose(self) -> None:
        """Say goodbye to the server on every open connection."""
        for _ in range(self.settings.connections):
            slot = await self._slots.get()
            if slot.client is not None and slot.client.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.client.quit(), 2)
            slot.drop()
        for _ in range(self.settings.connections):
            self._slots.put_nowait(_Slot())


class _Slot:
    """One connection of the mailer, or room for one."""

    def __init__(self) -> None:
        self.client: aiosmtplib.SMTP | None = None

    async def reset(self) -> None:
        """After a refused message the connection stays usable: RSET clears the transaction."""
        if self.client is not None:
            try:
                await self.client.rset()
            except Exception:
                self.drop()

    def drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
