"""What a delivery remembers of the messages it sent or skipped (the webhook, the Verwijsindex)."""

from __future__ import annotations

from hub.retry.recent import RecentIds


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


def test_a_note_is_kept_with_its_id_until_it_is_forgotten() -> None:
    recent = RecentIds(keep=2)
    recent.add("m-1", "withheld")
    recent.add("m-2")
    assert (recent.note("m-1"), recent.note("m-2"), recent.note("m-3")) == ("withheld", "", None)
    recent.add("m-3", "not_in_index")  # m-1, the oldest, is forgotten with its note
    assert (recent.note("m-1"), recent.note("m-3")) == (None, "not_in_index")
