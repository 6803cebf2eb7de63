"""Records deleted by retention before a consumer group read them are counted, not hidden by the lag.

The lag counts from the log's start when a group's committed offset is behind it: what the broker
deleted unread was in no figure. The embedded tansu broker cannot delete records (DeleteRecords closes
the connection), so the probe's figure is tested by its parts: the count, and what /metrics makes of it.
"""

from __future__ import annotations

from hub.metrics import Metrics
from hub.ops.health import Health
from hub.ops.lag import LagProbe, LagSample, PartitionLag, PartitionOffsets, unread_expired
from hub.ops.prometheus import render


def test_what_lies_between_the_committed_offset_and_the_logs_start_expired_unread() -> None:
    assert unread_expired(committed=2, start=5) == 3  # offsets 2, 3 and 4 were deleted unread
    assert unread_expired(committed=5, start=5) == 0
    assert unread_expired(committed=9, start=5) == 0
    assert unread_expired(committed=-1, start=5) == 0  # never committed: it reads from the start


def test_metrics_show_the_records_a_group_lost_to_retention() -> None:
    sample = LagSample(at=0.0)
    sample.offsets[("partner.politie.referral.v1", 0)] = PartitionOffsets(
        "partner.politie.referral.v1", 0, 40, 50
    )
    sample.lags = [
        PartitionLag("ketenhub-intake", "partner.politie.referral.v1", 0, 10, 50, 10, 3.0, expired=30),
        PartitionLag("ketenhub-mail", "partner.politie.referral.v1", 0, 45, 50, 5, 1.0),
    ]
    health = Health(sample, {}, {}, {}, {}, {})
    text = render(health, None, Metrics()).decode()
    assert (
        'ketenhub_consumergroup_expired_unread{consumergroup="ketenhub-intake",'
        'partition="0",topic="partner.politie.referral.v1"} 30.0'
    ) in text
    assert (
        'ketenhub_consumergroup_expired_unread{consumergroup="ketenhub-mail",'
        'partition="0",topic="partner.politie.referral.v1"} 0.0'
    ) in text


def test_each_record_deleted_unread_is_counted_once_however_often_it_is_seen() -> None:
    """The gauge goes back to 0 once the group reads on: a restart after the loss hid it within
    seconds. The count keeps it, and a later sample of the same loss adds nothing."""
    probe = LagProbe({})
    where = ("ketenhub-intake", "partner.politie.referral.v1", 0)
    assert probe.count_expired(where, committed=10, expired=30) == 30
    assert probe.count_expired(where, committed=10, expired=30) == 0  # the same loss, seen again
    assert probe.count_expired(where, committed=10, expired=35) == 5  # five more deleted meanwhile
    assert probe.count_expired(where, committed=10, expired=0) == 0  # read on: nothing lost since
    assert probe.count_expired(where, committed=70, expired=4) == 4  # a new loss, behind a new offset
    assert probe.expired_total == {where: 39}
    sample = LagSample(at=0.0, expired_total=dict(probe.expired_total))
    text = render(Health(sample, {}, {}, {}, {}, {}), None, Metrics()).decode()
    assert (
        'ketenhub_consumergroup_expired_unread_records_total{consumergroup="ketenhub-intake",'
        'partition="0",topic="partner.politie.referral.v1"} 39.0'
    ) in text
