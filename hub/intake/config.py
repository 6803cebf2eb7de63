"""Intake rules as versioned configuration: damage caps, truancy bounds, BOA scope, Halt-feiten."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from hub.errors import ConfigError
from schemas.problems import field_path
from schemas.referral import Reason, Track

DEFAULT_RULES_FILE = Path(__file__).resolve().parent / "intake_rules.json"

Feitcode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z][0-9]{3}[A-Za-z]?$")
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgeRange(_Config):
    """Ages allowed on the offence date, both ends inclusive."""

    min_age: int = Field(ge=0, le=30)
    max_age: int = Field(ge=0, le=30)


class DamageCaps(_Config):
    """Rule 6: above these amounts OvJ approval is needed."""

    per_person_eur: Decimal = Field(gt=0)
    per_case_eur: Decimal = Field(gt=0)


class TruancyBounds(_Config):
    """Rule 5: a truancy referral without OvJ approval lies within these bounds."""

    min_hours: int = Field(ge=0)
    max_hours: int = Field(ge=0)
    min_times_late: int = Field(ge=0)
    max_times_late: int = Field(ge=0)


class BoaProject(_Config):
    """A project agreed by municipality, police and OM in which BOAs may refer other offences."""

    code: Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=2)]
    name: str
    municipality: str
    feitcodes: list[Feitcode] = Field(min_length=1)
    start: date
    end: date

    @model_validator(mode="after")
    def _at_most_one_year(self) -> BoaProject:
        if self.end < self.start:
            raise ValueError("end lies before start")
        # both ends count (`active_on`): a year from 1 January ends on 31 December, as the projects
        # are agreed; ending on the next 1 January made it a year and a day
        try:
            limit = self.start.replace(year=self.start.year + 1) - timedelta(days=1)
        except ValueError:  # started on 29 February: to 28 February
            limit = date(self.start.year + 1, 2, 28)
        if self.end > limit:
            raise ValueError(
                f"a BOA project lasts at most one year, both days counted: from {self.start.isoformat()}"
                f" it ends on {limit.isoformat()} at the latest"
            )
        return self

    def active_on(self, day: date) -> bool:
        """True when day lies within the project (both ends inclusive)."""
        return self.start <= day <= self.end


class HaltFeit(_Config):
    """One line of the Halt-feiten table: a feitcode, its article and reason category."""

    feitcode: Feitcode
    article: str
    description: str
    reason: Reason
    requires_ovj: bool = False


class IntakeRules(_Config):
    """All intake configuration of one version."""

    version: str = Field(min_length=1)
    valid_from: date
    note: str = ""
    age_ranges: dict[Track, AgeRange]
    damage_caps: DamageCaps
    truancy: TruancyBounds
    boa_articles: list[str] = Field(min_length=1)
    boa_projects: list[BoaProject] = Field(default_factory=list)
    halt_feiten: list[HaltFeit] = Field(min_length=1)
    _feit_by_code: dict[str, HaltFeit] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> IntakeRules:
        missing = [t.value for t in Track if t not in self.age_ranges]
        if missing:
            raise ValueError(f"age_ranges lacks {', '.join(missing)}")
        codes = [f.feitcode for f in self.halt_feiten]
        if len(codes) != len(set(codes)):
            raise ValueError("halt_feiten lists a feitcode twice")
        projects = [p.code for p in self.boa_projects]
        if len(projects) != len(set(projects)):
            raise ValueError("boa_projects lists a code twice")
        self._feit_by_code = {f.feitcode: f for f in self.halt_feiten}
        return self

    def feit(self, feitcode: str | None) -> HaltFeit | None:
        """The Halt-feiten entry for a feitcode, or None when it is not a Halt offence."""
        if feitcode is None:
            return None
        return self._feit_by_code.get(feitcode.strip().upper())

    def project(self, code: str) -> BoaProject | None:
        """The BOA project with this code, active or not."""
        return next((p for p in self.boa_projects if p.code == code.strip().upper()), None)


def load_intake_rules(path: Path | None = None) -> IntakeRules:
    """Read and check the rules file; a bad file raises ConfigError naming the file and field."""
    source = path or DEFAULT_RULES_FILE
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read intake rules ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc})") from None
    try:
        return IntakeRules.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)
        details = "; ".join(f"{field_path(e['loc'])}: {e['msg']}" for e in first)
        raise ConfigError(f"{source}: invalid intake rules: {details}") from None
