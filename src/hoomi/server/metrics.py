"""Prometheus metrics and the rates shown by the admin API's stats.

One registry per server (tests run many servers in one process). Counters and gauges are
plain attributes, bumped on the hot path with one integer addition (a prometheus_client
Counter takes a lock and three calls per increment, ~1 µs); `collect` reads them when the
registry is scraped (same names and labels as before, without the `_created` series). The
two histograms stay prometheus_client objects: they are observed per stored message or per
committed batch.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import attrs
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics(Collector):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Gauges.
        self.connections = 0  # open WebSocket connections
        self.sessions_ready = 0  # authenticated sessions
        self.users_online = 0  # users with a ready session
        # Counters.
        self.frames_in = 0
        self.frames_out = 0
        self.messages_stored = 0
        self.deliveries = 0
        self.slow_consumers = 0
        self.errors: collections.Counter[str] = collections.Counter()  # by error code
        self.closes: collections.Counter[str] = collections.Counter()  # by close code
        self.store_seconds = Histogram(
            "hoomi_store_seconds",
            "Store call latency, by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fanout_seconds = Histogram(
            "hoomi_fanout_seconds",
            "Time to hand one committed batch to every subscriber.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)
        self.rates = Rates()

    def collect(self) -> Iterator[Metric]:
        """The plain counters and gauges, as Prometheus metric families (on scrape)."""
        for name, doc, value in (
            ("hoomi_connections", "Open WebSocket connections.", self.connections),
            ("hoomi_sessions_ready", "Authenticated sessions.", self.sessions_ready),
            ("hoomi_users_online", "Users with a ready session.", self.users_online),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        for name, doc, value in (
            ("hoomi_frames_in", "Frames received from clients.", self.frames_in),
            ("hoomi_frames_out", "Frames queued to clients.", self.frames_out),
            ("hoomi_messages_stored", "Chat messages stored (acked).", self.messages_stored),
            ("hoomi_deliveries", "Message frames handed to sessions by fan-out.", self.deliveries),
            (
                "hoomi_slow_consumers",
                "Sessions closed because their outbox stayed full.",
                self.slow_consumers,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        for name, doc, counts in (
            ("hoomi_errors", "Error replies sent, by code.", self.errors),
            ("hoomi_closes", "Connections closed by the server, by close code.", self.closes),
        ):
            family = CounterMetricFamily(name, doc, labels=["code"])
            for key, value in sorted(counts.items()):
                family.add_metric([key], value)
            yield family


@attrs.define
class Rates:
    """Per-second rates, smoothed over ~10 s, updated by the server's scheduler."""

    messages_in_per_s: float = 0.0
    messages_out_per_s: float = 0.0
    deliveries_per_s: float = 0.0
    _last: tuple[float, float, float, float] | None = None

    def sample(
        self, now: float, messages_in: float, messages_out: float, deliveries: float
    ) -> None:
        if self._last is not None:
            then, last_in, last_out, last_deliveries = self._last
            elapsed = now - then
            if elapsed <= 0:
                return
            weight = min(1.0, elapsed / 10)
            self.messages_in_per_s += weight * (
                (messages_in - last_in) / elapsed - self.messages_in_per_s
            )
            self.messages_out_per_s += weight * (
                (messages_out - last_out) / elapsed - self.messages_out_per_s
            )
            self.deliveries_per_s += weight * (
                (deliveries - last_deliveries) / elapsed - self.deliveries_per_s
            )
        self._last = (now, messages_in, messages_out, deliveries)
