"""What the cloud counts, as plain numbers rendered to Prometheus text when scraped.

Like the gateway's counters (`gateway/metrics.py`): dict increments on the hot path, no
client library and its per-increment locks. Each is written by one task (ingest and its
worker thread one drain at a time, retention, the silence watch).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fogline.prometheus import Exposition, Histogram

# Drain latency buckets in seconds (decode + one transaction).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class CloudMetrics:
    messages_in: int = 0
    bytes_in: int = 0
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    acks_published: int = 0
    acks_unsent: int = 0
    drain_failures: int = 0
    drain: Histogram = field(default_factory=lambda: Histogram(BUCKETS))
    retention_deleted: int = 0
    silences_raised: int = 0
    silences_resolved: int = 0
    signin_failures: int = 0
    signin_refused: Counter[str] = field(default_factory=Counter)
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def render(self) -> str:
        exposition = Exposition("fogline_cloud_")
        family = exposition.family

        family("messages_in_total", "counter", "Uplink messages received.", {(): self.messages_in})
        family("bytes_in_total", "counter", "Uplink payload bytes received.", {(): self.bytes_in})
        family(
            "records_stored_total",
            "counter",
            "Records stored for the first time, per kind.",
            {(("kind", k),): v for k, v in sorted(self.stored.items())},
        )
        family(
            "duplicates_total",
            "counter",
            "Records received again and ignored (already stored), per kind.",
            {(("kind", k),): v for k, v in sorted(self.duplicates.items())},
        )
        family(
            "rejects_total",
            "counter",
            "Messages rejected, per reason.",
            {(("reason", k),): v for k, v in sorted(self.rejects.items())},
        )
        family("acks_published_total", "counter", "Acks published.", {(): self.acks_published})
        family(
            "acks_unsent_total",
            "counter",
            "Acks not published (broker link down); the gateway retransmits.",
            {(): self.acks_unsent},
        )
        family(
            "drain_failures_total",
            "counter",
            "Drains whose transaction failed (retried).",
            {(): self.drain_failures},
        )
        family(
            "retention_deleted_total",
            "counter",
            "Digests deleted by retention.",
            {(): self.retention_deleted},
        )
        family(
            "silences_raised_total",
            "counter",
            "gateway_silent episodes this replica opened.",
            {(): self.silences_raised},
        )
        family(
            "silences_resolved_total",
            "counter",
            "gateway_silent episodes this replica cleared (the gateway was heard again).",
            {(): self.silences_resolved},
        )
        family(
            "signin_failures_total",
            "counter",
            "Console sign-ins with a wrong name or password.",
            {(): self.signin_failures},
        )
        family(
            "signin_refused_total",
            "counter",
            "Console sign-ins refused unchecked after too many failures, per account or address.",
            {(("by", k),): self.signin_refused[k] for k in ("account", "address")},
        )
        exposition.histogram("drain_seconds", "Decode and store time per drain.", self.drain)
        for name, read in self.gauges.items():
            family(name, "gauge", name.replace("_", " ").capitalize() + ".", {(): read()})
        family(
            "uptime_seconds",
            "gauge",
            "Seconds since start.",
            {(): round(time.time() - self.started, 3)},
        )
        return exposition.text()
