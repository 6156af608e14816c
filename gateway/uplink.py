"""Sending the outbox to the cloud on `fogline/<gateway-id>/up/<kind>`, until acknowledged.

`UplinkSink` is the one interface outputs see: `send(kind, records)` numbers the records
into the outbox and never blocks. `Uplink` drains the outbox: batches per kind in
`SEND_ORDER` (a new alert overtakes a digest backlog), at most `max_inflight` full
batches' worth per kind waiting for the cloud, QoS 1, an optional records/s cap. A record
leaves the outbox only when the cloud's ack on `fogline/<gateway-id>/down/ack` names it,
and an ack counts only for records that were sent and not yet acknowledged (a forged or
stale range cannot empty the outbox).

Flow control, because one TCP connection carries every kind (`gateway/flow.py`):

* the bytes the broker has not acknowledged yet are held to a budget measured from the
  link (one to two seconds of what it carries, 1.5 KiB at least), and batches are
  cut to a quarter of it, so on a slow link an alert waits behind a few seconds of digests
  at most (alerts may exceed the budget; nothing else may);
* the timer for the cloud's ack starts when the broker has the batch (its PUBACK), and
  its length follows the measured round trip (RFC 6298). A batch whose ack is overdue is
  sent again (within the budget), its own timeout doubled and jittered, until the
  cloud's next ack shows it answers again.

After a reconnect the broker's CONNACK says whether it kept our session. If it did, it
still holds what it acknowledged (and the acks the cloud sent meanwhile), and the MQTT
client sends again only what it had not acknowledged. If it did not (a broker restarted
without persistence), everything unacknowledged is sent again, which idempotent ingest
makes safe. `status()` tells whether the uplink keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from fogline.envelope import (
    KINDS,
    Entry,
    compress,
    decode_ack,
    downlink_topic,
    encode_batch,
    to_ranges,
    uplink_topic,
)
from fogline.mqtt import MqttLink
from fogline.signing import Signer
from gateway.clock import Clock
from gateway.flow import AckTimer, LinkRate
from gateway.metrics import Metrics, RateLimitedLog
from gateway.outbox import Outbox, UnserialisableRecordError

log = logging.getLogger("fogline.gateway.uplink")

CHECKPOINT_EVERY = 1.0  # seconds between WAL checkpoints (off the event loop)
COMMIT_RETRY = (0.2, 5.0)  # first and longest wait before committing again after a failure
COMMIT_GAP = 0.02
"""Seconds at least between two group commits, also for alerts. A commit writes the state of
every key touched since the last one (gateway/state.py): 5-6 ms for 120 machines of the
factory pipeline since its per-reading `usual` (2.7 ms before), alerts or not. Twenty
machines raising and clearing alerts five times a second made 120 commits a second, a
third of the gateway's time, and the stalls between them set the stop action's p99; an
alert now waits up to 20 ms more to be committed. At 50 ms the stop's p50 halved and its
p99 did not move (docs/benchmarks.md)."""
SEND_ORDER = ("alert", "health", "escalation", "event", "digest")
"""Alerts first; health second, because it is the heartbeat the cloud watches for silence."""
MIN_BATCH_BYTES = 1024
MAX_INFLIGHT_BATCHES = 64  # per kind, waiting for the cloud's ack
DISCONNECTED_GRACE = 5.0  # seconds without the broker before the uplink reports degraded
STALL_AFTER = 20.0  # seconds with records waiting and no ack before it reports degraded
BEHIND_AFTER = 600.0  # seconds the oldest record may wait before it reports degraded


class UplinkSink(Protocol):
    def send(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        """Number `(device, data)` records and queue them for the cloud."""


@dataclass(slots=True, eq=False)
class _Batch:
    kind: str
    unacked: set[int]
    lo: int
    hi: int
    payload: bytes
    mid: int | None  # its packet id, until the broker acknowledges it
    delivered: int = 0  # the link's delivered bytes when it was sent
    delivered_at: float = 0.0
    app_limited: bool = False
    puback_at: float | None = None  # the broker has it (latest send)
    deadline: float = math.inf  # for the cloud's ack
    rto: float = 0.0
    tries: int = 1
    replayed: bool = False  # sent again by the MQTT client after a reconnect


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
        ack_timeout: float = 5.0,
        max_rate: float | None = None,
        stall_after: float = STALL_AFTER,
        behind_after: float = BEHIND_AFTER,
    ) -> None:
        self.gateway_id = gateway_id
        self.outbox = outbox
        self._metrics = metrics
        self._log = RateLimitedLog(log)
        self._clock = clock
        self._flush_interval = flush_interval
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        self._max_inflight = max_inflight
        self._max_rate = max_rate
        self._stall_after = stall_after
        self._behind_after = behind_after
        self._tokens = float(batch_records)
        self._tokens_at = time.monotonic()
        self._cursor = dict.fromkeys(KINDS, 0)
        self._batches: dict[str, deque[_Batch]] = {k: deque() for k in KINDS}
        self._by_mid: dict[int, _Batch] = {}
        self.timer = AckTimer(initial=ack_timeout)
        self.rate = LinkRate()
        self.last_ack_at: float | None = None  # monotonic
        self._waiting_since: float | None = None  # monotonic: records waiting, no ack since
        # The one warning of a cloud that does not answer (`_warn_unanswered`): when it was
        # logged (None: not now), and since when the current connection has been up.
        self._unanswered_since: float | None = None
        self._link_up = (-1, 0.0)  # (the link's generation, when first seen)
        self._pinged_at = 0.0
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        self.link: MqttLink | None = None
        # Signs every batch (fogline.signing); None only in the explicit unsigned dev mode.
        self.signer: Signer | None = None
        self.ack_topic = downlink_topic(gateway_id, "ack")
        self.counts = metrics.uplink
        self.storage_error: str | None = None  # why the last commit failed, while it does
        self.storage_failing_since = 0.0
        metrics.gauges["outbox_records"] = lambda: {(): outbox.depth}
        metrics.gauges["outbox_bytes"] = lambda: {(): outbox.bytes}
        # Appended, not yet in a group commit: 0 means a crash now loses nothing.
        metrics.gauges["outbox_uncommitted"] = lambda: {(): outbox.buffered}
        metrics.gauges["outbox_evicted"] = lambda: {
            (("kind", k),): n for k, n in outbox.evicted.items()
        }
        metrics.gauges["outbox_expired"] = lambda: {
            (("kind", k),): n for k, n in outbox.expired.items()
        }
        metrics.gauges["uplink_inflight_batches"] = lambda: {
            (("kind", k),): len(q) for k, q in self._batches.items()
        }
        metrics.gauges["uplink_awaiting_puback"] = lambda: {
            (): sum(1 for b in self._by_mid.values() if b.puback_at is None)
        }
        metrics.gauges["uplink_connected"] = lambda: {(): int(self._connected())}
        metrics.gauges["uplink_degraded"] = lambda: {(): int(bool(self.problems()))}
        metrics.gauges["uplink_last_ack_age_seconds"] = lambda: (
            {} if self.last_ack_at is None else {(): round(time.monotonic() - self.last_ack_at, 3)}
        )
        metrics.gauges["uplink_backlog_records"] = lambda: {(): outbox.pending}
        metrics.gauges["uplink_backlog_bytes"] = lambda: {(): outbox.bytes}
        metrics.gauges["uplink_backlog_oldest_age_seconds"] = lambda: {
            (): round(outbox.oldest_age(self._clock.now()) or 0.0, 3)
        }
        metrics.gauges["uplink_budget_bytes"] = lambda: {(): self.rate.budget}
        metrics.gauges["uplink_ack_timeout_seconds"] = lambda: {(): round(self.timer.rto, 3)}

    @property
    def pending(self) -> int:
        return self.outbox.pending

    # -- the sink -------------------------------------------------------------------------

    def send(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        for device, data in records:
            try:
                self.outbox.append(kind, device, data)
            except UnserialisableRecordError as exc:
                # One record, not the batch: the others are numbered and kept.
                self._metrics.rejects[("uplink", "unserialisable")] += 1
                self._log.warning("unserialisable", str(exc))
        if self.outbox.urgent or self.outbox.buffered >= self.outbox.flush_records:
            self._flush_now.set()

    # -- from the link --------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic != self.ack_topic:
            return
        try:
            ranges = decode_ack(payload)
        except ValueError as exc:
            self.counts["bad_acks"] += 1
            self._metrics.rejects[("uplink", "bad_ack")] += 1
            log.warning("ignored a bad ack on %s: %s", topic, exc)
            return
        self.on_ack(ranges)

    def on_ack(self, ranges: list[tuple[int, int]]) -> None:
        """Forget what the cloud stored; only seqs sent and not yet acknowledged count."""
        now = time.monotonic()
        acked: list[int] = []
        for kind, queue in self._batches.items():
            if not queue:
                continue
            for batch in queue:
                for lo, hi in ranges:
                    if lo <= batch.hi and hi >= batch.lo:
                        hit = [s for s in batch.unacked if lo <= s <= hi]
                        batch.unacked.difference_update(hit)
                        acked += hit
            done = [b for b in queue if not b.unacked]
            if not done:
                continue
            for batch in done:
                if batch.tries == 1 and batch.puback_at is not None and not batch.replayed:
                    self.timer.sample(now - batch.puback_at)
                if batch.mid is not None:
                    self._by_mid.pop(batch.mid, None)
            self._batches[kind] = deque(b for b in queue if b.unacked)
        # Ranges, not seqs: a forged range may name 2**64 of them.
        if len(acked) < sum(hi - lo + 1 for lo, hi in ranges):
            self.counts["stale_acks"] += 1
        if acked:
            self.outbox.ack(to_ranges(acked))
            self.counts["acked_records"] += len(acked)
            if self._unanswered_since is not None and self._waiting_since is not None:
                log.info(
                    "acks from the cloud again on %s after %.0f s without",
                    self.link.url if self.link else "the uplink",
                    now - self._waiting_since,
                )
            self._unanswered_since = None
            self.last_ack_at = now
            self._waiting_since = None
            self._end_backoff()
            self._wake.set()

    def _end_backoff(self) -> None:
        """An ack proves the cloud answers again: a batch whose timeout was doubled while it
        did not is owed one measured timeout from its last send, no longer. Found when a
        cloud that subscribed late left the alerts sent before it waiting up to a minute for
        their next try, well after everything sent later was stored."""
        rto = self.timer.rto
        for queue in self._batches.values():
            for batch in queue:
                if batch.tries > 1 and batch.rto > rto:
                    batch.rto = rto
                    if batch.puback_at is not None:
                        batch.deadline = min(batch.deadline, batch.puback_at + rto)

    def on_puback(self, mid: int, sent_at: float, size: int) -> None:
        """The broker has a batch: the link's rate is sampled, the cloud's timer starts.

        The packet id is forgotten here, at once: the client gives it to a later publish,
        and a batch that kept it would, when resent or acknowledged, take that publish's
        entry with it (measured: batches left waiting forever for a PUBACK that had come).
        """
        batch = self._by_mid.pop(mid, None)
        if batch is None:
            return
        batch.mid = None
        now = time.monotonic()
        if not batch.replayed:
            self.rate.on_ack(
                now,
                size,
                sent_at,
                batch.delivered,
                batch.delivered_at,
                batch.app_limited,
            )
        batch.puback_at = now
        batch.rto = max(batch.rto, self.timer.rto)
        batch.deadline = now + batch.rto
        self._wake.set()

    def on_reconnect(self, session_present: bool) -> None:
        if session_present:
            # The broker kept what it acknowledged; the MQTT client sends the rest again.
            now = time.monotonic()
            self.counts["replayed_bytes"] += self.link.inflight_bytes if self.link else 0
            for queue in self._batches.values():
                for batch in queue:
                    if batch.puback_at is None:
                        batch.replayed = True
                    else:
                        batch.deadline = now + batch.rto
        else:
            self._restart("the broker kept no session")
        self._wake.set()

    def _restart(self, why: str) -> None:
        if any(self._batches.values()):
            log.info("uplink: sending unacknowledged records again (%s)", why)
        for queue in self._batches.values():
            queue.clear()
        self._by_mid.clear()
        self._cursor = dict.fromkeys(KINDS, 0)
        self._wake.set()

    # -- tasks ----------------------------------------------------------------------------

    async def run_commits(self) -> None:
        """Group commit: every `flush_interval`, or as soon as `COMMIT_GAP` allows when an
        alert or a full group waits.

        A commit that fails (a full disk, an I/O error) is counted, reported in `problems`,
        and tried again with backoff. Nothing is lost meanwhile: the records, the state and
        the acknowledgements wait in memory together, and the broker keeps every reading not
        acknowledged, which also bounds intake (it sends no more than its in-flight window).
        """
        checkpointed = committed = time.monotonic()
        retry = COMMIT_RETRY[0]
        while True:
            if time.monotonic() - checkpointed > CHECKPOINT_EVERY:
                with contextlib.suppress(sqlite3.Error):  # the next commit says what is wrong
                    await asyncio.to_thread(self.outbox.checkpoint)
                checkpointed = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self._flush_interval)
            gap = COMMIT_GAP - (time.monotonic() - committed)
            if gap > 0:
                await asyncio.sleep(gap)
            self._flush_now.clear()
            if not self.outbox.wants_commit:
                continue
            committed = time.monotonic()
            try:
                appended = self.outbox.flush()
            except sqlite3.Error as exc:
                self._commit_failed(exc)
                await asyncio.sleep(retry)
                retry = min(retry * 2, COMMIT_RETRY[1])
                continue
            if self.storage_error is not None:
                log.warning("the outbox commits again after %s", self.storage_error)
                self.storage_error = None
            retry = COMMIT_RETRY[0]
            if appended:
                self._wake.set()

    def _commit_failed(self, exc: sqlite3.Error) -> None:
        self.counts["commit_failures"] += 1
        if self.storage_error is None:
            self.storage_error = str(exc)
            self.storage_failing_since = time.monotonic()
            log.error(
                "the outbox cannot commit (%s) in %s: readings stay unacknowledged at the "
                "broker and local actions go on; free space there and it resumes by itself",
                exc,
                self.outbox.path.parent,
            )

    async def run_publish(self, link: MqttLink) -> None:
        self.link = link
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_deadline())
            self._wake.clear()
            if link.connected.is_set():
                self.pump(link)

    def _next_deadline(self) -> float:
        now = time.monotonic()
        ahead = [b.deadline for q in self._batches.values() for b in q if b.deadline > now]
        return min(0.5, max(0.01, min(ahead, default=math.inf) - now))

    def pump(self, link: MqttLink) -> int:
        """Send again what timed out, then new batches within the windows. Returns records sent."""
        self.link = link
        now = time.monotonic()
        if self.outbox.pending and self._waiting_since is None:
            self._waiting_since = now
        self._warn_unanswered(link, now)
        oldest = link.oldest_inflight()
        if oldest is not None:
            batch = self._by_mid.get(oldest[0])
            self.rate.stalled(now, oldest[1], batch.delivered if batch else self.rate.delivered)
        self._resend_overdue(link, now)
        sent = 0
        fresh: list[_Batch] = []
        starved = True  # stopped because nothing was left to send
        for kind in SEND_ORDER:
            urgent = kind == "alert"
            while self._window_open(kind):
                room = self.rate.budget - link.inflight_bytes
                if not urgent and room <= 0:
                    starved = False
                    break
                limit = self._rate_limit()
                if limit == 0:  # over the rate cap: the next wake-up continues
                    return sent
                max_bytes = max(MIN_BATCH_BYTES, min(self._batch_bytes, self.rate.budget // 4))
                run: tuple[int, bytes, bytes] | None = None
                if self.signer is None:
                    rows = self.outbox.read(kind, self._cursor[kind], limit, max_bytes)
                else:  # one unbroken run of the kind's hash chain
                    rows, run = self.outbox.read_linked(kind, self._cursor[kind], limit, max_bytes)
                if not rows:
                    break
                payload = compress(self._encode(kind, rows, run))
                idle = link.inflight_count == 0
                mid = link.publish_tracked(uplink_topic(self.gateway_id, kind), payload)
                if mid is None:
                    return sent
                delivered, delivered_at = self.rate.on_send(now, idle)
                seqs = {r[0] for r in rows}
                batch = _Batch(
                    kind, seqs, rows[0][0], rows[-1][0], payload, mid, delivered, delivered_at
                )
                self._batches[kind].append(batch)
                self._by_mid[mid] = batch
                fresh.append(batch)
                self._cursor[kind] = rows[-1][0]
                self._spend(len(rows))
                self._metrics.outputs[kind] += len(rows)
                self.counts["records_sent"] += len(rows)
                self.counts["payload_bytes"] += len(payload)
                self.counts["wire_bytes"] += link.packet_size(mid)
                sent += len(rows)
            else:
                starved = False
        if starved:
            for batch in fresh:
                batch.app_limited = True
        return sent

    def _warn_unanswered(self, link: MqttLink, now: float) -> None:
        """One warning when records have waited `stall_after` on a connected link with no
        ack (a gateway started without a cloud, a cloud subscribed elsewhere, a replica
        gone with its share); one line when acks resume. The resends in between are DEBUG:
        at INFO they were a line every 2 s for as long as the cloud was away."""
        if link.generation != self._link_up[0]:
            self._link_up = (link.generation, now)
        if self._waiting_since is None or self._unanswered_since is not None:
            return
        quiet = now - max(self._waiting_since, self._link_up[1])
        if quiet >= self._stall_after:
            self._unanswered_since = now
            log.warning(
                "no ack from the cloud on %s for %.0f s; is `fogline cloud` running and "
                "subscribed there?",
                link.url,
                quiet,
            )

    def _encode(self, kind: str, rows: list[Entry], link: tuple[int, bytes, bytes] | None) -> bytes:
        """One batch, signed, with its place in its kind's hash chain (`fogline.chain`):
        the record its first one follows (`prev`) and the hash of its last (`head`). The
        rows are one unbroken run of the chain (`Outbox.read_linked`); a resend sends
        these same bytes again.
        """
        if self.signer is None:
            return encode_batch(self.gateway_id, kind, rows, self._clock.now())
        chained = None if link is None else (link[0], link[1], rows[-1][0], link[2])
        body = encode_batch(
            self.gateway_id, kind, rows, self._clock.now(), chained, self.signer.kid
        )
        return self.signer.sign(body)

    def _window_open(self, kind: str) -> bool:
        """Room for another batch of `kind` waiting for the cloud: `max_inflight` full-size
        batches' worth of bytes, in at most `MAX_INFLIGHT_BATCHES` batches. Counting bytes,
        not batches, keeps a long link busy when the budget cuts batches small (measured:
        8 batches of 1 KB per 1.4 s ack round trip could not carry a 300 ms link's load)."""
        queue = self._batches[kind]
        if len(queue) >= MAX_INFLIGHT_BATCHES:
            return False
        waiting = sum(len(b.payload) for b in queue)
        return waiting < self._max_inflight * self._batch_bytes

    def _resend_overdue(self, link: MqttLink, now: float) -> None:
        """Send again, oldest first and within the budget, each batch whose ack is overdue.

        Each such batch doubles its own timeout, so a cloud that is away costs a window per
        minute at most. Nothing goes before the broker has said something since the
        deadline: a link that is down (or flapping) delays the ack, it does not lose it, and
        the connection's own watchdog deals with a dead one; a ping asks at once. Every
        overdue batch goes, not one probe per kind: a shared
        subscription gives an absent replica its share of messages (mosquitto 2), and a
        probe that lands there again would hold the rest back for a whole timeout.
        """
        for kind in SEND_ORDER:
            for batch in self._batches[kind]:
                if batch.deadline > now:
                    continue
                if link.last_heard < batch.deadline:
                    if now - self._pinged_at > 1.0:
                        link.ping()
                        self._pinged_at = now
                    continue
                if kind != "alert" and link.inflight_bytes >= self.rate.budget:
                    return
                mid = link.publish_tracked(uplink_topic(self.gateway_id, kind), batch.payload)
                if mid is None:
                    return
                self.counts["ack_timeouts"] += 1
                self.counts["resent_batches"] += 1
                self.counts["records_resent"] += len(batch.unacked)
                self.counts["wire_bytes"] += link.packet_size(mid)
                if batch.mid is not None:
                    self._by_mid.pop(batch.mid, None)
                batch.mid = mid
                self._by_mid[mid] = batch
                batch.tries += 1
                batch.rto = self.timer.backoff(batch.rto or self.timer.rto)
                batch.puback_at, batch.deadline = None, math.inf
                batch.delivered, batch.delivered_at = self.rate.on_send(now, False)
                batch.app_limited = True  # a resend says nothing about the link's rate
                log.debug(
                    "uplink: no ack for %s seqs %d..%d; sent again (try %d, next wait %.1fs)",
                    kind,
                    batch.lo,
                    batch.hi,
                    batch.tries,
                    batch.rto,
                )

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

    # -- health -----------------------------------------------------------------------------

    def _connected(self) -> bool:
        return self.link is not None and self.link.connected.is_set()

    def problems(self) -> list[str]:
        """Why the uplink is degraded, in words; empty when it keeps up."""
        now = time.monotonic()
        reasons: list[str] = []
        link = self.link
        if link is not None and link.disconnected_at is not None:
            down = now - link.disconnected_at
            if down > DISCONNECTED_GRACE:
                reasons.append(f"uplink broker {link.url} unreachable for {down:.0f}s")
        if self.storage_error is not None:
            failing = now - self.storage_failing_since
            reasons.append(
                f"the outbox cannot commit for {failing:.0f}s ({self.storage_error}): "
                f"free space in {self.outbox.path.parent}"
            )
        pending = self.outbox.pending
        if pending and self._waiting_since is not None:
            quiet = now - self._waiting_since
            if quiet > self._stall_after:
                reasons.append(f"no ack from the cloud for {quiet:.0f}s, {pending} records waiting")
        oldest = self.outbox.oldest_age()
        if oldest is not None and oldest > self._behind_after:
            reasons.append(f"falling behind: the oldest record has waited {oldest:.0f}s")
        return reasons

    def status(self) -> dict[str, Any]:
        """The uplink's part of the health record and of `/healthz`."""
        now = time.monotonic()
        reasons = self.problems()
        oldest = self.outbox.oldest_age()
        last_ack = None if self.last_ack_at is None else round(now - self.last_ack_at, 3)
        bandwidth = self.rate.bandwidth
        return {
            "status": "degraded" if reasons else "ok",
            "reasons": reasons,
            "connected": self._connected(),
            "last_ack_age_s": last_ack,
            "backlog_records": self.outbox.pending,
            "backlog_bytes": self.outbox.bytes,
            "oldest_age_s": None if oldest is None else round(oldest, 3),
            "inflight_batches": sum(len(q) for q in self._batches.values()),
            "ack_timeout_s": round(self.timer.rto, 3),
            "ack_rtt_s": None if self.timer.srtt is None else round(self.timer.srtt, 4),
            "link_rtt_s": None if self.rate.min_rtt is None else round(self.rate.min_rtt, 4),
            "link_bytes_per_s": None if bandwidth is None else round(bandwidth),
            "budget_bytes": self.rate.budget,
            "counts": dict(self.counts),
        }
