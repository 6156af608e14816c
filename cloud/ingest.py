"""Uplink ingest: a shared MQTT subscription, drained in batches into the store.

```
broker --$share/fogline/fogline/+/up/#--> on_message   O(1): append to a deque
                                          drain task     take up to N messages ->
                                          worker thread  decode + one transaction
                                          drain task     publish one ack per message
```

Several replicas join the same shared subscription and split the messages; each keeps a
persistent session (MQTT 5 session expiry), so what is published while it is down waits
at the broker. The store ignores what it already has, so whichever replica receives a
retransmission acknowledges it again with the same ranges. Mosquitto 2.0 keeps giving an
absent member its share (measured: 10 of 20 messages queued for the one of two replicas
that was away); those wait for it, while the gateways, missing their acks, resend them
and the other replicas store them.

gmqtt acknowledges (PUBACK) a message to the broker as soon as our callback returns;
the cloud's own ack on `fogline/<gateway>/down/ack` is what lets the gateway forget a
record, so a message lost between the two (process killed) is sent again from the
gateway's outbox. A clean shutdown stops reading the socket first and stores everything
already received before it disconnects. Acks leave on a second connection, which never
pauses (see `Ingest.__init__`).

When the queue is full (messages or bytes) the subscriber stops reading its socket and
the broker holds the backlog. Measured on this machine with batches of 500 digests
(decode + store): about 40k records/s into SQLite and 13k into PostgreSQL per replica;
a drain of 32 such batches takes about 0.3 s on SQLite and 1 s on PostgreSQL, while one
batch per transaction is hardly slower per record, so drains stay small to keep acks
prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Self

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from cloud.metrics import CloudMetrics
from cloud.parse import DEFAULT_MAX_PAYLOAD, Batch, RejectError, parse_message
from cloud.store import Store, WriteReport
from cloud.trust import CloudTrust, Link
from fogline.envelope import downlink_topic, encode_ack, to_ranges, uplink_topic
from fogline.mqtt import Backoff, MqttLink
from fogline.tls import TlsFiles
from fogline.urls import BrokerUrl

log = logging.getLogger("fogline.cloud.ingest")

SUBSCRIPTION = "$share/fogline/fogline/+/up/#"
SESSION_EXPIRY = 300
"""Seconds the broker keeps a replica's session (`fogline-cloud-<replica>`) and its queue
while it is away (`fogline cloud --session-expiry`). What it trades: a replica that
restarts within it (a crash, an upgrade) finds what was published meanwhile waiting; but
until it expires, a replica gone for good (renamed or removed) stays a member of the
shared subscription, and mosquitto keeps queueing its share of every gateway's batches for
it: those gateways see ack timeouts and resend. It was a day, and a replica that ran once
under another name cost the gateways a day of timeouts. Nothing is lost with a short one:
a gateway keeps every record until the cloud acknowledges it, and the first ack after an
outage ends the resends' backoff."""
MAX_SESSION_EXPIRY = 2**32 - 1  # MQTT 5's limit


@dataclass(frozen=True)
class IngestOptions:
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_queue: int = 10_000  # messages held before we stop reading the socket...
    max_queue_bytes: int = 64 * 1024 * 1024  # ...or bytes of payload
    drain_messages: int = 32  # per transaction
    drain_bytes: int = 8 * 1024 * 1024  # of payload per transaction
    session_expiry: int = SESSION_EXPIRY
    shutdown_deadline: float = 10.0
    log_every: float = 10.0  # seconds between log lines of one reject reason


class RejectLog:
    """Log each reject reason at most once per `every` seconds, with a count of the rest."""

    def __init__(self, every: float) -> None:
        self._every = every
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def __call__(self, topic: str, exc: RejectError) -> None:
        now = time.monotonic()
        if now - self._last.get(exc.reason, -self._every) < self._every:
            self._quiet[exc.reason] = self._quiet.get(exc.reason, 0) + 1
            return
        quiet = self._quiet.pop(exc.reason, 0)
        self._last[exc.reason] = now
        more = f" (and {quiet} more since the last report)" if quiet else ""
        log.warning("rejected a message on %s: %s%s", topic, exc, more)


@dataclass
class DrainOutcome:
    acks: list[tuple[str, list[tuple[int, int]]]] = field(default_factory=list)
    report: WriteReport = field(default_factory=WriteReport)
    seconds: float = 0.0
    error: SQLAlchemyError | None = None  # the transaction failed: retry...
    retry: list[tuple[str, bytes]] = field(default_factory=list)  # ...these (not the rejects)


class Ingest:
    """`async with Ingest(...)` returns once subscribed; leaving it stores what was read."""

    def __init__(
        self,
        store: Store,
        broker: BrokerUrl,
        replica: str,
        metrics: CloudMetrics,
        options: IngestOptions | None = None,
        *,
        wait_connected: float | None = None,
        tls: TlsFiles | None = None,
        trust: CloudTrust | None = None,
    ) -> None:
        self.replica = replica
        self.trust = trust  # signatures and chain links checked first (cloud.trust)
        self.options = options or IngestOptions()
        self.metrics = metrics
        self._store = store
        self.link = MqttLink(
            broker,
            f"fogline-cloud-{replica}",
            name=f"cloud[{replica}].ingest",
            subscriptions=[(SUBSCRIPTION, 1)],
            on_message=self._on_message,
            session_expiry=self.options.session_expiry,
            wait_connected=wait_connected,
            tls=tls,
        )
        # Acks leave on a connection of their own: pausing the subscriber's socket (for
        # backpressure, or at shutdown) also holds back the PUBACKs of what it publishes,
        # and with the broker's in-flight window full the ack publisher would wait forever.
        self.acks = MqttLink(
            broker,
            f"fogline-cloud-{replica}-acks",
            name=f"cloud[{replica}].acks",
            wait_connected=wait_connected,
            tls=tls,
        )
        self._links = contextlib.AsyncExitStack()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._paused = False
        self._closing = False  # intake stopped for good
        self._stopping = False  # the drain loop returns once the queue is empty
        self._reject_log = RejectLog(self.options.log_every)
        self._tasks: asyncio.TaskGroup | None = None
        metrics.gauges["queue_depth"] = lambda: len(self._queue)

    # -- intake (event loop, O(1)) ----------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        self._queue.append((topic, payload))
        self._queued_bytes += len(payload)
        self.metrics.messages_in += 1
        self.metrics.bytes_in += len(payload)
        if not self._paused and (
            len(self._queue) >= self.options.max_queue
            or self._queued_bytes >= self.options.max_queue_bytes
        ):
            self._paused = True  # the broker keeps the rest until we catch up
            self.link.pause_reading()
        self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------

    def connected(self) -> bool:
        return self.link.subscribed.is_set() and self.acks.connected.is_set()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as links:
            await links.enter_async_context(self.acks)
            await links.enter_async_context(self.link)
            self._links = links.pop_all()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._tasks.create_task(self._run(), name=f"cloud[{self.replica}].ingest.drain")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._stop_intake()
            self._stopping = True
            self._wake.set()
            if self._tasks is not None:
                try:
                    async with asyncio.timeout(self.options.shutdown_deadline):
                        await self._tasks.__aexit__(None, None, None)
                except TimeoutError:
                    log.warning(
                        "%s: %d messages not stored within %.0fs; the gateways will resend them",
                        self.link.name,
                        len(self._queue),
                        self.options.shutdown_deadline,
                    )
            await self.acks.drain(within=2.0)  # let the broker take the last acks
        finally:
            await self._links.aclose()

    async def _stop_intake(self) -> None:
        """Stop reading the socket, then let gmqtt hand over what it already read.

        gmqtt parses from its stream buffer in its own task, so a few messages may still
        arrive after the pause; they were acknowledged to the broker and must be stored.
        """
        self._closing = True  # never resume reading from here on
        self.link.pause_reading()
        seen = -1
        while seen != self.metrics.messages_in:
            seen = self.metrics.messages_in
            await asyncio.sleep(0.05)

    # -- the drain loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(base=0.5, cap=30.0)
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            outcome = await asyncio.to_thread(self._drain, self._take())
            if outcome.error is not None:  # the database is away or busy: keep them, retry
                self._queue.extendleft(reversed(outcome.retry))
                self._queued_bytes += sum(len(p) for _, p in outcome.retry)
                self.metrics.drain_failures += 1
                delay = backoff.next()
                log.warning(
                    "%s: storing %d messages failed (%s); retrying in %.1fs",
                    self.link.name,
                    len(outcome.retry),
                    str(outcome.error).splitlines()[0],
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self.metrics.drain.observe(outcome.seconds)
            self.metrics.stored.update(outcome.report.stored)
            self.metrics.duplicates.update(outcome.report.duplicates)
            for gateway, ranges in outcome.acks:
                await self._ack(gateway, ranges)
            if (
                self._paused
                and not self._closing
                and len(self._queue) <= self.options.max_queue // 2
                and self._queued_bytes <= self.options.max_queue_bytes // 2
            ):
                self._paused = False
                self.link.resume_reading()

    async def _ack(self, gateway: str, ranges: list[tuple[int, int]]) -> None:
        """Publish one ack with QoS 1; unsent (link down), the gateway simply resends."""
        topic, body = downlink_topic(gateway, "ack"), encode_ack(gateway, ranges)
        if self.trust is not None:
            body = self.trust.sign(body)
        for _ in range(3):
            try:
                sent = self.acks.publish(topic, body, 1)
            except OverflowError:
                # gmqtt refuses a QoS 1 publish beyond the broker's receive maximum
                # (mosquitto: 20 in flight); wait for PUBACKs to free the window.
                await self.acks.drain(within=5.0)
                continue
            if sent:
                self.metrics.acks_published += 1
                return
            break
        self.metrics.acks_unsent += 1

    def _take(self) -> list[tuple[str, bytes]]:
        taken: list[tuple[str, bytes]] = []
        size = 0
        while self._queue and len(taken) < self.options.drain_messages:
            if taken and size + len(self._queue[0][1]) > self.options.drain_bytes:
                break
            taken.append(self._queue.popleft())
            size += len(taken[-1][1])
        self._queued_bytes -= size
        return taken

    # -- in the worker thread ---------------------------------------------------------------

    def _drain(self, messages: list[tuple[str, bytes]]) -> DrainOutcome:
        """Decode and store one drain; runs in a worker thread, one at a time.

        A database error comes back in the outcome (the loop retries); anything else is a
        bug and ends the ingest task, and with it the process, loudly.
        """
        started = time.perf_counter()
        parsed: list[tuple[tuple[str, bytes], Batch]] = []
        links: list[Link | None] = []
        for message in messages:
            try:
                topic, payload = message
                link = None
                if self.trust is not None:
                    payload, link = self.trust.open(topic, payload, self.options.max_payload)
                parsed.append((message, parse_message(topic, payload, self.options.max_payload)))
                links.append(link)
            except RejectError as exc:
                self._reject(message[0], exc)
        outcome = DrainOutcome()
        try:
            # Signatures were checked before parsing; a batch whose chain link disagrees
            # with what is stored is refused whole here, before any of it (or a dead
            # letter of it) is written.
            if self.trust is not None:
                parsed = self._linked(parsed, links)
            batches: list[Batch] = []
            for (topic, _), batch in parsed:
                if batch.dead or batch.dropped:
                    self._refused_records(topic, batch)
                batches.append(batch)
                if (letters := batch.dead_letters()) is not None:
                    batches.append(letters)  # stored and acked beside the good records
            stored = self._write(batches, outcome.report)
        except SQLAlchemyError as exc:
            outcome.error = exc
            outcome.retry = [message for message, _ in parsed]
            return outcome
        outcome.acks = [(b.gateway, to_ranges(b.seqs)) for b in stored if b.entries]
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _write(self, batches: list[Batch], report: WriteReport) -> list[Batch]:
        """Write all in one transaction; if the data itself fails, isolate the culprit."""
        try:
            done = self._store.write(batches)
        except (DataError, IntegrityError) as exc:
            if len(batches) == 1:
                where = uplink_topic(batches[0].gateway, batches[0].kind)
                self._reject(where, RejectError("store", str(exc).splitlines()[0]))
                return []
            kept: list[Batch] = []
            for batch in batches:
                kept += self._write([batch], report)
            return kept
        report.stored.update(done.stored)
        report.duplicates.update(done.duplicates)
        return batches

    def _linked(
        self, parsed: list[tuple[tuple[str, bytes], Batch]], links: list[Link | None]
    ) -> list[tuple[tuple[str, bytes], Batch]]:
        """The batches whose chain links agree with what is stored; the others refused."""
        verdicts = self.trust.check_chains(links) if self.trust is not None else []
        kept = []
        for (message, batch), link, problem in zip(parsed, links, verdicts, strict=True):
            if problem is None:
                head = None if link is None else (link.head_seq, link.head_hash)
                kept.append((message, dataclasses.replace(batch, head=head)))
            else:
                self._reject(message[0], RejectError("chain", problem))
        return kept

    def _refused_records(self, topic: str, batch: Batch) -> None:
        """Count (and log, at a bounded rate) the records refused from one message."""
        for reason, n in (("dead_letter", len(batch.dead)), ("bad_seq", batch.dropped)):
            if n:
                self.metrics.rejects[reason] += n
        first = batch.dead[0][2]["reason"] if batch.dead else "a seq outside 1..2^63-1"
        detail = f"{len(batch.dead)} dead letter(s), {batch.dropped} bad seq(s); first: {first}"
        self._reject_log(topic, RejectError("record", detail))

    def _reject(self, topic: str, exc: RejectError) -> None:
        self.metrics.rejects[exc.reason] += 1
        self._reject_log(topic, exc)
