"""structlog set-up: message and transaction ids bound per message, BSNs redacted always."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from schemas.bsn import is_valid_bsn

# Nine digits standing alone (or eight, which rule 1 left-pads): anything that could be a BSN. A
# UUID (the hub's ids: handovers, messages, transactions) is matched first and kept: about one in
# forty begins with eight digits, which stood alone before its first dash, and the id was lost from
# the log line or the dead letter that named it.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# A BSN as people write it: nine digits in groups split by single spaces or dots ("999 99 0044",
# "999.990.044"). Only a run of exactly nine: one that goes on past a separator (a phone number such
# as "+31 6 1234 5678", an address such as "192.168.100.200") is not one.
# Single spaces are any whitespace: a no-break space (as a word processor puts between groups), a tab.
_SPACED = r"(?<![0-9A-Za-z])(?<![0-9][\s.])[0-9](?:[\s.]?[0-9]){8}(?![0-9A-Za-z])(?![\s.][0-9])"
_BSN_LIKE = re.compile(
    rf"(?<![0-9A-Za-z])(?P<uuid>{_UUID})(?![0-9A-Za-z])|(?<![0-9A-Za-z])[0-9]{{8,9}}(?![0-9A-Za-z])"
    rf"|{_SPACED}"
)
# A run of digit groups that goes on past nine digits may still hold a BSN in groups: "999 99 0044 2
# meldingen" is a BSN and a count, "PV2025 999 99 0044" an id and a BSN. Groups in a row of such a
# run, each of two digits or more, with nine digits in all that pass the elfproef are taken for one;
# a run after "+" or from "00" and a country code is a phone number, kept whole. Otherwise about one
# window in eleven passes by chance, and is redacted too: a log line can spare it, not a BSN.
# A run does not begin right after a "-": inside a UUID (whose groups it keeps) or any other id.
_GROUPED_RUN = re.compile(r"(?<![0-9A-Za-z-])[0-9]+(?:[\s.][0-9]+)+(?![0-9A-Za-z])")
_SEPARATOR = re.compile(r"([\s.])")
_INTERNATIONAL = re.compile(r"00[1-9][0-9]{0,2}")  # "0031", "0032": how a phone number may begin
REDACTED = "[bsn-redacted]"
# Nine digits glued to letters ("bsn111222333", "111222333abc") or in groups split by dashes
# ("111-222-333"): taken for a BSN when they pass the elfproef, as the operator console's masking
# does. Not inside a hub id, where nine digits pass by chance one time in eleven: a UUID, or a token
# of 16 or more lowercase hex characters with a letter in it (a replay job's id, a span or trace id,
# a youth key, a hash). A token is matched whole and looked into once, by set and regex passes that
# are linear: the text is read in linear time, however long a run is.
_TOKEN = re.compile(r"[0-9A-Za-z]+")
# A run of digit groups split by any run of separators, as people type a BSN: blanks, dots, commas,
# slashes, underscores, dashes (the hyphen-minus, U+2010-U+2015, the minus sign), mixed and doubled
# ("1112 22-333", "111 - 222 - 333", "111--222--333", "2025-01-01 111-222-333"). Groups in a row
# of it, each of two digits or more, with nine digits in all that pass the elfproef are taken for a
# BSN (`_redact_run`). The pattern has no lookaround that could fail partway: each run is taken
# whole, once, and judged in Python, so the text is read in linear time.
DIGIT_SEPARATORS = "\\s.,/_\\-\u2010-\u2015\u2212"  # a regex character class's contents
_RUN = re.compile(f"[0-9]+(?:[{DIGIT_SEPARATORS}]+[0-9]+)*")
_RUN_SPLIT = re.compile(f"([{DIGIT_SEPARATORS}]+)")
_NINE = re.compile(r"(?<![0-9])[0-9]{9}(?![0-9])")
_HEX = frozenset("0123456789abcdef")
HEX_ID_MIN = 16  # the shortest hex id the hub hands out (a replay job's)
_UUID_ALONE = re.compile(rf"(?<![0-9A-Za-z]){_UUID}(?![0-9A-Za-z])")


def _redact_groups(match: re.Match[str]) -> str:
    """The groups of a run with nine digits in all that pass the elfproef, each redacted."""
    parts = _SEPARATOR.split(match.group())  # groups at even places, their separators between
    groups = parts[::2]
    if match.string[match.start() - 1 : match.start()] == "+" or _INTERNATIONAL.fullmatch(groups[0]):
        return match.group()  # a phone number with its country code
    return _joined(parts, _bsn_groups(groups, 0, len(groups), alone=True)) or match.group()


def _bsn_groups(groups: list[str], first_free: int, last_free: int, *, alone: bool) -> list[bool]:
    """Which of `groups[first_free:last_free]` make a BSN: consecutive groups of two digits or more
    with nine digits in all that pass the elfproef (one group alone too, when `alone`)."""
    redacted = [False] * len(groups)
    for first in range(first_free, last_free):
        digits = ""
        for last in range(first, last_free):
            if len(groups[last]) < 2:
                break
            digits += groups[last]
            if len(digits) >= 9:
                if len(digits) == 9 and (alone or last > first) and is_valid_bsn(digits):
                    redacted[first : last + 1] = [True] * (last + 1 - first)
                break
    return redacted


def _joined(parts: list[str], redacted: list[bool]) -> str | None:
    """The groups and separators of `parts` again, the groups `redacted` made one REDACTED each
    run of them; None when none is."""
    if not any(redacted):
        return None
    groups, out = parts[::2], []
    for i, group in enumerate(groups):
        if i and not (redacted[i] and redacted[i - 1]):
            out.append(parts[2 * i - 1])
        if not redacted[i]:
            out.append(group)
        elif i == 0 or not redacted[i - 1]:
            out.append(REDACTED)
    return "".join(out)


def _redact_glued(match: re.Match[str]) -> str:
    token = match.group()
    if len(token) < 10 or token.isdigit() or token.isalpha():
        return token  # nine digits alone were judged before
    if len(token) >= HEX_ID_MIN and set(token) <= _HEX:
        return token  # a hex id (not digits alone: the test above), kept whole
    return _NINE.sub(lambda m: REDACTED if is_valid_bsn(m.group()) else m.group(), token)


def _redact_run(match: re.Match[str]) -> str:
    """The groups of a run (`_RUN`) that make a BSN, each redacted. A group glued to letters at
    either end belongs to a token (`_redact_glued` judged it); a run after "+" or from "00" and a
    country code is a phone number."""
    parts = _RUN_SPLIT.split(match.group())  # groups at even places, their separators between
    groups = parts[::2]
    if len(groups) < 2:
        return match.group()  # nine digits alone were judged before
    text, start, end = match.string, match.start(), match.end()
    if text[start - 1 : start] == "+" or _INTERNATIONAL.fullmatch(groups[0]):
        return match.group()
    first_free = 1 if text[start - 1 : start].isalnum() else 0
    last_free = len(groups) - 1 if text[end : end + 1].isalnum() else len(groups)
    return _joined(parts, _bsn_groups(groups, first_free, last_free, alone=False)) or match.group()


def holds_bsn_in_groups(text: str) -> bool:
    """Whether `text` holds a BSN written in groups, as `redact_text` finds one (`_redact_run`); a
    UUID's groups are an id's."""
    return any(_redact_run(m) != m.group() for m in _RUN.finditer(_UUID_ALONE.sub(" ", text)))


def redact_text(text: str) -> str:
    """Replace anything that looks like a BSN in a string (a UUID is no BSN)."""
    text = _BSN_LIKE.sub(lambda m: m.group("uuid") or REDACTED, text)
    text = _GROUPED_RUN.sub(_redact_groups, text)
    if not any(c.isdigit() for c in text):
        return text
    out, at = [], 0
    for uuid_ in _UUID_ALONE.finditer(text):  # kept whole, as above
        out += [_redact_glued_and_dashed(text[at : uuid_.start()]), uuid_.group()]
        at = uuid_.end()
    out.append(_redact_glued_and_dashed(text[at:]))
    return "".join(out)


def _redact_glued_and_dashed(text: str) -> str:
    return _RUN.sub(_redact_run, _TOKEN.sub(_redact_glued, text))


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return REDACTED if 10_000_000 <= value <= 999_999_999 else value
    if isinstance(value, dict):  # a key may be a BSN too (counts by youth)
        return {_redact(k): _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(_redact(v) for v in value)
    # anything else (an exception, bytes, a model): as the renderers would show it, redacted
    return redact_text(repr(value))


def redact_bsn(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no BSN leaves through a log line, whatever a caller passed."""
    return {k: _redact(v) for k, v in event_dict.items()}


class _RedactingFilter(logging.Filter):
    """The same for third-party libraries that log through the standard library."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        # A traceback quotes the exception's message, and Starlette re-raises what a request did not
        # handle for the server to log: its text is redacted as the message is.
        if record.exc_info:
            record.exc_text = redact_text(_FORMATTER.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


def setup_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Configure structlog and the standard library once, at start-up (never at import)."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # a traceback as text, then redacted with the rest
        redact_bsn,
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn, set up by anyone with its own logging config, gives its loggers handlers of their own
    # that do not propagate: the server's lines (a request's unhandled exception, with its text)
    # would pass by the redacting handler. They go through the root's.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server = logging.getLogger(name)
        server.handlers[:] = []
        server.propagate = True
    # Per-request lines of the match-feed poll (httpx) and the SMTP sink's readiness pings (mail.log).
    # The SQLite driver logs every statement with its values at DEBUG (names, birth dates), and
    # SQLAlchemy's engine the rows it read, httpcore a receiver's response headers: the redacting
    # filter knows BSNs, not names.
    noisy_ones = (
        "aiokafka",
        "faststream",
        "uvicorn.access",
        "httpx",
        "httpcore",
        "mail.log",
        "aiosqlite",
        "sqlalchemy",
    )
    for noisy in noisy_ones:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str) -> Any:
    """A structlog logger for a module."""
    return structlog.get_logger(name)
