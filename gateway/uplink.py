"""Sending the outbox to the cloud on `fogline/<gateway-id>/up/<kind>`, until acknowledged.

`UplinkSink` is the one interface outputs see: `send(kind, records)` numbers the records
into the outbox and never blocks. `Uplink` drains the outbox: batches per kind, highest
class first (so a new alert overtakes a digest backlog), a bounded number of batches in
flight per kind, QoS 1, an optional records/s cap. A record leaves the outbox only when the cloud's
ack on `fogline/<gateway-id>/down/ack` names it; after a reconnect or an ack timeout
everything unacknowledged is sent again, which idempotent ingest makes safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from fogline.envelope import KINDS, compress, decode_ack, downlink_topic, encode_batch, uplink_topic
from fogline.mqtt import MqttLink
from gateway.clock import Clock
from gateway.metrics import Metrics
from gateway.outbox import Outbox

log = logging.getLogger("fogline.gateway.uplink")

CHECKPOINT_EVERY = 1.0  # seconds between WAL checkpoints (off the event loop)
FIRST_ACK_TIMEOUT = 2.0  # seconds, until the cloud has acked once on a connection


class UplinkSink(Protocol):
    def send(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        """Number `(device, data)` records and queue them for the cloud."""


@dataclass(slots=True)
class _Batch:
    kind: str
    unacked: set[int]
    sent_at: float = field(default_factory=time.monotonic)


class Uplink:
    def __init__(
        self,
        gateway_id: str,
        outbox: Outbox,
        metrics: Metrics,
        clock: Clock,
        *,
        flush_interval: float = 0.1,
        batch_records: int = 500,
        batch_bytes: int = 256 * 1024,
        max_inflight: int = 8,
        ack_timeout: float = 10.0,
        max_rate: float | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.outbox = outbox
        self._metrics = metrics
        self._clock = clock
        self._flush_interval = flush_interval
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        self._max_inflight = max_inflight
        self._ack_timeout = ack_timeout
        self._max_rate = max_rate
        self._tokens = float(batch_records)
        self._tokens_at = time.monotonic()
        self._cursor = dict.fromkeys(KINDS, 0)
        self._inflight: list[_Batch] = []
        self._heard_cloud = False
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        self.link: MqttLink | None = None
        self.ack_topic = downlink_topic(gateway_id, "ack")
        metrics.gauges["outbox_records"] = lambda: {(): outbox.depth}
        metrics.gauges["outbox_bytes"] = lambda: {(): outbox.bytes}
        metrics.gauges["outbox_evicted"] = lambda: {
            (("kind", k),): n for k, n in outbox.evicted.items()
        }
        metrics.gauges["outbox_expired"] = lambda: {
            (("kind", k),): n for k, n in outbox.expired.items()
        }
        metrics.gauges["uplink_inflight_batches"] = lambda: {
            (("kind", k),): sum(b.kind == k for b in self._inflight) for k in KINDS
        }

    @property
    def pending(self) -> int:
        return self.outbox.pending

    # -- the sink -------------------------------------------------------------------------

    def send(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        for device, data in records:
            self.outbox.append(kind, device, data)
        if self.outbox.urgent or self.outbox.buffered >= self.outbox.flush_records:
            self._flush_now.set()

    # -- from the link --------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic != self.ack_topic:
            return
        try:
            ranges = decode_ack(payload)
        except ValueError as exc:
            self._metrics.rejects[("uplink", "bad_ack")] += 1
            log.warning("ignored a bad ack on %s: %s", topic, exc)
            return
        self.outbox.ack(ranges)
        for batch in self._inflight:
            for lo, hi in ranges:
                batch.unacked = {s for s in batch.unacked if not lo <= s <= hi}
        self._inflight = [b for b in self._inflight if b.unacked]
        self._metrics.outputs["acked"] += sum(hi - lo + 1 for lo, hi in ranges)
        self._heard_cloud = True
        self._wake.set()

    def on_reconnect(self) -> None:
        """The broker may have lost what it acknowledged: send everything unacked again."""
        self._restart("reconnected")

    def _restart(self, why: str) -> None:
        self._heard_cloud = False
        if self._inflight or any(self._cursor.values()):
            log.info("uplink: resending unacknowledged records (%s)", why)
        self._inflight.clear()
        self._cursor = dict.fromkeys(KINDS, 0)
        self._wake.set()

    # -- tasks ----------------------------------------------------------------------------

    async def run_commits(self) -> None:
        """Group commit: every `flush_interval`, or at once when an alert or a full group waits."""
        checkpointed = time.monotonic()
        while True:
            if time.monotonic() - checkpointed > CHECKPOINT_EVERY:
                await asyncio.to_thread(self.outbox.checkpoint)
                checkpointed = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self._flush_interval)
            self._flush_now.clear()
            if (self.outbox.buffered or self.outbox.urgent) and self.outbox.flush():
                self._wake.set()

    async def run_publish(self, link: MqttLink) -> None:
        self.link = link
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            self._wake.clear()
            if link.connected.is_set():
                self.pump(link)

    def pump(self, link: MqttLink) -> int:
        """Send what fits in the window, alerts first. Returns records sent."""
        # Until the cloud has acked once on this connection, wait less: after a broker
        # restart we often reconnect before the cloud has resubscribed, and what we send
        # then is dropped by the broker, not slow.
        timeout = (
            self._ack_timeout if self._heard_cloud else min(FIRST_ACK_TIMEOUT, self._ack_timeout)
        )
        if self._inflight and time.monotonic() - self._inflight[0].sent_at > timeout:
            self._metrics.outputs["ack_timeouts"] += 1
            self._restart(f"no ack within {timeout:.0f}s")
        sent = 0
        for kind in KINDS:
            # Each kind has its own window, so a digest backlog the cloud is slow to
            # acknowledge never holds back an alert.
            while sum(b.kind == kind for b in self._inflight) < self._max_inflight:
                limit = self._rate_limit()
                if limit == 0:  # over the rate cap: the next wake-up continues
                    return sent
                rows = self.outbox.read(kind, self._cursor[kind], limit, self._batch_bytes)
                if not rows:
                    break
                payload = compress(encode_batch(self.gateway_id, kind, rows, self._clock.now()))
                if not link.publish(uplink_topic(self.gateway_id, kind), payload, qos=1):
                    return sent
                self._cursor[kind] = rows[-1][0]
                self._inflight.append(_Batch(kind, {r[0] for r in rows}))
                self._spend(len(rows))
                self._metrics.outputs[kind] += len(rows)
                self._metrics.outputs["uplink_bytes"] += len(payload)
                sent += len(rows)
        return sent

    def _rate_limit(self) -> int:
        if self._max_rate is None:
            return self._batch_records
        now = time.monotonic()
        self._tokens = min(self._max_rate, self._tokens + (now - self._tokens_at) * self._max_rate)
        self._tokens_at = now
        return max(0, min(self._batch_records, int(self._tokens)))

    def _spend(self, n: int) -> None:
        if self._max_rate is not None:
            self._tokens -= n
