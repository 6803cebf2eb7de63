"""What a delivery remembers of the messages it handled, for the hooks that record them afterwards."""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    """The last `keep` message ids this process saw, each with a note, oldest forgotten first.

    A connector's `deliver` runs before, and apart from, the hook that records its outcome: what it
    found out on the way (a message skipped, an answer that was no disclosure) is kept here until the
    hook reads it. Kept, not forgotten when read: a round's batch that rolls back is recorded again one
    by one, and must find it again.
    """

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._ids: OrderedDict[str, str] = OrderedDict()

    def add(self, message_id: str, note: str = "") -> None:
        """Remember `message_id`, with `note` (again: as the newest)."""
        self._ids[message_id] = note
        self._ids.move_to_end(message_id)
        while len(self._ids) > self.keep:
            self._ids.popitem(last=False)

    def discard(self, message_id: str) -> None:
        """Forget `message_id`, if it is remembered."""
        self._ids.pop(message_id, None)

    def note(self, message_id: str) -> str | None:
        """The note kept with `message_id`; None when it is not remembered."""
        return self._ids.get(message_id)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
