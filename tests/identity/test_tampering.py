"""Authenticity that does not trust the broker (issue 9, part 3).

The test broker is anonymous: any client may publish anything on any topic, which is
exactly what a hostile broker (or anyone past its ACL) can do. A provisioned gateway and
a cloud in strict mode run on it; every forgery, alteration, replay and fork is refused
and counted, nothing of it is stored, and the genuine records all arrive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from identitykit import signed_batch
from sqlalchemy import select
from support import Broker, eventually

from cloud.app import Cloud, CloudOptions
from cloud.models import Event, ModelUpload, Received
from cloud.models import Gateway as GatewayRow
from cloud.provision import add_gateway, revoke_gateway
from fogline import ota, signing
from fogline.envelope import decode_batch, encode_ack, encode_batch, uplink_topic
from fogline.identity import KEY_FILE, Identity
from fogline.model import read_metadata, with_metadata
from fogline.urls import parse_broker_url
from gateway.app import Gateway, GatewayOptions
from gateway.spec import parse_pipeline

FACTORY = Path(__file__).resolve().parents[2] / "models" / "factory-vibration.tflite"
PIPELINE = """
name: signed
key: [machine]
sources:
  - mqtt: {topics: ["f/{machine}/t"], qos: 1}
steps:
  - validate:
      id: readings
      fields: {n: {type: integer}}
outputs:
  - uplink: {from: readings, kind: event}
tick: 50ms
health_every: 0.5s
"""


@pytest.fixture
async def strict_cloud(
    cloud_options: Callable[[Path], CloudOptions], tmp_path: Path
) -> AsyncIterator[Cloud]:
    options = dataclasses.replace(
        cloud_options(tmp_path / "cloud.db"),
        signing_key=tmp_path / "cloud.key",
        allow_unregistered=False,
    )
    async with Cloud(options) as c:
        c.trust.keys.every = 0.0  # see registrations and revocations at once
        yield c


def provision(cloud: Cloud, gid: str = "gw1") -> Identity:
    assert cloud.trust.signer is not None
    return add_gateway(cloud.engine, gid, cloud.trust.signer.key)


def gateway_options(
    broker: Broker, tmp_path: Path, identity: Identity, pipeline: str = PIPELINE
) -> GatewayOptions:
    url = parse_broker_url(broker.url)
    return GatewayOptions(
        parse_pipeline(pipeline, "signed.yaml"),
        url,
        url,
        identity.gateway,
        tmp_path / identity.gateway,
        status=False,
        identity=identity,
    )


def stored_events(cloud: Cloud, gid: str = "gw1") -> dict[int, dict]:
    with cloud.engine.connect() as conn:
        return dict(
            conn.execute(select(Event.seq, Event.data).where(Event.gateway_id == gid)).all()
        )


def gateway_health(cloud: Cloud, gid: str = "gw1") -> dict | None:
    with cloud.engine.connect() as conn:
        return conn.execute(select(GatewayRow.health).where(GatewayRow.id == gid)).scalar()


def ledger(cloud: Cloud) -> set[tuple[str, int]]:
    with cloud.engine.connect() as conn:
        return {(g, s) for g, s in conn.execute(select(Received.gateway_id, Received.seq))}


def gateway_row(cloud: Cloud, gid: str = "gw1") -> tuple | None:
    with cloud.engine.connect() as conn:
        row = conn.execute(
            select(GatewayRow.last_seen, GatewayRow.received, GatewayRow.max_seq).where(
                GatewayRow.id == gid
            )
        ).first()
    return None if row is None else tuple(row)


async def test_forged_altered_and_replayed_batches_are_refused_and_never_stored(
    broker: Broker, strict_cloud: Cloud, tmp_path: Path, collector_factory: Callable
) -> None:
    cloud = strict_cloud
    identity = provision(cloud)
    wire = collector_factory(["fogline/gw1/up/event", "fogline/gw1/down/ack"])
    # One health record at the start and none after it: once all is acknowledged, nothing
    # the gateway sends moves its row, so the replays below must not either (last_seen too:
    # a replayed genuine batch would hide a silent gateway).
    quiet = PIPELINE.replace("health_every: 0.5s", "health_every: 3600s")
    async with Gateway(gateway_options(broker, tmp_path, identity, quiet)) as gw:
        for n in range(1, 41):
            wire.publish("f/m1/t", orjson.dumps({"n": n}))
        await eventually(lambda: len(stored_events(cloud)) == 40, 15, "40 signed events stored")
        await eventually(lambda: gw.outbox.pending == 0, 10, "the outbox emptied by signed acks")
        genuine = [p for _, p in wire.on("fogline/gw1/up/event")]
        assert genuine
        assert all(signing.split(p if p[:1] == b"{" else zlib.decompress(p)) for p in genuine)
        before = (stored_events(cloud), ledger(cloud), gateway_row(cloud))
        rejects = cloud.metrics.rejects.copy()

        attacks: list[tuple[str, bytes]] = []
        topic = uplink_topic("gw1", "event")
        plain = [p if p[:1] == b"{" else zlib.decompress(p) for p in genuine]
        # 1. unsigned, as any client of the broker could publish it (seqs far ahead: the
        #    attack on gap labels and the ledger from issue 9)
        forged = [(seq, "m1", {"n": -1}) for seq in (41, 2**63 - 1)]
        attacks.append(("unsigned", encode_batch("gw1", "event", forged, 1.7e9)))
        # 2. signed, by a key that is not gw1's
        attacks.append(("forged", signed_batch(Ed25519PrivateKey.generate(), "gw1", forged)))
        # 3. a genuine batch with one value changed, its signature kept
        body = plain[0]
        attacks.append(("forged", body.replace(b'"n":1', b'"n":9', 1)))
        # 4. random bit flips anywhere in genuine batches (plain and compressed). A flip in
        #    the padding bits after a deflate stream's last block leaves the batch as it
        #    was (the same bytes, signed): that is a replay, not an alteration; skip it.
        rng = random.Random(9)
        flipped = 0
        while flipped < 60:
            victim = bytearray(rng.choice(genuine + plain))
            victim[rng.randrange(len(victim))] ^= 1 << rng.randrange(8)
            with contextlib.suppress(zlib.error):
                if zlib.decompress(victim) in plain:
                    continue
            attacks.append(("any", bytes(victim)))
            flipped += 1
        # 5. a genuine batch of gw1 replayed as gw2 (same bytes, another topic)
        attacks.append(("topic", plain[0]))
        for reason, payload in attacks:
            where = uplink_topic("gw2", "event") if reason == "topic" else topic
            wire.publish(where, payload)
        refused = len(attacks)
        await eventually(
            lambda: cloud.metrics.rejects.total() - rejects.total() >= refused,
            10,
            f"{refused} tampered messages refused",
        )
        # 6. genuine batches replayed: duplicates, acknowledged again, nothing new
        acks_before = cloud.metrics.acks_published
        for payload in genuine:
            wire.publish(topic, payload)
        await eventually(
            lambda: cloud.metrics.acks_published >= acks_before + len(genuine), 10, "replays acked"
        )
        assert cloud.metrics.rejects.total() - rejects.total() == refused  # 100 % detected
        assert (stored_events(cloud), ledger(cloud)) == before[:2]
        assert gateway_row(cloud) == before[2]  # last_seen, received and max_seq unmoved
        assert gateway_row(cloud, "gw2") is None
        new = cloud.metrics.rejects - rejects
        assert new["unsigned"] >= 1, new
        assert new["forged"] >= 2, new


async def test_a_fork_under_the_same_seqs_is_refused(
    broker: Broker, strict_cloud: Cloud, tmp_path: Path, collector_factory: Callable
) -> None:
    """A gateway whose data directory came back from an old copy signs a second history
    under seqs the cloud holds: the chain shows it (with the gateway's own, valid key)."""
    cloud = strict_cloud
    identity = provision(cloud)
    wire = collector_factory([])
    async with Gateway(gateway_options(broker, tmp_path, identity)) as gw:
        for n in range(1, 11):
            wire.publish("f/m1/t", orjson.dumps({"n": n}))
        await eventually(lambda: len(stored_events(cloud)) == 10, 15, "10 events stored")
        await eventually(lambda: gw.outbox.pending == 0, 10, "all acknowledged")
    key = signing.read_key(tmp_path / "gw1" / KEY_FILE)
    events = stored_events(cloud)
    first, last = min(events), max(events)
    rejects = cloud.metrics.rejects.copy()
    # the same seqs, other content, chained from the start: `head` differs from the held one
    fork = [(seq, "m1", {"n": 1000 + seq}) for seq in sorted(events)]
    wire.publish(uplink_topic("gw1", "event"), signed_batch(key, "gw1", fork))
    # a batch after the held head that claims another predecessor
    wire.publish(
        uplink_topic("gw1", "event"),
        signed_batch(key, "gw1", [(last + 100, "m1", {"n": 0})], (last, bytes(32))),
    )
    await eventually(lambda: (cloud.metrics.rejects - rejects)["chain"] == 2, 10, "2 forks")
    assert stored_events(cloud) == events
    assert ("gw1", last + 100) not in ledger(cloud)
    assert first >= 1


async def test_revoked_and_unregistered_gateways_are_refused(
    broker: Broker, strict_cloud: Cloud, tmp_path: Path, collector_factory: Callable
) -> None:
    cloud = strict_cloud
    wire = collector_factory([])
    key = Ed25519PrivateKey.generate()
    rejects = cloud.metrics.rejects.copy()
    wire.publish(uplink_topic("gw9", "event"), signed_batch(key, "gw9", [(1, "", {"n": 1})]))
    await eventually(lambda: (cloud.metrics.rejects - rejects)["unregistered"] == 1, 10, "gw9")
    add_gateway(cloud.engine, "gw9", cloud.trust.signer.key, public_key=signing.public_text(key))
    wire.publish(uplink_topic("gw9", "event"), signed_batch(key, "gw9", [(1, "", {"n": 1})]))
    await eventually(lambda: stored_events(cloud, "gw9"), 10, "gw9 stored once registered")
    revoke_gateway(cloud.engine, "gw9")
    wire.publish(uplink_topic("gw9", "event"), signed_batch(key, "gw9", [(2, "", {"n": 2})]))
    await eventually(lambda: (cloud.metrics.rejects - rejects)["revoked"] == 1, 10, "revoked")
    assert set(stored_events(cloud, "gw9")) == {1}


async def test_a_signed_batch_with_a_bad_record_stores_the_rest_and_a_forged_one_nothing(
    broker: Broker, strict_cloud: Cloud, collector_factory: Callable
) -> None:
    """Trust first, then the bounds: a forged or forked batch is refused whole (no dead
    letter of it either); a genuine one keeps its good records and a dead letter."""
    cloud = strict_cloud
    wire = collector_factory([])
    key = Ed25519PrivateKey.generate()
    add_gateway(cloud.engine, "gw9", cloud.trust.signer.key, public_key=signing.public_text(key))
    records = [(1, "m1", {"n": 1}), (2, "m" * 300, {"n": 2}), (3, "m1", {"n": 3})]
    rejects = cloud.metrics.rejects.copy()
    topic = uplink_topic("gw9", "event")
    wire.publish(topic, signed_batch(Ed25519PrivateKey.generate(), "gw9", records))
    await eventually(lambda: (cloud.metrics.rejects - rejects)["forged"] == 1, 10, "forged")
    wire.publish(topic, signed_batch(key, "gw9", records))
    await eventually(lambda: len(stored_events(cloud, "gw9")) == 3, 10, "2 events, 1 letter")
    events = stored_events(cloud, "gw9")
    assert events[2]["event"] == "dead_letter"
    assert (events[1], events[3]) == ({"n": 1}, {"n": 3})
    # signed with gw9's own key, but not following record 3 as the cloud holds it
    fork = [(4, "m1", {"n": 4}), (5, "m" * 300, {"n": 5})]
    wire.publish(topic, signed_batch(key, "gw9", fork, (3, bytes(32))))
    await eventually(lambda: (cloud.metrics.rejects - rejects)["chain"] == 1, 10, "the fork")
    assert stored_events(cloud, "gw9") == events
    assert {("gw9", 4), ("gw9", 5)}.isdisjoint(ledger(cloud))
    assert (cloud.metrics.rejects - rejects)["dead_letter"] == 1  # the genuine batch's only


async def test_the_gateway_refuses_forged_acks_and_model_chunks(
    broker: Broker, strict_cloud: Cloud, tmp_path: Path, collector_factory: Callable
) -> None:
    cloud = strict_cloud
    identity = provision(cloud)
    wire = collector_factory(["fogline/gw1/up/event"])
    options = gateway_options(broker, tmp_path, identity)
    async with Gateway(options) as gw:
        await cloud.ingest.__aexit__(None, None, None)  # the cloud away: records wait
        for n in range(1, 6):
            wire.publish("f/m1/t", orjson.dumps({"n": n}))
        await eventually(lambda: wire.on("fogline/gw1/up/event"), 10, "records sent")
        held = lambda: [seq for seq, _, _ in gw.outbox.read("event", 0, 100, 1 << 30)]  # noqa: E731
        await eventually(lambda: len(held()) == 5, 10, "5 events committed")
        events = held()
        assert cloud.trust.signer is not None
        other = signing.Signer(Ed25519PrivateKey.generate())
        everything = [(1, 2**63 - 1)]
        acks = [
            encode_ack("gw1", everything),  # unsigned (issue 9: emptied the outbox)
            other.sign(encode_ack("gw1", everything)),  # signed by another key
            cloud.trust.sign(encode_ack("gw2", everything)),  # the cloud's, for gw2
            cloud.trust.sign(encode_ack("gw1", everything))[:-10] + b'AAAAAAAA"}',  # altered
            encode_ack("gw1", [(1, 2**64 - 1)]),  # the one that crashed the gateway
        ]
        for payload in acks:
            wire.publish("fogline/gw1/down/ack", payload)
        chunks = [
            *ota.chunks("diagnosis", "evil", b"\x00" * 100),  # unsigned
            *(signing.sign_chunk(c, "gw1", other) for c in ota.chunks("d", "x", b"1" * 10)),
            *(cloud.trust.sign_chunk(c, "gw2") for c in ota.chunks("d", "y", b"2" * 10)),
        ]
        for i, payload in enumerate(chunks):
            wire.publish(ota.topic("gw1", "diagnosis", i), payload)
        total = len(acks) + len(chunks)
        await eventually(lambda: gw.trust.refused == total, 10, f"{total} refused")
        assert held() == events  # nothing forgotten
        refused = {r: n for (step, r), n in gw.metrics.rejects.items() if step == "downlink"}
        assert sum(refused.values()) == total, refused
        # a genuine ack, signed by the cloud for gw1, is taken
        genuine = cloud.trust.sign(encode_ack("gw1", [(events[0], events[-1])]))
        wire.publish("fogline/gw1/down/ack", genuine)
        await eventually(lambda: held() == [], 10, "the genuine ack applied")
        sent = wire.on("fogline/gw1/up/event")
        assert {r["seq"] for _, p in sent for r in decode_batch(p)["records"]} == set(events)


INFER_PIPELINE = f"""
name: signed_models
key: [machine]
sources:
  - mqtt: {{topics: ["plant/{{machine}}/features"], qos: 1}}
steps:
  - infer: {{id: diagnosis, model: {FACTORY}, escalate_above: 1.0}}
outputs:
  - uplink: {{from: diagnosis, kind: event}}
tick: 50ms
health_every: 0.2s
"""


def retagged(version: str) -> bytes:
    data = FACTORY.read_bytes()
    meta = orjson.loads(read_metadata(data)["fogline"])
    return with_metadata(data, {**meta, "version": version})


def uploads(cloud: Cloud) -> dict[str, tuple[str, str | None, int | None]]:
    """version -> (status, reason, serial) of every upload, the latest per version."""
    with cloud.engine.connect() as conn:
        rows = conn.execute(
            select(
                ModelUpload.version, ModelUpload.status, ModelUpload.reason, ModelUpload.serial
            ).order_by(ModelUpload.id)
        ).all()
    return {version: (status, reason, serial) for version, status, reason, serial in rows}


async def test_an_old_signed_model_replayed_cannot_roll_the_gateway_back(
    broker: Broker, strict_cloud: Cloud, tmp_path: Path, collector_factory: Callable
) -> None:
    """Chunks are signed by the cloud, so a hostile broker cannot make a model; but it can
    keep the signed chunks of an old upload and publish them again later. Each upload's
    serial is signed with it, and the gateway runs only a newer one."""
    cloud = strict_cloud
    identity = provision(cloud)
    down = collector_factory(["fogline/gw1/down/model/#"])
    options = gateway_options(broker, tmp_path, identity, INFER_PIPELINE)

    def running(gw: Gateway) -> str:
        return gw.inference["diagnosis"].model.info.version

    async with Gateway(options) as gw:
        await eventually(
            lambda: "diagnosis" in str(gateway_health(cloud)), 10, "health naming the step"
        )
        await cloud.model_updates.upload("gw1", "diagnosis", retagged("old"), None, "admin")
        await eventually(lambda: running(gw) == "old", 20, "the old model running")
        old_chunks = [(t, p) for t, p in down.on("fogline/gw1/down/model/") if p]
        assert old_chunks
        await cloud.model_updates.upload("gw1", "diagnosis", retagged("new"), None, "admin")
        await eventually(lambda: running(gw) == "new", 20, "the new model running")
        await eventually(lambda: uploads(cloud)["new"][0] == "running", 10, "new reported")
        old_serial, new_serial = uploads(cloud)["old"][2], uploads(cloud)["new"][2]
        assert old_serial is not None
        assert new_serial is not None
        assert old_serial < new_serial

        # The replay: the old upload's genuine, signed chunks, retained again by the broker.
        for topic, payload in old_chunks:
            down.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        await eventually(
            lambda: gw.metrics.rejects[("model_update", "not_newer")] == 1, 10, "refused"
        )
        assert gw.trust.refused == 0  # the signature is fine: only the serial gives it away
        assert running(gw) == "new"
        # Reported to the cloud like any refusal, against that old upload only.
        await eventually(lambda: uploads(cloud)["old"][0] == "refused", 10, "reported")
        reason = uploads(cloud)["old"][1]
        assert reason is not None
        assert reason.startswith(
            f"not newer than the running model: upload {old_serial}, and the step took "
            f"upload {new_serial} (an old model replayed?)"
        )
        assert uploads(cloud)["new"][0] == "running"

    # Restarted, with the replayed chunks still retained: the gateway remembers the serial.
    async with Gateway(options) as gw:
        assert running(gw) == "new"
        await eventually(
            lambda: gw.metrics.rejects[("model_update", "not_newer")] == 1, 10, "refused again"
        )
        assert running(gw) == "new"
        # A rollback on purpose is a new upload of the old bytes: a new serial, and it runs.
        await cloud.model_updates.upload("gw1", "diagnosis", retagged("old"), None, "admin")
        await eventually(lambda: running(gw) == "old", 20, "rolled back by a new upload")
