"""Ingest against a real mosquitto and real databases: idempotent, acknowledged, shared
between replicas, robust to bad payloads, and lossless across a restart."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import orjson
import pytest
from cloudkit import NOW, Database, digest, digests, payload
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from support import Broker, Collector, eventually

from cloud.db import make_engine, migrate
from cloud.gaps import loss_report
from cloud.ingest import Ingest, IngestOptions
from cloud.metrics import CloudMetrics
from cloud.models import ChainHead, Digest, Gateway, Received
from cloud.provision import add_gateway
from cloud.store import Store
from cloud.trust import CloudTrust
from fogline import chain, signing
from fogline.envelope import decode_ack, encode_batch, uplink_topic
from fogline.urls import parse_broker_url

Start = Callable[..., Awaitable[Ingest]]


@pytest.fixture
async def running(broker: Broker, store: Store) -> AsyncIterator[Start]:
    """Start ingest replicas on the test's broker and store; all are stopped at the end."""
    async with AsyncExitStack() as stack:

        async def start(replica: str = "r1", **options: int) -> Ingest:
            ingest = Ingest(
                store,
                parse_broker_url(broker.url),
                replica,
                CloudMetrics(),
                IngestOptions(**options),
            )
            return await stack.enter_async_context(ingest)

        yield start


def acks(watch: Collector, gateway: str) -> list[list[tuple[int, int]]]:
    return [decode_ack(p) for _, p in watch.on(f"fogline/{gateway}/down/ack")]


async def test_the_same_batch_twice_is_stored_once_and_acked_twice(
    running: Start, store: Store, collector_factory
) -> None:
    watch = collector_factory(["fogline/+/down/ack"])
    ingest = await running()
    body = digests("gw1", range(1, 501))
    watch.publish(uplink_topic("gw1", "digest"), body)
    watch.publish(uplink_topic("gw1", "digest"), body)
    await eventually(lambda: len(acks(watch, "gw1")) == 2, what="two acks")
    assert acks(watch, "gw1") == [[(1, 500)], [(1, 500)]]
    assert store.count(Digest) == 500
    assert ingest.metrics.stored == {"digest": 500}
    assert ingest.metrics.duplicates == {"digest": 500}
    assert ingest.metrics.acks_published == 2


async def test_compressed_and_plain_payloads(
    running: Start, store: Store, collector_factory
) -> None:
    watch = collector_factory(["fogline/+/down/ack"])
    await running()
    records = [(s, "line-1/m-02", digest(NOW + s)) for s in range(1, 201)]
    packed = payload("gw2", "digest", records[:100], compressed=True)
    assert packed[:1] != b"{"
    watch.publish(uplink_topic("gw2", "digest"), packed)
    watch.publish(uplink_topic("gw2", "digest"), payload("gw2", "digest", records[100:]))
    await eventually(lambda: len(acks(watch, "gw2")) == 2, what="two acks")
    assert sorted(acks(watch, "gw2")) == [[(1, 100)], [(101, 200)]]
    assert store.count(Digest) == 200


async def test_bad_payloads_are_counted_by_reason_and_ingest_goes_on(
    running: Start, store: Store, collector_factory, caplog: pytest.LogCaptureFixture
) -> None:
    watch = collector_factory(["fogline/+/down/ack"])
    ingest = await running(max_payload=64 * 1024)
    topic = uplink_topic("gw1", "digest")
    bad = [
        (topic, b"{this is not json"),
        (topic, b'{"v": 1, "gateway": "gw1", "kind": "digest", "records": [{"seq": 1}]}'),
        (topic, b'{"v": 9, "gateway": "gw1", "kind": "digest", "records": []}'),
        (topic, b"{" + b" " * (100 * 1024) + b"}"),
        (uplink_topic("gw2", "digest"), digests("gw1", [5])),
        (topic, orjson.dumps({**orjson.loads(digests("gw1", [6])), "v": "1"})),
    ]
    watch.publish(topic, digests("gw1", range(1, 4)))
    for t, body in bad:
        watch.publish(t, body)
    watch.publish(topic, digests("gw1", range(4, 6)))
    await eventually(lambda: len(acks(watch, "gw1")) == 2, what="acks of the good batches")
    await eventually(lambda: sum(ingest.metrics.rejects.values()) == 6, what="six rejects")
    assert ingest.metrics.rejects == {
        "corrupt": 1,
        "schema": 1,
        "version": 2,
        "oversized": 1,
        "topic": 1,
    }
    assert sorted(acks(watch, "gw1")) == [[(1, 3)], [(4, 5)]]
    assert store.count(Digest) == 5
    assert "rejected a message on fogline/gw1/up/digest: corrupt: not JSON" in caplog.text
    # Rate-limited: the second "version" reject within 10 s is not logged on its own.
    assert caplog.text.count("version: unknown version") == 1


async def test_a_full_queue_pauses_the_socket_and_loses_nothing(
    running: Start, store: Store, collector_factory
) -> None:
    watch = collector_factory(["fogline/+/down/ack"])
    ingest = await running(max_queue=4, drain_messages=2)
    for i in range(40):
        watch.publish(uplink_topic("gw1", "digest"), digests("gw1", range(i * 5 + 1, i * 5 + 6)))
    await eventually(lambda: len(acks(watch, "gw1")) == 40, what="40 acks")
    assert store.count(Digest) == 200
    assert ingest.metrics.drain.count >= 20


async def test_two_replicas_share_the_subscription(
    running: Start, store: Store, collector_factory
) -> None:
    watch = collector_factory(["fogline/+/down/ack"])
    first, second = await running("r1"), await running("r2")
    for i in range(60):
        gateway = f"gw{i % 3}"
        seqs = range(i // 3 * 10 + 1, i // 3 * 10 + 11)
        watch.publish(uplink_topic(gateway, "digest"), digests(gateway, seqs), qos=1)
    await eventually(lambda: len(watch.on("fogline/")) == 60, what="60 acks")
    assert first.metrics.messages_in > 0
    assert second.metrics.messages_in > 0
    assert first.metrics.messages_in + second.metrics.messages_in == 60
    stored = first.metrics.stored["digest"] + second.metrics.stored["digest"]
    assert stored == 600 == store.count(Digest)
    assert first.metrics.duplicates == second.metrics.duplicates == {}
    with store.engine.connect() as conn:
        for gateway in ("gw0", "gw1", "gw2"):
            loss = loss_report(conn, gateway, 200, 200)
            assert loss.gaps == []
            assert loss.missing == 0


class Publisher(threading.Thread):
    """A gateway stand-in that keeps publishing numbered batches with QoS 1."""

    def __init__(self, collector: Collector, gateway: str, batches: int, per_batch: int) -> None:
        super().__init__(daemon=True)
        self.collector, self.gateway = collector, gateway
        self.batches, self.per_batch = batches, per_batch
        self.sent = 0

    def run(self) -> None:
        topic = uplink_topic(self.gateway, "digest")
        for i in range(self.batches):
            seqs = range(i * self.per_batch + 1, (i + 1) * self.per_batch + 1)
            self.collector.publish(topic, digests(self.gateway, seqs), qos=1)
            self.sent = i + 1
            time.sleep(0.004)


async def test_a_restarted_replica_gets_what_was_published_while_it_was_down(
    broker: Broker, store: Store, collector_factory
) -> None:
    url = parse_broker_url(broker.url)

    def replica(metrics: CloudMetrics, ready: asyncio.Event) -> asyncio.Task[None]:
        async def run() -> None:
            async with Ingest(store, url, "r1", metrics):  # the same client id both times
                ready.set()
                await asyncio.Event().wait()

        return asyncio.create_task(run())

    async def kill(task: asyncio.Task[None]) -> None:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before, after = CloudMetrics(), CloudMetrics()
    ready = asyncio.Event()
    first = replica(before, ready)
    await ready.wait()
    publisher = Publisher(collector_factory([]), "gw1", batches=300, per_batch=10)
    publisher.start()
    await eventually(lambda: publisher.sent >= 60, what="a first part published")
    await kill(first)
    down_at = publisher.sent
    await eventually(lambda: publisher.sent >= down_at + 60, what="publishing while down")
    ready.clear()
    second = replica(after, ready)
    try:
        await ready.wait()
        await eventually(lambda: not publisher.is_alive(), timeout=20, what="the publisher")
        await eventually(lambda: store.count(Received) == 3000, timeout=20, what="all stored")
    finally:
        await kill(second)
    assert before.stored["digest"] >= 600
    assert after.messages_in >= 60  # queued at the broker while the replica was away
    assert before.stored["digest"] + after.stored["digest"] == 3000
    assert before.duplicates == after.duplicates == {}
    assert store.count(Digest) == 3000
    with store.engine.connect() as conn:
        assert tuple(conn.execute(select(Gateway.received, Gateway.max_seq)).one()) == (3000, 3000)
        assert loss_report(conn, "gw1", 3000, 3000).gaps == []


async def test_a_value_the_database_refuses_is_rejected_alone(
    database: Database, store: Store
) -> None:
    """PostgreSQL cannot store NUL in text: that batch is rejected, the rest of its drain
    is stored. SQLite can, so there both are stored."""
    ingest = Ingest(store, parse_broker_url("mqtt://127.0.0.1:1"), "r1", CloudMetrics())
    nul = payload("gw1", "digest", [(1, "line-1/\x00", digest())])
    good = digests("gw1", [2, 3])
    outcome = ingest._drain(
        [(uplink_topic("gw1", "digest"), nul), (uplink_topic("gw1", "digest"), good)]
    )
    assert outcome.error is None
    if database.kind == "postgresql":
        assert outcome.acks == [("gw1", [(2, 3)])]
        assert ingest.metrics.rejects == {"store": 1}
        assert store.count(Digest) == 2
    else:
        assert outcome.acks == [("gw1", [(1, 1)]), ("gw1", [(2, 3)])]
        assert store.count(Digest) == 3


def signed_digests(signer: signing.Signer, records: list[tuple[int, str, dict]]) -> bytes:
    seqs, devices, data = zip(*records, strict=True)
    own = chain.link(chain.GENESIS, "digest", seqs, devices, [orjson.dumps(x) for x in data])
    link = (0, chain.GENESIS, records[-1][0], own)
    return signer.sign(encode_batch("gw1", "digest", records, NOW, link, signer.kid))


async def test_a_chain_head_is_stored_with_its_records_and_only_then(
    database: Database, store: Store
) -> None:
    """A signed batch's head commits with its records: not when the database refuses
    them (PostgreSQL and NUL), and also for a batch whose records were all held."""
    key = Ed25519PrivateKey.generate()
    cloud_key = Ed25519PrivateKey.generate()
    add_gateway(store.engine, "gw1", cloud_key, public_key=signing.public_text(key))
    trust = CloudTrust(store.engine, signing.Signer(cloud_key), allow_unregistered=False)
    ingest = Ingest(
        store, parse_broker_url("mqtt://127.0.0.1:1"), "r1", CloudMetrics(), trust=trust
    )
    signer = signing.Signer(key)
    topic = uplink_topic("gw1", "digest")
    good = [(1, "line-1/m-01", digest()), (2, "line-1/m-01", digest(1))]
    nul = signed_digests(signer, [(3, "line-1/\x00", digest(2))])

    def heads() -> set[int]:
        with store.engine.connect() as conn:
            return set(conn.execute(select(ChainHead.seq)).scalars())

    outcome = ingest._drain([(topic, signed_digests(signer, good)), (topic, nul)])
    assert outcome.error is None
    assert heads() == ({2} if database.kind == "postgresql" else {2, 3})
    # the first record alone, cut again (a resend after a reconnect): held, and its head kept
    ingest._drain([(topic, signed_digests(signer, good[:1]))])
    assert 1 in heads()
    assert store.count(Digest) == (2 if database.kind == "postgresql" else 3)


async def test_a_locked_database_is_retried_without_losing_or_recounting(
    broker: Broker, tmp_path: Path, collector_factory
) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    engine = make_engine(url, {"timeout": 0.05})
    migrate(engine)
    store = Store(engine)
    watch = collector_factory(["fogline/+/down/ack"])
    blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        async with Ingest(store, parse_broker_url(broker.url), "r1", CloudMetrics()) as ingest:
            watch.publish(uplink_topic("gw1", "digest"), b"{broken")
            watch.publish(uplink_topic("gw1", "digest"), digests("gw1", range(1, 6)))
            await eventually(lambda: ingest.metrics.drain_failures >= 2, what="failed drains")
            assert store.count(Digest) == 0
            assert not watch.on("fogline/gw1/down/ack")
            blocker.execute("ROLLBACK")
            await eventually(lambda: watch.on("fogline/gw1/down/ack"), what="the ack")
            assert store.count(Digest) == 5
            assert ingest.metrics.rejects == {"corrupt": 1}  # counted once, not per retry
    finally:
        blocker.close()
        engine.dispose()


async def test_a_bad_record_is_stored_as_a_dead_letter_and_its_batch_is_acked(
    running: Start, store: Store, collector_factory
) -> None:
    """Issue 9: one reading on a 300-character topic segment made the whole batch rejected,
    resent every 2 s forever, and the alerts batched with it never arrived."""
    from cloud.models import AlertEvent, Event  # noqa: PLC0415

    watch = collector_factory(["fogline/+/down/ack"])
    ingest = await running()
    alert = {"rule": "hot", "severity": "critical", "state": "raised", "alert_id": "hot/m1/1",
             "raised_at": NOW, "message": "m1 hot", "ts": NOW}  # fmt: skip
    records = [(1, "m1", alert), (2, "m" * 300, alert), (3, "m1", {**alert, "state": "??"}),
               (4, "m2", {**alert, "alert_id": "hot/m2/1"})]  # fmt: skip
    watch.publish(uplink_topic("gw1", "alert"), payload("gw1", "alert", records))
    await eventually(
        lambda: (
            sorted(s for a in acks(watch, "gw1") for lo, hi in a for s in range(lo, hi + 1))
            == [1, 2, 3, 4]
        ),
        what="every seq acked, the dead letters too",
    )
    assert store.count(AlertEvent) == 2
    assert store.count(Event) == 2
    assert ingest.metrics.rejects == {"dead_letter": 2}
    assert ingest.metrics.stored == {"alert": 2, "event": 2}
    with store.engine.connect() as conn:
        rows = conn.execute(select(Event.seq, Event.data).order_by(Event.seq))
        letters = {int(row[0]): row[1] for row in rows}
        received = conn.execute(select(Received.seq).order_by(Received.seq)).scalars().all()
    assert received == [1, 2, 3, 4]  # no gap: the cloud knows what it refused
    assert letters[2]["reason"] == "records[1]: device longer than 256 characters"
    assert letters[3]["kind"] == "alert"
    assert letters[3]["reason"].startswith("records[2]: field 'state'")
    # Sent again (the gateway had no ack yet), nothing changes.
    watch.publish(uplink_topic("gw1", "alert"), payload("gw1", "alert", records))
    await eventually(lambda: ingest.metrics.duplicates, what="the duplicates")
    assert store.count(AlertEvent) + store.count(Event) == 4
