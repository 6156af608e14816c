"""Numbering and sending records to the cloud on `fogline/<gateway-id>/up/<kind>`.

`UplinkSink` is the one interface outputs see: `send(kind, bodies)` never blocks. This
implementation keeps a bounded in-memory queue per kind and publishes batches with QoS 1,
alerts first; the durable outbox implements the same interface.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

from fogline.envelope import Entry, compress, encode_batch, uplink_topic
from fogline.mqtt import MqttLink
from gateway.clock import Clock
from gateway.metrics import Metrics

log = logging.getLogger("fogline.gateway.uplink")

PRIORITY = ("alert", "escalation", "event", "digest", "health")


class UplinkSink(Protocol):
    def send(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        """Number `(device, data)` records and queue them for the cloud."""


class MqttUplink:
    """Publishes batches of numbered records; bounded, alerts before digests."""

    def __init__(
        self,
        gateway_id: str,
        link: MqttLink,
        metrics: Metrics,
        clock: Clock,
        *,
        max_batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self.gateway_id = gateway_id
        self._link = link
        self._metrics = metrics
        self._clock = clock
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: dict[str, deque[Entry]] = {k: deque() for k in PRIORITY}
        self._size = 0
        self._seq = 0
        self._wake = asyncio.Event()
        metrics.gauges["uplink_pending"] = lambda: {
            (("kind", k),): len(q) for k, q in self._pending.items()
        }

    @property
    def pending(self) -> int:
        return self._size

    def send(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        queue = self._pending.setdefault(kind, deque())
        for device, data in records:
            self._seq += 1
            queue.append((self._seq, device, data))
        self._size += len(records)
        while self._size > self._max_pending:
            self._evict()
        self._wake.set()

    def _evict(self) -> None:
        for kind in reversed(PRIORITY):
            if self._pending[kind]:
                self._pending[kind].popleft()
                self._size -= 1
                self._metrics.outputs[f"evicted_{kind}"] += 1
                return

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._link.connected.wait()
            self.publish_ready()

    def publish_ready(self) -> int:
        """Publish everything queued, highest priority first; returns records sent."""
        sent = 0
        for kind, queue in self._pending.items():
            while queue and self._link.connected.is_set():
                batch = [queue.popleft() for _ in range(min(self._max_batch, len(queue)))]
                payload = compress(encode_batch(self.gateway_id, kind, batch, self._clock.now()))
                if not self._link.publish(uplink_topic(self.gateway_id, kind), payload, qos=1):
                    queue.extendleft(reversed(batch))
                    return sent
                self._size -= len(batch)
                self._metrics.outputs[kind] += len(batch)
                sent += len(batch)
        return sent
