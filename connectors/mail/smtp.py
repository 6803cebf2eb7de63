"""Sending over SMTP with aiosmtplib: plain, STARTTLS or implicit TLS, optional login, reused connections.

Errors are typed for the retry ladder by the stage they come at (connectors.mail.refusals): a refused
login, greeting or sender is the hub's own settings (TransientError: the mails wait while they are put
right), a 5xx on RCPT refuses the address and one on DATA the message (PermanentError: the DLQ), 4xx
replies and connection trouble are TransientError.

One case is neither: the message was transmitted (after the server's 354) and then no answer came
(a read timeout, a lost connection). The server may have accepted it, and sending it again may
deliver it twice, as often as it is retried. That is `OutcomeUnknown`, a PermanentError: the mail
goes to the dead-letter queue, not to a retry, and an operator who replays it sends it again.

A send that ends otherwise than by an answer (cancelled: the hub stopping, a lease cut off) leaves
its connection out of step (a reply may still come): it is closed, never used for the next mail.
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
from connectors.mail.refusals import (
    UNKNOWN_OUTCOME,
    ContentRefused,
    OutcomeUnknown,
    SettingsRefused,
    classify,
)
from hub.config import SmtpSettings
from hub.errors import HubError, TransientError
from hub.logging import get_logger

__all__ = [
    "UNKNOWN_OUTCOME",
    "ContentRefused",
    "OutcomeUnknown",
    "SettingsRefused",
    "SmtpMailer",
    "classify",
]
log = get_logger(__name__)
Endpoint = Callable[[], Awaitable[tuple[str, int]]]


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client, saying whether the message itself was transmitted (`transmitted`).

    `sendmail` (MAIL, RCPT, DATA, the SIZE option, RSET after a refusal) stays aiosmtplib's; only the
    DATA command is done here in its two steps, as aiosmtplib does them: DATA and the server's 354,
    then the message and the server's answer.
    """

    transmitted = False
    answer_timeout: float | None = None  # the wait for the answer to the message itself (None: `timeout`)

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109 (aiosmtplib's signature)
    ) -> SMTPResponse:
        """Send DATA, then the message; `transmitted` is True from the moment the message is sent. The
        answer to the message gets `answer_timeout` (a relay may scan it before it answers)."""
        self.transmitted = False
        wait = self.timeout if timeout is Default.token else timeout
        answer_wait = wait if self.answer_timeout is None else max(self.answer_timeout, wait or 0)
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
            response = await self.protocol.read_response(timeout=answer_wait)
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
        self._refusal: str | None = None  # the settings refusal logged last, till a mail goes out

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
        client.answer_timeout = s.answer_timeout_s
        await client.connect()  # logs in too when a username is set
        self.connections += 1
        return client

    async def send(self, msg: OutgoingMail) -> None:
        """Send one message; raises TransientError or PermanentError."""
        slot = await self._slots.get()
        try:
            await self._send_on(slot, msg)
        except HubError:  # an answer: `_send_on` kept or closed the connection, as the answer said
            raise
        except BaseException:
            # Anything else, a cancellation above all, may have cut the exchange short (after DATA,
            # say): the server's late reply would be read as the next mail's. Never reused.
            slot.drop()
            raise
        finally:
            self._slots.put_nowait(slot)

    async def _connected(self, slot: _Slot) -> _Client:
        """The slot's connection, opened (and logged in) when it has none; a failure as `classify` says,
        a refusal of the hub's settings logged once until a mail goes out again."""
        if slot.client is not None and slot.client.is_connected:
            return slot.client
        slot.drop()
        try:
            slot.client = await self._new_client()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._noted(classify(exc, connecting=True)) from None
        return slot.client

    def _noted(self, error: Exception) -> Exception:
        """`error`, logged first when it refuses the hub's settings (once for as long as it lasts)."""
        if isinstance(error, SettingsRefused) and str(error) != self._refusal:
            self._refusal = str(error)
            log.error("the SMTP server refuses the hub's SMTP settings; mails wait", error=str(error))
        return error

    async def _send_on(self, slot: _Slot, msg: OutgoingMail) -> None:
        for attempt in (1, 2):
            client = await self._connected(slot)
            try:
                client.transmitted = False
                await client.sendmail(msg.sender, msg.recipients, msg.data)
                self.sent += 1
                self._refusal = None
                return
            except (aiosmtplib.SMTPException, OSError) as exc:
                if client.transmitted and not isinstance(exc, aiosmtplib.SMTPResponseException):
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
                error = self._noted(classify(exc))
                if isinstance(exc, OSError) or isinstance(error, TransientError):
                    slot.drop()  # e.g. 421: the server is closing the channel; or its settings refused
                else:
                    await slot.reset()
                raise error from None

    async def ping(self) -> None:
        """Raise when the SMTP server does not answer, or refuses the hub's settings (readiness): as
        `classify` says, naming the settings to check rather than the client's error class."""
        try:
            client = await self._new_client()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise classify(exc, connecting=True) from None
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
