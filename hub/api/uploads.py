"""One upload at a time per partner: a CSV of a megabyte takes seconds of Python and one write
transaction, so a partner sending many at once would hold the hub's writer and both cores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hub.api.problems import Problem

RETRY_AFTER_S = 5


class UploadSlots:
    """Which partners have an upload under way (in one hub process)."""

    def __init__(self) -> None:
        self.busy: set[str] = set()

    @contextmanager
    def one_at_a_time(self, partner_id: str) -> Iterator[None]:
        """Hold the partner's slot for the upload; 429 with Retry-After while another holds it."""
        if partner_id in self.busy:
            raise Problem(
                429,
                "Er loopt al een upload",
                "Deze partner heeft al een bestand in behandeling; stuur het volgende als het vorige "
                "beantwoord is. Er is niets opgeslagen.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.busy.add(partner_id)
        try:
            yield
        finally:
            self.busy.discard(partner_id)
