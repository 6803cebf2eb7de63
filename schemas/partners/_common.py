"""Lenient field types and parse helpers shared by the partner formats."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import jiter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from schemas._base import EMAIL_PATTERN, NO_CONTROL, ONE_LINE, as_code
from schemas.problems import FieldProblem, PartnerFormatError, field_path, problem_at, problems_from
from schemas.referral import Gender

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=BaseModel)

DATE_ALLOWED = "dd-mm-jjjj of jjjj-mm-dd"
_DMY = re.compile(r"^([0-9]{1,2})[-/.]([0-9]{1,2})[-/.]([0-9]{4})$")
_YMD = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
_DMY_TIME = re.compile(r"^([0-9]{1,2})-([0-9]{1,2})-([0-9]{4})[ T]([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?$")
_DUTCH_TIME = ZoneInfo("Europe/Amsterdam")  # hub.clock.LOCAL; schemas import nothing of the hub


class PartnerModel(BaseModel):
    """Base of partner formats: camelCase names as the partner sends them, unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, alias_generator=to_camel, str_strip_whitespace=True
    )


def _date_error(kind: str, text: str) -> PydanticCustomError:
    return PydanticCustomError(kind, text, {"allowed": DATE_ALLOWED})


def dutch_day(moment: datetime) -> date:
    """The Dutch calendar day of a moment (hub.clock.local_day, which schemas do not import)."""
    return _dutch_day(moment)


def _dutch_day(moment: datetime) -> date:
    # A moment without an offset is Dutch local time already. OverflowError: a moment whose Dutch
    # day lies outside the calendar (year 1 to 9999).
    return moment.astimezone(_DUTCH_TIME).date() if moment.tzinfo else moment.date()


def _to_date(value: object) -> object:
    if isinstance(value, datetime):
        try:
            return _dutch_day(value)
        except OverflowError:
            raise _date_error("datum_bestaat_niet", "deze datum bestaat niet") from None
    if isinstance(value, date):
        return value
    if not isinstance(value, str):  # a number would otherwise be read as seconds since 1970
        raise _date_error("datum_vorm", "een datum moet als tekst worden aangeleverd")
    text = value.strip()
    if m := _DMY.match(text):
        day, month, year = (int(g) for g in m.groups())
    elif m := _YMD.match(text):
        year, month, day = (int(g) for g in m.groups())
    else:
        raise _date_error("datum_vorm", "geen datum in een bekende vorm")
    try:
        return date(year, month, day)
    except ValueError:
        raise _date_error("datum_bestaat_niet", "deze datum bestaat niet") from None


_DATETIME_ALLOWED = "jjjj-mm-ddTuu:mm:ss+01:00 of dd-mm-jjjj uu:mm"


def _to_datetime(value: object) -> object:
    if isinstance(value, datetime):
        return _with_dutch_day(value)
    if not isinstance(value, str):  # a number would otherwise be read as seconds since 1970
        raise PydanticCustomError(
            "tijdstip_vorm", "een tijdstip moet als tekst worden aangeleverd", {"allowed": _DATETIME_ALLOWED}
        )
    text = value.strip()
    if m := _DMY_TIME.match(text):
        day, month, year, hour, minute = (int(g) for g in m.groups()[:5])
        second = int(m.group(6) or 0)
        try:
            return datetime(year, month, day, hour, minute, second)  # partner local time, as sent
        except ValueError:
            raise _date_error("datum_bestaat_niet", "dit tijdstip bestaat niet") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PydanticCustomError(
            "tijdstip_vorm",
            "geen tijdstip in een bekende vorm",
            {"allowed": _DATETIME_ALLOWED},
        ) from None
    return _with_dutch_day(moment)


def _with_dutch_day(moment: datetime) -> datetime:
    # Rules count on the Dutch day of a moment: one sent with an offset must have such a day.
    try:
        _dutch_day(moment)
    except OverflowError:
        raise _date_error("datum_bestaat_niet", "dit tijdstip valt buiten de kalender") from None
    return moment


_TRUE = {"ja", "j", "true", "waar", "1", "yes", "y"}
_FALSE = {"nee", "n", "false", "onwaar", "0", "no"}


def _to_bool(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise PydanticCustomError("janee", "moet ja of nee zijn", {"allowed": "ja, nee, true, false"})


_THOUSANDS_DOT = re.compile(r"^[0-9]{1,3}(\.[0-9]{3})+$")


# What is left of a text amount once the euro sign, blanks and thousands dots are gone.
_PLAIN_AMOUNT = re.compile(r"\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)")  # '12', '12.5', '12.', '.50', '+5'
_CENT = Decimal("0.01")
_MAX_AMOUNT = Decimal("9999999999.99")
_AMOUNT_ALLOWED = "bedrag van 0 tot 10 miljard met hoogstens 2 decimalen, bv. 125,50 of 9.000 (negenduizend)"


def _to_amount(value: object) -> object:
    error = PydanticCustomError(
        "bedrag",
        "geen geldig bedrag in euro's",
        {"allowed": _AMOUNT_ALLOWED},
    )
    if isinstance(value, bool):
        raise error
    if isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip().removeprefix("€").replace("EUR", "").strip().replace(" ", "")
        if "," in text:
            text = text.replace(".", "").replace(",", ".")
        elif _THOUSANDS_DOT.match(text):
            text = text.replace(".", "")
    else:
        return value
    if isinstance(value, str) and not _PLAIN_AMOUNT.fullmatch(text):
        raise error  # Decimal() would also read '1_000', '1e3' and digits of other scripts
    if isinstance(value, str) and len(text.partition(".")[2]) > 2:
        # the decimals as written, not as valued: '9,000' (nine thousand, written the English way)
        # is no €9.00, and '1.5000' no €1.50; only a dot between groups of three is a thousands one
        raise error
    try:
        amount = Decimal(text)
        # quantize raises InvalidOperation past 28 digits ("1e30"): that is no amount either
        cents = amount.quantize(_CENT) if amount.is_finite() else None
    except InvalidOperation:
        raise error from None
    # not finite, negative, over two decimals, or past what the canonical Euro holds (10 whole digits)
    if cents is None or amount < 0 or cents != amount or cents > _MAX_AMOUNT:
        raise error
    return cents


def _not_a_bool(value: object) -> object:
    # JSON true/false would otherwise count as 1/0: a typing mistake, not a number
    if isinstance(value, bool):
        raise PydanticCustomError("getal_type", "moet een getal zijn, geen ja/nee")
    return value


# Text the number parsers would read too leniently: int() and float() take '1_0' as 10, float()
# also '1e1', and both digits of other scripts. Here a number is written in ASCII digits, with a
# sign and a decimal point as partners write them ('+16', '16.0', '-.5'); blanks around may stay.
_DIGITS = re.compile(r"\+?[0-9]+(\.0*)?")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")


def _to_count(value: object) -> object:
    value = _not_a_bool(value)
    if isinstance(value, str) and not _DIGITS.fullmatch(value.strip()):
        raise PydanticCustomError(
            "geheel_getal", "moet een geheel getal zijn, alleen cijfers", {"allowed": "cijfers, bv. 12"}
        )
    return value.strip() if isinstance(value, str) else value


def _to_number(value: object) -> object:
    value = _not_a_bool(value)
    if isinstance(value, str) and not _DECIMAL.fullmatch(value.strip()):
        raise PydanticCustomError(
            "getal", "moet een getal zijn, met een punt als decimaalteken", {"allowed": "bv. 52.0705"}
        )
    return value.strip() if isinstance(value, str) else value


def _empty_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


# The JSON schemas (served in the OpenAPI document) say what the lenient parsing takes, no less: a
# request the document calls invalid is refused, so a fuzzer's invalid data is invalid here too.
PartnerDate = Annotated[
    date,
    BeforeValidator(_to_date),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*([0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{4}|[0-9]{4}-[0-9]{2}-[0-9]{2})\s*$",
            "description": DATE_ALLOWED,
        }
    ),
]
PartnerDateTime = Annotated[
    datetime,
    BeforeValidator(_to_datetime),
    WithJsonSchema({"type": "string", "description": "jjjj-mm-ddTuu:mm:ss+01:00 of dd-mm-jjjj uu:mm"}),
]
PartnerBool = Annotated[
    bool,
    BeforeValidator(_to_bool),
    WithJsonSchema(
        {
            "anyOf": [{"type": "boolean"}, {"enum": [0, 1]}, {"type": "string"}],
            "description": "true/false, 1/0 of " + ", ".join(sorted(_TRUE | _FALSE)),
        }
    ),
]
PartnerAmount = Annotated[
    Decimal,
    BeforeValidator(_to_amount),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
            "description": 'euro\'s, bv. 125.5 of "1.250,50"',
        }
    ),
]
PartnerCount = Annotated[
    int, BeforeValidator(_to_count), WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]})
]
PartnerFloat = Annotated[
    float, BeforeValidator(_to_number), WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}]})
]
# A name or another one-line value, as the canonical Name (one line: schemas._base.ONE_LINE).
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=ONE_LINE)
]
# An identifier the canonical models keep as a Code (at most 100 characters): refused here, on the
# partner's own field, rather than as a misfit in translation.
Code = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=ONE_LINE)
]
OptCode = Annotated[Code | None, BeforeValidator(_empty_to_none)]
LongText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000, pattern=NO_CONTROL)
]
OptText = Annotated[Text | None, BeforeValidator(_empty_to_none)]


def _on_one_line(value: object) -> object:
    return " ".join(value.split()) if isinstance(value, str) else value


# A name a spreadsheet may show over two lines (Excel's Alt+Enter in "Het Stedelijk / locatie Zuid"):
# its line breaks and runs of whitespace read as one space. Not for a person's name: a line break
# there is a mistake (a stray '"' that took in the next row), refused.
OptFoldedText = Annotated[Text | None, BeforeValidator(_on_one_line), BeforeValidator(_empty_to_none)]
OptEmail = Annotated[
    Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)] | None,
    BeforeValidator(_empty_to_none),
]
OptPhone = Annotated[
    Annotated[str, StringConstraints(max_length=40, pattern=r"^[0-9 +()\-]{4,40}$")] | None,
    BeforeValidator(_empty_to_none),
]

_GENDERS = {
    "m": Gender.MAN,
    "man": Gender.MAN,
    "jongen": Gender.MAN,
    "v": Gender.VROUW,
    "vrouw": Gender.VROUW,
    "meisje": Gender.VROUW,
}


def gender_of(code: str | None) -> Gender:
    """Map partner gender codes (M/V/O/X, man/vrouw/onbekend) onto the canonical Gender."""
    return _GENDERS.get((code or "").strip().lower(), Gender.ONBEKEND)


def full_surname(prefix: str | None, surname: str) -> str:
    """Join a Dutch surname prefix ('van der') and the surname."""
    return f"{prefix.strip()} {surname.strip()}" if prefix and prefix.strip() else surname.strip()


SURNAME_MAX = 200  # the canonical surname: the prefix and the surname together


def surname_fits(prefix: object, surname: str, prefix_field: str) -> str:
    """The surname, when it fits the canonical surname together with its prefix; each partner field
    may hold 200 characters, so a long pair is refused here, on the surname, not in translation."""
    if len(full_surname(prefix if isinstance(prefix, str) else None, surname)) > SURNAME_MAX:
        raise PydanticCustomError(
            "achternaam_te_lang",
            "{prefix_field} en achternaam samen zijn langer dan {max} tekens",
            {
                "prefix_field": prefix_field,
                "max": SURNAME_MAX,
                "allowed": f"{prefix_field} en achternaam samen hoogstens {SURNAME_MAX} tekens",
            },
        )
    return surname


class DuplicateKeyError(ValueError):
    """A JSON object names a key more than once; carries where (the keys' paths), never a value. Its
    message masks the names that are not key-shaped: a sender's key may be a BSN or a name."""

    def __init__(self, locs: list[tuple[int | str, ...]]) -> None:
        self.locs = locs
        masks: dict[str, str] = {}
        super().__init__(
            "JSON object with a repeated key: " + ", ".join(field_path(loc, masks) for loc in locs)
        )


class _RepeatedKey(Exception):
    """Raised inside the decoder at the first repeated key; never seen outside this module."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        raise _RepeatedKey
    return obj


class _Repeated(dict[str, Any]):
    """A JSON object that names a key more than once: the last value, as json.loads keeps it."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.repeated = [key for key, n in Counter(k for k, _ in pairs).items() if n > 1]


def _marked(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else _Repeated(pairs)


_STRICT = json.JSONDecoder(object_pairs_hook=_unique)
_MARKING = json.JSONDecoder(object_pairs_hook=_marked)
_ONCE = "elke naam één keer per object"


def _repeated_locs(data: object) -> list[tuple[int | str, ...]]:
    """Where `data` (read by _MARKING) has a repeated key, in the order of the text."""
    locs: list[tuple[int | str, ...]] = []
    stack: list[tuple[object, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, _Repeated):
            locs += [(*loc, key) for key in node.repeated]
        if isinstance(node, dict):
            stack += [(value, (*loc, key)) for key, value in reversed(node.items())]
        elif isinstance(node, list):
            stack += [(value, (*loc, i)) for i, value in reversed(list(enumerate(node)))]
    return locs


def decode_json(text: str) -> Any:
    """`json.loads(text)`, but an object that names a key twice is refused: json.loads would keep
    the last value unseen, and which one a partner meant cannot be known. Raises ValueError
    (DuplicateKeyError for a repeated key, JSONDecodeError for bad JSON, ValueError for an integer
    of more than 4,300 digits) or RecursionError.

    jiter (pydantic's parser, about twice as fast as json.loads on a partner record) reads what it
    can; whatever it refuses the standard library decides, so the value and any error (with its
    line and column, or the paths of the repeated keys) are json.loads' own."""
    try:
        return jiter.from_json(text.encode(), catch_duplicate_keys=True)
    except (ValueError, UnicodeEncodeError):  # UnicodeEncodeError: a lone surrogate in the text
        pass
    try:
        return _STRICT.decode(text)
    except _RepeatedKey:
        raise DuplicateKeyError(_repeated_locs(_MARKING.decode(text))) from None


def load_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a partner's JSON object; any failure becomes a PartnerFormatError on '(bericht)', a
    repeated key one on that key."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PartnerFormatError(
            [FieldProblem(field="(bericht)", problem="geen geldige UTF-8", allowed="JSON in UTF-8")]
        ) from None
    try:
        data = decode_json(text)
    except DuplicateKeyError as exc:
        masks: dict[str, str] = {}
        raise PartnerFormatError(
            [problem_at(loc, "naam komt dubbel voor", _ONCE, masks) for loc in exc.locs]
        ) from None
    except json.JSONDecodeError as exc:
        problem = f"geen geldige JSON (regel {exc.lineno}, kolom {exc.colno})"
        raise PartnerFormatError([FieldProblem(field="(bericht)", problem=problem, allowed="JSON")]) from None
    except ValueError:  # Python refuses to read an integer of more than 4,300 digits
        problem = "een getal heeft te veel cijfers"
        raise PartnerFormatError([FieldProblem(field="(bericht)", problem=problem, allowed="JSON")]) from None
    except RecursionError:
        raise PartnerFormatError([FieldProblem(field="(bericht)", problem="te diep genest")]) from None
    if not isinstance(data, dict):
        raise PartnerFormatError(
            [FieldProblem(field="(bericht)", problem="moet een JSON-object zijn", allowed="{...}")]
        )
    return data


def validate_partner(model: type[M], data: object) -> M:
    """Validate partner data against its model; problems name the partner's own fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PartnerFormatError(problems_from(exc, model)) from None


def reference_in(raw: bytes, *path: str) -> str | None:
    """Best effort: the string at path in a JSON object, or None when anything is off (a key on
    the path that is repeated too: which reference was meant cannot be known)."""
    try:
        node: object = _MARKING.decode(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    for key in path:
        if not isinstance(node, dict) or (isinstance(node, _Repeated) and key in node.repeated):
            return None
        node = node.get(key)
    return as_code(node)


def translate(to_referral: Callable[[P], M], record: P) -> M:
    """Run a partner's translation; a canonical model that refuses a value anywhere in it (a nested
    one built before the Referral too) becomes a PartnerFormatError, never an unexplained error."""
    try:
        return to_referral(record)
    except ValidationError as exc:
        raise PartnerFormatError(problems_from(exc, prefix="(vertaling)")) from None


def to_canonical(model: type[M], **fields: Any) -> M:
    """Build a canonical model from translated fields; a residual misfit becomes a PartnerFormatError."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise PartnerFormatError(problems_from(exc, model, prefix="(vertaling)")) from None
