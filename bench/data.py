"""Realistic police referral records for load: valid BSNs, unique case references, Halt's reason mix."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

# Offence codes from the Halt-feiten table, weighted like Halt's 2024-2025 reason mix
# (baldadig 337, fysieke agressie 236, diefstal 174, digitaal 132, ...).
FEITEN = [("F424", 337), ("F300", 236), ("F310", 174), ("F138", 132), ("F350", 80), ("F266", 60)]


def bsn(n: int) -> str:
    """The n-th nine-digit number that passes the elfproef (rule 1)."""
    base = 100_000_000 + n * 11
    while True:
        digits = [int(c) for c in f"{base:09d}"]
        total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
        if total % 11 == 0 and base != 0:
            return f"{base:09d}"
        base += 1


def police_record(i: int, rng: random.Random, feiten: list[str]) -> bytes:
    """One police referral as the police system would publish it."""
    offence = date(2025, 3, 1) + timedelta(days=rng.randrange(200))
    born = offence - timedelta(days=365 * rng.randrange(12, 18) + rng.randrange(300))
    record = {
        "procesVerbaalNummer": f"PL1500-{2025000000 + i:010d}-1",
        "eenheid": "Den Haag",
        "basisteam": "Basisteam Den Haag Centrum",
        "verbalisant": {"naam": "Brigadier S. Verhoeven", "dienstnummer": "104522"},
        "feitcode": rng.choice(feiten),
        "pleegdatum": offence.strftime("%d-%m-%Y"),
        "pleegplaats": "Den Haag",
        "omschrijving": "Belasting-test",
        "verdachte": {
            "bsn": bsn(i),
            "voornamen": "Test",
            "achternaam": f"Jongere{i}",
            "geboortedatum": born.strftime("%d-%m-%Y"),
            "geslacht": rng.choice("MV"),
            "gemeente": "Den Haag",
        },
        "bekennend": True,
        "jeugdigeAkkoord": True,
        "oudersAkkoord": True,
        "schade": {"bedragJeugdige": "10,00", "bedragTotaal": "10,00"},
        "eerdereHaltverwijzingen": 0,
    }
    return json.dumps(record).encode()


def police_records(n: int, seed: int = 1) -> list[bytes]:
    """n records with the weighted offence mix."""
    rng = random.Random(seed)
    feiten = [code for code, weight in FEITEN for _ in range(weight)]
    return [police_record(i, rng, feiten) for i in range(n)]
