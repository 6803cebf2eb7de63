"""Sending over SMTP with aiosmtplib: plain, STARTTLS or implicit TLS, optional login, reused connections.

Errors are typed for the retry ladder: SMTP 4xx replies and connection trouble are TransientError,
5xx replies are PermanentError (dead letter at once).

One case is neither: the message was transmitted (after the server's 354) and then no answer came
(a read timeout, a lost connection). The server may have accepted it, and sending it again may
deliver it twice, as often as it is retried. That is `OutcomeUnknown`, a PermanentError: the mail
goes to the dead-letter queue, not to a retry, and an operator who replays it sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Literal

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.response import SMTPResponse
from aiosmtplib.status import SMTPStatus
from aiosmtplib.typing import Default

from connectors.mail.message import OutgoingMail
from hub.config import SmtpSettings
from hub.errors import PermanentError, TransientError
from hub.logging import get_logger

log = get_logger(__name__)
Endpoint = Callable[[], Awaitable[tuple[str, int]]]
UNKNOWN_OUTCOME = (
    "the SMTP server did not answer after the message was sent; it may have been delivered, so it is "
    "not sent again automatically; replay this dead letter to send it again"
)


class OutcomeUnknown(PermanentError):
    """The message went out and no answer came: it may have been delivered. Not retried (the DLQ)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{UNKNOWN_OUTCOME} ({type(cause).__name__})")


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


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client, saying whether the message itself was transmitted (`transmitted`).

    `sendmail` (MAIL, RCPT, DATA, the SIZE option, RSET after a refusal) stays aiosmtplib's; only the
    DATA command is done here in its two steps, as aiosmtplib does them: DATA and the server's 354,
    then the message and the server's answer.
    """

    transmitted = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109 (aiosmtplib's signature)
    ) -> SMTPResponse:
        """Send DATA, then the message; `transmitted` is True from the moment the message is sent."""
        self.transmitted = False
        wait = self.timeout if timeout is Default.token else timeout
        data = message.encode("ascii") if isinstance(message, str) else message
        start = await self.execute_command(b"DATA", timeout=wait)  # closes the connection on failure
        if start.code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        if self.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        payload = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
        try:
            self.protocol.write(payload)
            self.transmitted = True
            response = await self.protocol.read_response(timeout=wait)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()  # as aiosmtplib does: a late answer must not be taken for the next command's
            raise
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response


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

    async def _new_client(self) -> _Client:
        s = self.settings
        host, port = await self._where()
        client = _Client(
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
            client: _Client | None = None
            try:
                if slot.client is None or not slot.client.is_connected:
                    slot.client = await self._new_client()
                client = slot.client
                client.transmitted = False
                await client.sendmail(msg.sender, msg.recipients, msg.data)
                self.sent += 1
                return
            except (aiosmtplib.SMTPException, OSError) as exc:
                if (
                    client is not None
                    and client.transmitted
                    and not isinstance(exc, aiosmtplib.SMTPResponseException)
                ):
                    # The message went out and no answer came: it may have been delivered. Neither
                    # this loop nor the retry ladder may send it again.
                    slot.drop()
                    log.warning("no answer after the message was sent", error=type(exc).__name__)
                    raise OutcomeUnknown(exc) from None
                if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                    # An idle connection the server closed: one fresh connection, then give up.
                    slot.drop()
                    if attempt == 2:
                        raise classify(exc) from None
                    continue
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
        self.client: _Client | None = None

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
