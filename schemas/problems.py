"""Field-level problems with partner input, the seed of RFC 9457 problem+json answers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from schemas._base import NO_CONTROL, NO_CONTROL_ALLOWED, NO_CONTROL_PROBLEM, readable

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
    """Partner input does not fit the partner's format; carries the field problems, never values."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems: list[FieldProblem] = capped(problems)
        summary = "; ".join(f"{p.field}: {p.problem}" for p in self.problems[:10])
        more = f" (+{len(self.problems) - 10} meer)" if len(self.problems) > 10 else ""
        super().__init__(f"{len(self.problems)} probleem/problemen: {summary}{more}")


def field_path(loc: Sequence[int | str]) -> str:
    """('verdachte', 'ouders', 0, 'naam') -> 'verdachte.ouders[0].naam'.

    An unknown field's name is the sender's own text: a control character in it is shown as U+FFFD.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{readable(part)}" if out else readable(str(part))
    return out or "(bericht)"


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


def controls_refused(error: ErrorDetails) -> bool:
    """Whether the error is text refused for a control character (the NO_CONTROL pattern)."""
    return (
        error["type"] == "string_pattern_mismatch" and (error.get("ctx") or {}).get("pattern") == NO_CONTROL
    )


def _allowed(error: ErrorDetails, model: type[BaseModel] | None) -> str | None:
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if controls_refused(error):
        return NO_CONTROL_ALLOWED
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
    errors = exc.errors(include_input=False, include_url=False)
    for error in errors[:MAX_PROBLEMS]:
        loc = error["loc"]
        name = field_path(loc)
        if prefix:
            name = f"{prefix}.{name}" if loc else prefix
        text = (
            NO_CONTROL_PROBLEM if controls_refused(error) else _PROBLEM_TEXT.get(error["type"], error["msg"])
        )
        if text.startswith("Value error, "):
            text = text.removeprefix("Value error, ")
        problems.append(FieldProblem(field=name, problem=text, allowed=_allowed(error, model)))
    return capped(problems, len(errors))
