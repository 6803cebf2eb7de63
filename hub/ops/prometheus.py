"""/metrics in Prometheus text format: kafka_exporter's lag names plus the hub's own metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.metrics import Metrics
from hub.ops.health import Health
from hub.spine.outbox import OutboxState


class _HealthCollector(Collector):
    """Turns one Health picture into gauges (built per scrape; the picture itself is cached)."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        h = self.health
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Messages a consumer group still has to process, per partition",
            labels=["consumergroup", "topic", "partition"],
        )
        lag_s = GaugeMetricFamily(
            "kafka_consumergroup_lag_seconds",
            "Age of the oldest unprocessed message of a consumer group, per partition",
            labels=["consumergroup", "topic", "partition"],
        )
        expired = GaugeMetricFamily(
            "ketenhub_consumergroup_expired_unread",
            "Records a consumer group had not read when the broker deleted them (its committed offset is"
            " behind the log's start): lost to the hub, which the lag does not count",
            labels=["consumergroup", "topic", "partition"],
        )
        for p in h.sample.lags:
            labels = [p.group, p.topic, str(p.partition)]
            lag.add_metric(labels, p.lag)
            lag_s.add_metric(labels, p.lag_seconds)
            expired.add_metric(labels, p.expired)
        current = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "Log end offset (high watermark) of a partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), o in sorted(h.sample.offsets.items()):
            current.add_metric([topic, str(partition)], o.end)
        dlq = GaugeMetricFamily(
            "ketenhub_dlq_messages",
            "Dead letters on a DLQ topic not yet replayed or discarded",
            labels=["topic"],
        )
        for topic, n in sorted(h.dlq_depth.items()):
            dlq.add_metric([topic], n)
        parked = GaugeMetricFamily(
            "ketenhub_retry_parked",
            "Messages parked on a retry topic and not yet taken back",
            labels=["topic"],
        )
        for topic, n in sorted(h.retry_parked.items()):
            parked.add_metric([topic], n)
        verdict = GaugeMetricFamily(
            "ketenhub_consumergroup_status",
            "Burrow-style verdict of a consumer group: 0 OK, 1 WARN, 2 STALL, 3 STOP",
            labels=["consumergroup"],
        )
        for group, v in sorted(h.verdicts.items()):
            verdict.add_metric([group], int(v))
        lost = CounterMetricFamily(
            "ketenhub_consumergroup_expired_unread_records",
            "Records a consumer group had not read when the broker deleted them, counted once each by"
            " this process since it started (the gauge goes back to 0 once the group reads on)",
            labels=["consumergroup", "topic", "partition"],
        )
        for (group, topic, partition), n in sorted(h.sample.expired_total.items()):
            lost.add_metric([group, topic, str(partition)], n)
        yield from (lag, lag_s, expired, lost, current, dlq, parked, verdict)


class _StateCollector(Collector):
    """What the hub knows without Kafka: whether the lag could be measured, and its outbox."""

    def __init__(self, lag_measured: bool, outbox: OutboxState | None) -> None:
        self.lag_measured, self.outbox = lag_measured, outbox

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ketenhub_lag_probe_up",
            "1 when this scrape's lag figures were measured; 0 when the brokers could not be asked "
            "(refused, no answer in time, credentials refused) or the store could not be read (then "
            "the outbox's families are left out too, and ketenhub_ready says so); the lag, offset, "
            "DLQ, retry and verdict families are then left out rather than shown stale",
            value=int(self.lag_measured),
        )
        if self.outbox is not None:
            yield GaugeMetricFamily(
                "ketenhub_outbox_waiting", "Outbox rows not yet published", value=self.outbox.waiting
            )
            yield GaugeMetricFamily(
                "ketenhub_outbox_oldest_seconds",
                "Age of the oldest outbox row not yet published",
                value=self.outbox.oldest_seconds,
            )
            yield GaugeMetricFamily(
                "ketenhub_outbox_parked",
                "Outbox rows parked as larger than the brokers take, for an operator to release or discard",
                value=self.outbox.parked,
            )


def render(health: Health | None, outbox: OutboxState | None, metrics: Metrics) -> bytes:
    """The text exposition of the lag picture, the outbox and the hub's own registry.

    `health` None: the lag could not be measured; the rest still goes out, with
    ketenhub_lag_probe_up 0, so a slow broker is not mistaken for a hub that is down.
    """
    registry = CollectorRegistry(auto_describe=False)
    if health is not None:
        registry.register(_HealthCollector(health))
    registry.register(_StateCollector(health is not None, outbox))
    return generate_latest(registry) + generate_latest(metrics.registry)
