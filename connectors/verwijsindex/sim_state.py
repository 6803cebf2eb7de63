"""The Verwijsindex simulator's memory and rules: signals, end dates, matches and the match feed."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

from connectors.verwijsindex.contract import (
    STATUS_BIJ_REDEN,
    Contactpersoon,
    IntrekkingsReden,
    Match,
    MatchPagina,
    MatchType,
    Signaal,
    SignaalRegistratie,
    SignaalStatus,
    Tegenpartij,
)
from connectors.verwijsindex.sim_faults import FaultController, Faults
from connectors.verwijsindex.sim_population import Populatie, load_population
from hub.clock import local_day

Clock = Callable[[], datetime]
_CURSOR = re.compile(r"^(\d{13})-(\d{10})$")


class Conflict(Exception):
    """409: the request contradicts what the index already holds."""


class NotFound(Exception):
    """404: no signal with that id."""


class Rejected(Exception):
    """422: the request breaks a rule of the index."""


@dataclass
class _Stored:
    registratie: SignaalRegistratie
    signaal: Signaal


class SimulatorState:
    """Everything the simulator holds; pass one to `create_simulator` to inspect it from tests."""

    def __init__(
        self,
        *,
        population: Populatie | None = None,
        clock: Clock | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
    ) -> None:
        self.population = population if population is not None else load_population()
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.faults = FaultController(faults, seed)
        self.signals: dict[str, _Stored] = {}
        # Ids withdrawn before they were registered: a registration still under way when its
        # withdrawal came (the client gave up waiting, the index had not finished) is refused.
        self.withdrawn_unregistered: set[str] = set()
        self.feed: list[tuple[int, Match]] = []
        self._paired: set[tuple[str, str]] = set()
        # The epoch makes cursors of a restarted simulator sort after the old ones.
        self.epoch = f"{int(time.time() * 1000):013d}"
        self._seq = 0

    def reset(self) -> None:
        """Forget signals, matches, calls and faults; the feed position keeps counting up."""
        self.signals.clear()
        self.withdrawn_unregistered.clear()
        self.feed.clear()
        self._paired.clear()
        self.faults.reset()

    def cursor(self, seq: int) -> str:
        """The opaque cursor for a feed position; lexicographic order is feed order."""
        return f"{self.epoch}-{seq:010d}"

    def expire(self) -> None:
        """Rule 12: an active signal past its end date becomes VERLOPEN."""
        today = local_day(self.clock())
        for stored in self.signals.values():
            sig = stored.signaal
            if sig.status is SignaalStatus.ACTIEF and sig.einddatum < today:
                ended = datetime.combine(sig.einddatum + timedelta(days=1), dtime(), UTC)
                stored.signaal = sig.model_copy(
                    update={"status": SignaalStatus.VERLOPEN, "beeindigd_op": ended}
                )

    def get(self, signaal_id: str) -> Signaal:
        """The current state of one signal."""
        self.expire()
        return self._stored(signaal_id).signaal

    def register(self, signaal_id: str, body: SignaalRegistratie) -> tuple[Signaal, bool]:
        """Register once; the same body again returns the current state, another body conflicts."""
        self.expire()
        existing = self.signals.get(signaal_id)
        if existing is not None:
            if existing.registratie == body:
                return existing.signaal, False
            raise Conflict("signaalId is already registered with a different body")
        if signaal_id in self.withdrawn_unregistered:
            raise Conflict("signaalId was withdrawn before it was registered")
        if body.einddatum < local_day(self.clock()):
            raise Rejected("einddatum lies in the past")
        signaal = Signaal(
            signaal_id=signaal_id,
            status=SignaalStatus.ACTIEF,
            organisatie=body.organisatie,
            contactpersoon=body.contactpersoon,
            aangemaakt=body.aangemaakt,
            einddatum=body.einddatum,
        )
        self.signals[signaal_id] = _Stored(body, signaal)
        self._match(signaal_id)
        return signaal, True

    def withdraw(self, signaal_id: str, reden: IntrekkingsReden) -> Signaal:
        """Rule 15: end an active signal with a reason; repeating it, or an expired signal, is a no-op."""
        self.expire()
        if signaal_id not in self.signals:
            self.withdrawn_unregistered.add(signaal_id)  # and still 404: nothing of it is active
        stored = self._stored(signaal_id)
        sig = stored.signaal
        target = STATUS_BIJ_REDEN[reden]
        if sig.status is SignaalStatus.ACTIEF:
            stored.signaal = sig.model_copy(
                update={"status": target, "beeindigd_op": self.clock(), "intrekkingsreden": reden}
            )
        elif sig.status not in (target, SignaalStatus.VERLOPEN):
            raise Conflict("signal was already ended with the other reason")
        return stored.signaal

    def change_contact(self, signaal_id: str, contact: Contactpersoon) -> Signaal:
        """Set the contact person of an active signal; the same contact again is a no-op."""
        self.expire()
        stored = self._stored(signaal_id)
        if stored.signaal.contactpersoon == contact:
            return stored.signaal
        if stored.signaal.status is not SignaalStatus.ACTIEF:
            raise Conflict("signal is no longer active")
        stored.signaal = stored.signaal.model_copy(update={"contactpersoon": contact})
        return stored.signaal

    def matches_after(self, vanaf: str | None, limit: int, organisatie: str | None = None) -> MatchPagina:
        """Up to `limit` matches after `vanaf` (optionally for one organisation) and the next cursor."""
        self.expire()
        start = self._start_of(vanaf)
        if start is None:  # a cursor from the future: nothing yet, and never step back
            return MatchPagina(matches=[], volgende=vanaf or self.cursor(0))
        found: list[Match] = []
        last = start
        for seq, match in self.feed:
            if seq <= start:
                continue
            if organisatie is None or match.organisatie_code == organisatie:
                if len(found) == limit:
                    break
                found.append(match)
            last = seq
        volgende = self.cursor(last)
        if vanaf is not None and volgende < vanaf:
            volgende = vanaf
        return MatchPagina(matches=found, volgende=volgende)

    def _start_of(self, vanaf: str | None) -> int | None:
        if not vanaf:
            return 0
        parsed = _CURSOR.fullmatch(vanaf)
        if parsed is None:
            raise ValueError("vanaf is not a cursor this index handed out")
        epoch, seq = parsed.groups()
        if epoch < self.epoch:
            return 0
        if epoch > self.epoch or int(seq) > self._seq:
            return None
        return int(seq)

    def _stored(self, signaal_id: str) -> _Stored:
        stored = self.signals.get(signaal_id)
        if stored is None:
            raise NotFound("no signal with this signaalId")
        return stored

    def _match(self, new_id: str) -> None:
        new = self.signals[new_id]
        bsn = new.registratie.jeugdige.bsn
        for other_id, other in list(self.signals.items()):
            if other_id == new_id or other.signaal.status is not SignaalStatus.ACTIEF:
                continue
            if other.registratie.organisatie.code == new.registratie.organisatie.code:
                continue  # signals of one organisation never match each other
            other_bsn = other.registratie.jeugdige.bsn
            if other_bsn == bsn:
                kind = MatchType.CLIENTMATCH
            elif self.population.delen_ouder(bsn, other_bsn):
                kind = MatchType.GEZINSMATCH
            else:
                continue
            pair = (min(new_id, other_id), max(new_id, other_id))
            if pair in self._paired:
                continue
            self._paired.add(pair)
            self._notify(other_id, other, new, kind)
            self._notify(new_id, new, other, kind)

    def _notify(self, recipient_id: str, recipient: _Stored, counterpart: _Stored, kind: MatchType) -> None:
        self._seq += 1
        match = Match(
            match_id=str(uuid.uuid4()),
            cursor=self.cursor(self._seq),
            type=kind,
            signaal_id=recipient_id,
            organisatie_code=recipient.signaal.organisatie.code,
            tegenpartij=Tegenpartij(
                organisatie=counterpart.signaal.organisatie,
                contactpersoon=counterpart.signaal.contactpersoon,
            ),
            ontstaan_op=self.clock(),
        )
        self.feed.append((self._seq, match))
