"""Prometheus metrics, on a registry owned by one relay instance (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_OUTCOMES = {True: "ok", False: "failed", None: "unknown"}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)


class _Gauges(Collector):
    """Values read when scraped (outbox depth, tunnel state, log size) rather than pushed."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[str, Callable[[], float | None]]] = {}

    def collect(self) -> Any:
        for name, (doc, read) in self.sources.items():
            value = read()
            if value is not None:  # None: the value does not apply (no tunnel at all), so no series
                yield GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """Counters and histograms relay updates as it works."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "relay_deliveries", "Callbacks recorded", ["kind", "stage", "outcome"], registry=self.registry
        )
        self.duplicates = Counter("relay_duplicates", "Deliveries repeating an earlier one", registry=self.registry)
        self.rejected = Counter("relay_rejected_requests", "Requests refused", ["reason"], registry=self.registry)
        self.ack_latency = Histogram(
            "relay_ack_latency_seconds",
            "From request to acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.alerts = Counter("relay_alerts", "Alert sends by result", ["result"], registry=self.registry)
        self.alert_latency = Histogram(
            "relay_alert_latency_seconds",
            "From callback to alert delivered",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
        self._gauges = _Gauges()
        self.registry.register(self._gauges)
        self.up = Gauge("relay_up", "1 while relay serves", registry=self.registry)
        self.up.set(1)

    def gauge(self, name: str, doc: str, read: Callable[[], float | None]) -> None:
        """Expose a value computed at scrape time (None leaves the series out)."""
        self._gauges.sources[name] = (doc, read)

    def observe_delivery(self, doc: Mapping[str, Any], seconds: float) -> None:
        """Count one recorded delivery and its acknowledgement latency."""
        outcome = _OUTCOMES[doc.get("ok")]
        self.deliveries.labels(kind=doc["kind"], stage=doc.get("stage") or "none", outcome=outcome).inc()
        if doc.get("duplicate"):
            self.duplicates.inc()
        self.ack_latency.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
