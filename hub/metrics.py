"""The hub's own Prometheus metrics, in a registry per app (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Counters and histograms the spine and connectors update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "ketenhub_messages",
            "Messages handled, by topic and outcome",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "ketenhub_handler_seconds",
            "Time spent in a handler per message",
            ["topic"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.delivery_attempts = Counter(
            "ketenhub_delivery_attempts",
            "Calls to partner systems, by partner and result (store: the hub's own store failed on the"
            " way; cut_off: stopped, its lease could not be kept)",
            ["partner", "result"],
            registry=self.registry,
        )
        self.hook_failures = Counter(
            "ketenhub_delivery_hook_failures",
            "Connector bookkeeping that failed after a delivery, parking or dead letter, by ladder and hook",
            ["ladder", "hook"],
            registry=self.registry,
        )
        self.postponed = Counter(
            "ketenhub_delivery_postponed",
            "Deliveries put off because the hub's own store failed on their way or while their outcome"
            " was recorded (no rung used, up to ten times in a row for a message), by ladder",
            ["ladder"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "ketenhub_ready", "1 when a dependency is reachable", ["dependency"], registry=self.registry
        )
