"""Prometheus metrics and the rates shown by the admin API's stats.

One registry per server (tests run many servers in one process). Counters are bumped on
the hot path with one call each — fan-out adds a whole publish's deliveries at once.
"""

from __future__ import annotations

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("hoomi_connections", "Open WebSocket connections.", registry=r)
        self.sessions_ready = Gauge("hoomi_sessions_ready", "Authenticated sessions.", registry=r)
        self.users_online = Gauge("hoomi_users_online", "Users with a ready session.", registry=r)
        self.messages_in = Counter("hoomi_frames_in", "Frames received from clients.", registry=r)
        self.messages_out = Counter("hoomi_frames_out", "Frames queued to clients.", registry=r)
        self.messages_stored = Counter(
            "hoomi_messages_stored", "Chat messages stored (acked).", registry=r
        )
        self.deliveries = Counter(
            "hoomi_deliveries", "Message frames handed to sessions by fan-out.", registry=r
        )
        self.errors = Counter("hoomi_errors", "Error replies sent, by code.", ["code"], registry=r)
        self.closes = Counter(
            "hoomi_closes", "Connections closed by the server, by close code.", ["code"], registry=r
        )
        self.slow_consumers = Counter(
            "hoomi_slow_consumers", "Sessions closed because their outbox stayed full.", registry=r
        )
        self.store_seconds = Histogram(
            "hoomi_store_seconds",
            "Store call latency, by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fanout_seconds = Histogram(
            "hoomi_fanout_seconds",
            "Time to hand one committed batch to every subscriber.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rates = Rates()


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
