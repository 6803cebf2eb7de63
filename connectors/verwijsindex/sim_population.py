"""The simulator's population register fixture (fictitious BRP extract) for family matches."""

from __future__ import annotations

import json
from datetime import date
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from connectors.verwijsindex.contract import Geslacht


class Persoon(BaseModel):
    """One person in the population register fixture; youths list their parents' BSNs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bsn: str
    voornamen: str
    voorvoegsel: str | None = None
    geslachtsnaam: str
    geboortedatum: date
    geslacht: Geslacht
    gemeente: str
    ouders: list[str] = []


class Populatie(BaseModel):
    """A small, fictitious extract of the population register (BRP), for family matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    toelichting: str = ""
    personen: list[Persoon]

    def ouders_van(self, bsn: str) -> frozenset[str]:
        """The parents' BSNs of one person; empty when unknown."""
        for persoon in self.personen:
            if persoon.bsn == bsn:
                return frozenset(persoon.ouders)
        return frozenset()

    def delen_ouder(self, a: str, b: str) -> bool:
        """True when two different people share at least one parent."""
        return a != b and bool(self.ouders_van(a) & self.ouders_van(b))


def load_population(path: Path | None = None) -> Populatie:
    """Read the register fixture; by default the one shipped beside this module."""
    if path is None:
        raw = resources.files("connectors.verwijsindex").joinpath("population.json").read_text("utf-8")
    else:
        raw = path.read_text("utf-8")
    return Populatie.model_validate(json.loads(raw))
