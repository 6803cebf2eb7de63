"""What an operator sees of a dead letter: its key, headers and payload, masked unless allowed.

Masked, a payload keeps its structure (field names, lists, which fields are present, null and
true/false); a value is shown only under a field known to hold no personal data (ids, codes, offence
and process dates, counts, amounts) and only when it looks like such a value. Everything else is
replaced, free text by its length, and everything under a personal field whatever it nests. A field
name, and a sender's header name, is shown only when key-shaped (`schemas.problems.key_shaped`): a
malformed record may use a BSN or a name as a key, which is replaced by a numbered mask.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from hub.logging import DIGIT_SEPARATORS, holds_bsn_in_groups
from hub.spine.dlq import DLQ_EXC_MESSAGE, DLQ_FIRST_FAILURE, DLQ_HEADERS, DLQ_LAST_FAILURE
from schemas.bsn import is_valid_bsn
from schemas.envelope import (
    H_CORRELATION_ID,
    H_MESSAGE_ID,
    H_MESSAGE_TYPE,
    H_SOURCE,
    H_TRANSACTION_ID,
    ID_MAX,
)
from schemas.problems import masked_key
from schemas.pseudonym import is_youth_key as is_youth_key  # re-exported: the console reads it here

MASK = "•••"

# Keys (lower case, only letters and digits: "E-mail ouder/verzorger" is "emailouderverzorger") whose
# values are personal data, with everything nested under them: a person's name, birth date, address,
# phone, e-mail, BSN, gender, place or position, and a parent or guardian as a whole.
_PERSONAL_PARTS = re.compile(
    r"bsn|burgerservice|naam|name|initial|geboorte|birth|email|telefoon|phone|mobiel|mobile|gsm|"
    r"adres|address|straat|street|postcode|zip|huis|woonplaats|plaats|place|city|gemeente|municipality|"
    r"locatie|location|gps|coord|geslacht|gender|leeftijd|nationalit|persoon|person|"
    r"vertegenwoordiger|guardian|voogd|verzorger"
)
# Keys personal only as the whole key: "lat" is in "relatie", "ouder" in "oudersAkkoord" (a yes or
# no) and "parent" in "parentsInformedAt" (a date); a youth's or a parent's record as a whole.
_PERSONAL_KEYS = {
    *("lat", "lon", "lng", "latitude", "longitude", "dob", "tel"),
    *("ouder", "ouders", "oudercontact", "parent", "parents"),
    *("verdachte", "betrokkene", "jongere", "jeugdige", "youth", "kind", "child"),
}
# Keys whose values are no personal data, in the partner formats and the hub's own messages: ids,
# references and codes, counts and amounts (shown when they look like one) ...
_CODES = {
    *("messageid", "transactionid", "correlationid", "type", "version", "source"),
    *("procesverbaalnummer", "bonnummer", "aanmeldnummer", "dossiernummer", "parketnummer"),
    *("casereference", "referralid", "signalid", "signaalid", "matchid", "handoverid", "consentid"),
    *("notificationid", "caseworkerid", "recipientcaseworkerid", "notifiedcaseworker", "fromcaseworker"),
    *("delegateid", "recordedby", "organisatiecode", "receiverorganisation", "recipientorganisations"),
    *("appversie", "rulesversion", "feitcode", "wetsartikel", "article", "projectcode", "boaproject"),
    *("categorie", "soort", "track", "reason", "reasoncategory", "outcome", "status", "purpose"),
    *("permission", "method", "role", "template", "team", "receivertype", "datacategories", "code"),
    *("field", "bedragjeugdige", "bedragtotaal", "schadebedrag", "youthshare", "casetotal"),
    *("urenverzuim", "hours", "aantalkeertelaat", "keertelaat", "timeslate", "eerderehaltverwijzingen"),
    *("eerderehalt", "priorhaltreferrals"),
}
# ... and the dates and times of an offence or of handling it (a birth date is a personal key).
_MOMENTS = {
    *("occurredat", "pleegdatum", "committedon", "tijdstip", "datum", "verzuimvanaf", "verzuimtotenmet"),
    *("periodstart", "periodend", "oudersgeinformeerdop", "parentsinformedat", "aangemaakt", "created"),
    *("einddatum", "enddate", "validfrom", "validuntil", "givenat", "notifiedat", "plannedat"),
    *("parentlettersentat", "youthinformedat", "beeindigdop", "ontstaanop"),
}
# Codes written with spaces ("art. 2.1 APV", "art. 310 Sr"); any other code, id or reference has none.
_SPACED_CODES = {"wetsartikel", "article"}
_NOT_KEY_CHARACTERS = re.compile(r"[^0-9a-z]")
# An id, reference or code is short; longer, or with spaces, it is text ("Sanne Jansen (14) woont ...").
_CODE_MAX = 64
_SPACED_CODE_MAX = 24
_HEADER_MAX = ID_MAX  # the hub takes message and transaction ids in headers up to this length
_MESSAGE_MAX = 500  # the length hub.spine.dlq cuts an error message to
_WHITESPACE = re.compile(r"\s")
# A date (yyyy-mm-dd, or d-m-yyyy with "-", "/" or "."), with a time (hh:mm, seconds, their fraction)
# and a time zone (Z or an offset) if it has one: digits and separators alone may be a BSN or a phone
# number ("252.760.189", "06 1234 5678").
_MOMENT = re.compile(
    r"(?:(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0?[1-9]|[12][0-9]|3[01])([-/.])(?:0?[1-9]|1[0-2])\1(?:19|20)[0-9]{2})"
    r"(?:[T ](?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?)?"
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
# A number of 8 or 9 digits standing on its own may be a BSN; the digits of a reference are part of it
# ("DH-2025-00493377", a BOA ticket number).
_BSN_LIKE = re.compile(r"(?<![\w-])\d{8,9}(?![\w-])")
# Separators between digits, taken out to find a number written in groups ("252-760-189", "06 1234 5678",
# "252–760–189" with en dashes): the same ones the log redaction takes (`hub.logging.DIGIT_SEPARATORS`).
# A reference's digits run longer ("PL1500-2025031201-1" has 15).
BETWEEN_DIGITS = re.compile(f"(?<=[0-9])[{DIGIT_SEPARATORS}]+(?=[0-9])")
_DIGITS = re.compile(r"\d+")
# e-mail; starting only where a run of name characters starts: tried at every position of a long run,
# the search took quadratic time (a 40 KB run of letters held the event loop 4 s)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"(\+31|0031|\b0)[\s-]?\d(?:[\s-]?\d){7,9}\b")  # Dutch phone numbers

# The headers the hub itself writes on a record and its dead letter (hub.ops.dlq.REPLAYED_FROM too,
# named here since that module imports this one). A sender's own headers may hold personal data.
HUB_HEADERS = frozenset(
    {
        H_MESSAGE_ID,
        H_MESSAGE_TYPE,
        H_TRANSACTION_ID,
        H_CORRELATION_ID,
        H_SOURCE,
        *DLQ_HEADERS,
        "dlq-replayed-from",
    }
)


def _field(key: str) -> str:
    return _NOT_KEY_CHARACTERS.sub("", key.lower())


def _personal(field: str) -> bool:
    return field in _PERSONAL_KEYS or _PERSONAL_PARTS.search(field) is not None


def show_key(key: str | None, *, unmasked: bool) -> str | None:
    """A record key for an operator: a youth key as it is; any other masked unless allowed."""
    return key if key is None or unmasked or is_youth_key(key) else MASK


def show_headers(headers: Mapping[str, str], *, unmasked: bool) -> dict[str, str]:
    """A dead letter's headers for an operator: the hub's own shown when they look as the hub writes
    them, a sender's own masked unless allowed; their names stay when key-shaped (which headers a record
    came with), else each is a numbered mask ("x-bsn-252760189")."""
    if unmasked:
        return dict(headers)
    masks: dict[str, str] = {}
    return {
        name if name in HUB_HEADERS else masked_key(name, masks): value if _hub_value(name, value) else MASK
        for name, value in headers.items()
    }


def _hub_value(name: str, value: str) -> bool:
    """True when `value` may be shown under header `name`: one the hub writes, and shaped as the hub
    writes it. A sender sets the same names on its record, with whatever it likes in them."""
    if name not in HUB_HEADERS:
        return False
    if name == DLQ_EXC_MESSAGE:  # the hub's own words, with spaces
        return _code(value, longest=_MESSAGE_MAX, spaces=True)
    if name in (DLQ_FIRST_FAILURE, DLQ_LAST_FAILURE):
        return _MOMENT.fullmatch(value) is not None
    if _UUID.fullmatch(value):  # the hub's own ids: one in 40 starts with 8 digits, which read as a BSN
        return True
    return _code(value, longest=_HEADER_MAX)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _holds_bsn(text: str) -> bool:
    """True when `text` may hold a BSN: a number of 8 or 9 digits on its own, a run of 8 or 9 digits
    (the separators between them taken out) that passes the elfproef, whatever stands against it
    ("BSN252760189", "252760189x", "252 760 189"), or one in groups in a longer run of them, as the
    log redaction finds it ("2025-01-01/111-222-333")."""
    if _BSN_LIKE.search(text) or holds_bsn_in_groups(text):
        return True
    runs = _DIGITS.findall(BETWEEN_DIGITS.sub("", text))
    return any(len(run) in (8, 9) and is_valid_bsn(str(int(run)).zfill(len(run))) for run in runs)


def _code(text: str, *, longest: int = _CODE_MAX, spaces: bool = False) -> bool:
    """True when `text` looks like an id, reference or code: printable, at most `longest` characters,
    no whitespace unless `spaces`, and no BSN, e-mail address or phone number in it."""
    if len(text) > longest or not text.isprintable() or (not spaces and _WHITESPACE.search(text)):
        return False
    if _holds_bsn(text) or _EMAIL.search(text):
        return False
    return not (_PHONE.search(text) or _PHONE.search(BETWEEN_DIGITS.sub("", text)))


def _plain(field: str, value: str | int | float) -> bool:
    """True when `value` may be shown under `field`: a field holding no personal data, and a value
    shaped as such a field's (an 8 or 9 digit number may be a BSN wherever it is)."""
    if field not in _CODES and field not in _MOMENTS:
        return False
    text = value if isinstance(value, str) else str(abs(value))
    if _UUID.fullmatch(text):  # a message or transaction id, whatever digits it starts with
        return True
    if field in _MOMENTS:
        return isinstance(value, str) and _MOMENT.fullmatch(value) is not None
    if field in _SPACED_CODES:
        return _code(text, longest=_SPACED_CODE_MAX, spaces=True)
    return _code(text)


def mask_value(
    value: Any, *, key: str = "", personal: bool = False, masks: dict[str, str] | None = None
) -> Any:
    """A JSON value with everything that may be personal data masked, its structure kept: a key that is
    not key-shaped is shown as its numbered mask (`masks`, one numbering for the whole value)."""
    field = _field(key)
    personal = personal or _personal(field)
    masks = {} if masks is None else masks
    if isinstance(value, dict):
        return {
            masked_key(str(k), masks): mask_value(v, key=str(k), personal=personal, masks=masks)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_value(v, key=key, personal=personal, masks=masks) for v in value]
    if value is None or value == "" or isinstance(value, bool):
        return value
    if personal:
        return MASK
    if _plain(field, value):
        return value
    return f"{MASK} (text, {len(value)} characters)" if isinstance(value, str) else f"{MASK} (number)"


MAX_DEPTH = 200  # the answer nests the payload a level or two deeper; its encoder stops at 255


def show_payload(raw: bytes, *, unmasked: bool) -> Any:
    """The payload for an operator: parsed JSON, masked unless allowed; else its text, unmasked, or
    masked as a whole: why it is not JSON and its size.

    JSON nested deeper than `MAX_DEPTH` is not shown as JSON: masking walks it as deep as it is
    nested, and the answer's encoder refuses it (both were a 500).
    """
    try:
        value = json.loads(raw)
        if _depth(value) <= MAX_DEPTH:
            return value if unmasked else mask_value(value)
        why = f"JSON nested deeper than {MAX_DEPTH} levels"
    except UnicodeDecodeError as exc:
        why = f"not JSON: not UTF-8 at byte {exc.start}"
    except json.JSONDecodeError as exc:  # its message is the decoder's own, never a part of the text
        why = f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
    except ValueError:
        why = "JSON with a number of too many digits to read"
    except RecursionError:
        why = "JSON nested too deep to read"
    if unmasked:
        return raw.decode("utf-8", "replace")
    return f"{MASK} ({why}; {len(raw)} bytes)"


def _depth(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value, counted without recursion."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level + 1)
            todo.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
