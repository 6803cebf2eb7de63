"""Field-level problems with partner input, the seed of RFC 9457 problem+json answers."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from schemas._base import (
    NO_CONTROL,
    NO_CONTROL_ALLOWED,
    NO_CONTROL_PROBLEM,
    ONE_LINE,
    ONE_LINE_ALLOWED,
    ONE_LINE_PROBLEM,
    readable,
)

# Dutch wording for pydantic's most common error types; other types keep pydantic's own text,
# which never contains the input value.
_PROBLEM_TEXT: dict[str, str] = {
    "missing": "verplicht veld ontbreekt",
    "extra_forbidden": "onbekend veld",
    "string_type": "moet tekst zijn",
    "int_type": "moet een geheel getal zijn",
    "int_parsing": "moet een geheel getal zijn",
    "int_from_float": "moet een geheel getal zijn",
    "bool_type": "moet ja/nee (true/false) zijn",
    "bool_parsing": "moet ja/nee (true/false) zijn",
    "model_type": "moet een object zijn",
    "model_attributes_type": "moet een object zijn",
    "list_type": "moet een lijst zijn",
    "dict_type": "moet een object zijn",
    "string_too_short": "mag niet leeg zijn",
    "string_too_long": "is te lang",
    "string_pattern_mismatch": "heeft niet de juiste vorm",
    "greater_than_equal": "is te klein",
    "less_than_equal": "is te groot",
    "too_long": "bevat te veel elementen",
    "enum": "is geen toegestane waarde",
    "literal_error": "is geen toegestane waarde",
    "decimal_max_places": "heeft te veel decimalen",
}


class FieldProblem(BaseModel):
    """What is wrong with one field of partner input, and what would be allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    problem: str
    allowed: str | None = None
    # `field` as the hub's own text shows it (an error message, a dead letter's headers, a log line),
    # when a name in it is the sender's and not key-shaped: a BSN or a name a partner used as a key.
    # The partner's answer names the field as sent; an operator reads the masked path.
    field_masked: str | None = Field(default=None, exclude=True, repr=False)


# Past this many problems in one message a partner learns nothing new from the rest, while each
# would be held, answered and logged: a megabyte of unknown keys or header cells made an answer of
# hundreds of megabytes. The rest are counted in one last problem.
MAX_PROBLEMS = 50
MESSAGE_FIELD = "(bericht)"


def more_problems(n: int) -> FieldProblem:
    """The problem that counts `n` problems not shown."""
    return FieldProblem(field=MESSAGE_FIELD, problem=f"en nog {n} problemen (niet getoond)")


def capped(problems: Sequence[FieldProblem], total: int | None = None) -> list[FieldProblem]:
    """At most MAX_PROBLEMS of `problems`, and one count of the rest: of `total` when more were found
    than were made, with the counts of problems already capped before (a part of the message)."""
    shown = [p for p in problems if not _MORE.fullmatch(p.problem) or p.field != MESSAGE_FIELD]
    hidden = sum(
        int(m.group(1)) for p in problems if p.field == MESSAGE_FIELD and (m := _MORE.fullmatch(p.problem))
    )
    hidden += (len(shown) if total is None else total) - min(len(shown), MAX_PROBLEMS)
    shown = shown[:MAX_PROBLEMS]
    return [*shown, more_problems(hidden)] if hidden else shown


_MORE = re.compile(r"en nog (\d+) problemen \(niet getoond\)")


class PartnerFormatError(ValueError):
    """Partner input does not fit the partner's format; carries the field problems, never values.

    Its message names each field with the sender's names that are not key-shaped masked: it is what a
    dead letter's headers, a log line and an operator's list show.
    """

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems: list[FieldProblem] = capped(problems)
        summary = "; ".join(f"{p.field_masked or p.field}: {p.problem}" for p in self.problems[:10])
        more = f" (+{len(self.problems) - 10} meer)" if len(self.problems) > 10 else ""
        super().__init__(f"{len(self.problems)} probleem/problemen: {summary}{more}")


# A name that reads as a field or header name: letters, digits, "_", "-" and ".", not too long ...
_KEY_SHAPED = re.compile(r"[\w.-]{0,64}")
# ... and no run of 8 or more digits, the separators between them taken out: a BSN or a phone number,
# also in groups ("x-bsn-252760189", "252.760.189", "06-1234-5678"). No field name has one.
_BETWEEN_DIGITS = re.compile(r"(?<=\d)[_.-]+(?=\d)")
_LONG_NUMBER = re.compile(r"\d{8,}")
KEY_MASK = "••• (sleutel {})"  # hub.ops.masking's MASK, numbered


def key_shaped(name: str) -> bool:
    """True when `name` may be shown as a field or header name: at most 64 letters, digits, "_", "-"
    and ".", with no run of 8 or more digits in it (counted across those separators). Any other name
    (with a space, "@" or "+" in it, a BSN or a phone number) may be personal data used as a key."""
    return _KEY_SHAPED.fullmatch(name) is not None and not _LONG_NUMBER.search(_BETWEEN_DIGITS.sub("", name))


def masked_key(name: str, masks: dict[str, str]) -> str:
    """`name` when key-shaped, else its numbered mask ("••• (sleutel 2)"): the same for the same name
    within `masks`, so masked names stay distinct and a structure keeps its shape."""
    if key_shaped(name):
        return name
    return masks.setdefault(name, KEY_MASK.format(len(masks) + 1))


def field_path(
    loc: Sequence[int | str], masks: dict[str, str] | None = None, known: Collection[str] = ()
) -> str:
    """('verdachte', 'ouders', 0, 'naam') -> 'verdachte.ouders[0].naam'.

    An unknown field's name is the sender's own text: a control character in it is shown as U+FFFD.
    With `masks`, a name that is neither key-shaped nor `known` (a field of the partner's format, such
    as a CSV column "Uren verzuim") is shown as its numbered mask (`masked_key`).
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = readable(str(part)) if masks is None or part in known else masked_key(str(part), masks)
            out += f".{name}" if out else name
    return out or "(bericht)"


def problem_at(
    loc: Sequence[int | str],
    problem: str,
    allowed: str | None,
    masks: dict[str, str],
    *,
    prefix: str = "",
    known: Collection[str] = (),
) -> FieldProblem:
    """The problem of the field at `loc`, named as sent and, for the hub's own text, masked: `masks`
    numbers the masked names of one message, `known` names are the format's own, never masked."""
    field, masked = field_path(loc), field_path(loc, masks, known)
    if prefix:
        field, masked = (f"{prefix}.{field}", f"{prefix}.{masked}") if loc else (prefix, prefix)
    return FieldProblem(
        field=field, problem=problem, allowed=allowed, field_masked=masked if masked != field else None
    )


@cache
def field_names(model: type[BaseModel]) -> frozenset[str]:
    """The names and aliases of the fields of `model` and of the models nested in it."""
    names: set[str] = set()
    todo, seen = [model], set()
    while todo:
        current = todo.pop()
        seen.add(current)
        for name, field in current.model_fields.items():
            names |= {name, field.alias or name}
            nested = _nested_model(field.annotation)
            if nested is not None and nested not in seen:
                todo.append(nested)
    return frozenset(names)


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that owns the last element of loc, following nested fields by alias."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in current.model_fields.items()}
        field = fields.get(part)
        nested = _nested_model(field.annotation) if field is not None else None
        if nested is None:
            return None
        current = nested
    return current


def _nested_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


_CONTROLS = {
    NO_CONTROL: (NO_CONTROL_PROBLEM, NO_CONTROL_ALLOWED),
    ONE_LINE: (ONE_LINE_PROBLEM, ONE_LINE_ALLOWED),
}


def controls_refused(error: ErrorDetails | Mapping[str, Any]) -> tuple[str, str] | None:
    """The problem and what is allowed, when the error is text refused for a control character (the
    NO_CONTROL or ONE_LINE pattern); else None."""
    if error.get("type") != "string_pattern_mismatch":
        return None
    return _CONTROLS.get(str((error.get("ctx") or {}).get("pattern")))


def _allowed(error: ErrorDetails, model: type[BaseModel] | None) -> str | None:
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if (controls := controls_refused(error)) is not None:
        return controls[1]
    if kind == "extra_forbidden" and model is not None:
        owner = _model_at(model, error["loc"])
        if owner is not None:
            return ", ".join(f.alias or n for n, f in owner.model_fields.items())
    if "expected" in ctx:
        return str(ctx["expected"])
    if "allowed" in ctx:
        return str(ctx["allowed"])
    limits = {
        "string_too_long": "max_length",
        "string_too_short": "min_length",
        "greater_than_equal": "ge",
        "less_than_equal": "le",
        "too_long": "max_length",
        "decimal_max_places": "decimal_places",
    }
    if kind in limits and limits[kind] in ctx:
        prefix = "minimaal" if kind in {"string_too_short", "greater_than_equal"} else "maximaal"
        return f"{prefix} {ctx[limits[kind]]}"
    return None


def problems_from(
    exc: ValidationError, model: type[BaseModel] | None = None, *, prefix: str = ""
) -> list[FieldProblem]:
    """Turn a ValidationError into FieldProblems; the input values are never copied."""
    problems = []
    masks: dict[str, str] = {}
    known = field_names(model) if model is not None else frozenset()
    errors = exc.errors(include_input=False, include_url=False)
    for error in errors[:MAX_PROBLEMS]:
        controls = controls_refused(error)
        text = controls[0] if controls is not None else _PROBLEM_TEXT.get(error["type"], error["msg"])
        if text.startswith("Value error, "):
            text = text.removeprefix("Value error, ")
        problems.append(
            problem_at(error["loc"], text, _allowed(error, model), masks, prefix=prefix, known=known)
        )
    return capped(problems, len(errors))
