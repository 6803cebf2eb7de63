"""What the webhook delivery remembers of the messages it sent or skipped."""

from __future__ import annotations

from connectors.receivers.component import RecentIds


def test_only_the_most_recent_ids_are_kept() -> None:
    recent = RecentIds(keep=3)
    for n in range(5):
        recent.add(f"m-{n}")
    recent.add("m-2")  # seen again: the newest now
    recent.add("m-5")
    assert len(recent) == 3
    assert [f"m-{n}" in recent for n in range(6)] == [False, False, True, False, True, True]


def test_a_message_sent_after_all_is_no_longer_skipped() -> None:
    recent = RecentIds()
    recent.add("m-1")
    recent.discard("m-1")
    recent.discard("m-2")  # never seen: nothing to forget
    assert "m-1" not in recent and len(recent) == 0
