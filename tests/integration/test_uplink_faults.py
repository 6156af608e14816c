"""The uplink across a bad link to its broker: a silent partition, a slow link.

The gateway and the cloud run in this process against a real mosquitto (its default
receive maximum of 20, as shipped); the uplink crosses `LinkProxy`. Faults at the packet
level (loss, reordering, TCP retransmission) are in tests/e2e/test_network_faults.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Callable

import orjson
import pytest
from sqlalchemy import func, select
from support import Broker, LinkProxy, eventually

from cloud.app import Cloud
from cloud.models import Alert, Received
from fogline.urls import parse_broker_url
from gateway.app import Gateway, GatewayOptions

# Every reading goes up as an event; a temperature above 90 raises a critical alert.
PIPELINE = """
name: faults
key: [machine]
sources:
  - mqtt: {topics: ["f/{machine}/t"], qos: 1}
steps:
  - validate:
      id: readings
      fields: {n: {type: integer}, temperature: {type: number}}
  - alert:
      id: alerts
      rules: [{name: hot, raise: temperature > 90, clear: temperature < 80, severity: critical}]
outputs:
  - uplink: {from: readings, kind: event}
  - uplink: {from: alerts, kind: alert}
health_every: 1s
tick: 50ms
"""


def stored(cloud: Cloud, gateway: str) -> tuple[int, int]:
    """(distinct seqs stored, alerts from the gateway stored) for a gateway."""
    with cloud.engine.connect() as conn:
        seqs = conn.execute(
            select(func.count()).select_from(Received).where(Received.gateway_id == gateway)
        ).scalar_one()
        alerts = conn.execute(
            select(func.count())
            .select_from(Alert)
            .where(Alert.gateway_id == gateway, Alert.rule != "gateway_silent")
        ).scalar_one()
    return int(seqs), int(alerts)


def silences(cloud: Cloud, gateway: str) -> list[str]:
    """States of the cloud's `gateway_silent` episodes for a gateway."""
    with cloud.engine.connect() as conn:
        return list(
            conn.execute(
                select(Alert.state).where(
                    Alert.gateway_id == gateway, Alert.rule == "gateway_silent"
                )
            ).scalars()
        )


def everything_stored(gw: Gateway, cloud: Cloud) -> bool:
    gw.outbox.flush()
    committed = gw.outbox.next_seq - 1
    return gw.outbox.depth == 0 and stored(cloud, gw.options.gateway_id)[0] == committed


async def publish(collector_factory: Callable[..., object], n: int, start: int, hot: bool) -> None:
    watch = collector_factory([])
    for i in range(start, start + n):
        temperature = 95.0 if hot and i == start + n - 1 else 20.0
        machine = f"m-{i}" if hot else "m-1"
        watch.publish(f"f/{machine}/t", orjson.dumps({"n": i, "temperature": temperature}))  # type: ignore[attr-defined]
        await asyncio.sleep(0)


def options(make: Callable[..., GatewayOptions], proxy: LinkProxy, **kw: object) -> GatewayOptions:
    base = make(PIPELINE, f"gw-{uuid.uuid4().hex[:6]}", **kw)
    return dataclasses.replace(base, uplink=parse_broker_url(proxy.url))


async def test_the_uplink_recovers_from_a_silent_partition_and_says_so(
    broker: Broker, cloud: Cloud, collector_factory, gateway_options
) -> None:
    proxy = LinkProxy(broker.port)
    await proxy.start()
    try:
        async with Gateway(options(gateway_options, proxy, uplink_keepalive=2)) as gw:
            await publish(collector_factory, 50, 0, hot=False)
            await eventually(lambda: everything_stored(gw, cloud), 15, "the first readings")
            assert gw.health_status()["status"] == "ok"

            proxy.stall()
            cut = time.monotonic()
            # Enough batches to take every packet id the broker allows (20) and more.
            for round_ in range(30):
                await publish(collector_factory, 10, 100 + 10 * round_, hot=round_ % 10 == 9)
                await asyncio.sleep(0.05)
            await eventually(
                lambda: gw.health_status()["status"] == "degraded", 30, "a degraded health"
            )
            assert time.monotonic() - cut < 30, "degraded within 30 s of the cut"
            health = gw.health_status()
            assert health["uplink"]["connected"] is False
            assert health["uplink"]["backlog_records"] > 0
            assert any("unreachable" in r or "no ack" in r for r in health["reasons"]), health
            gid = gw.options.gateway_id
            await eventually(lambda: silences(cloud, gid) == ["open"], 20, "gateway_silent")
            await asyncio.sleep(max(0.0, 25 - (time.monotonic() - cut)))

            proxy.heal()
            await eventually(lambda: everything_stored(gw, cloud), 30, "the backlog in the cloud")
            await eventually(lambda: gw.health_status()["status"] == "ok", 10, "health ok again")
            assert stored(cloud, gid)[1] == 3, "each alert stored once"
            await eventually(lambda: silences(cloud, gid) == ["cleared"], 10, "silence cleared")
            assert "subscribe" not in gw.up.errors
    finally:
        await proxy.close()


async def test_an_alert_overtakes_a_backlog_on_a_2_kbit_link(
    broker: Broker, cloud: Cloud, collector_factory, gateway_options
) -> None:
    proxy = LinkProxy(broker.port, rate=250.0)  # 2 kbit/s each way
    await proxy.start()
    try:
        async with Gateway(options(gateway_options, proxy)) as gw:
            gid = gw.options.gateway_id
            await eventually(gw.up.connected.is_set, 30, "the uplink")
            # Readings arrive far faster than the link carries their events: a backlog grows.
            for second in range(10):
                await publish(collector_factory, 20, 20 * second, hot=False)
                await asyncio.sleep(1.0)
            assert gw.outbox.pending > 50, "a backlog of events waits"
            raised = time.monotonic()
            await publish(collector_factory, 1, 1000, hot=True)
            await eventually(lambda: stored(cloud, gid)[1] == 1, 30, "the alert in the cloud")
            assert time.monotonic() - raised < 30
            counts = gw.uplink.counts
            assert counts["resent_batches"] <= 2, dict(counts)
            # What crossed the link is what was sent, give or take MQTT's framing and pings.
            assert proxy.up_bytes <= 1.5 * counts["payload_bytes"] + 2000, (
                proxy.up_bytes,
                dict(counts),
            )
            assert gw.outbox.pending > 0, "events still queue behind the alert"
    finally:
        await proxy.close()


async def test_a_forged_ack_cannot_drop_unsent_records_or_kill_the_gateway(
    broker: Broker, collector_factory, gateway_options
) -> None:
    # No cloud, and a records/s cap: every record waits, few of them sent.
    async with Gateway(gateway_options(PIPELINE, "gw-forged", uplink_max_rate=5.0)) as gw:
        await publish(collector_factory, 400, 0, hot=False)
        await eventually(lambda: gw.outbox.depth >= 400, 10, "the readings in the outbox")

        def in_flight() -> set[int]:
            return {s for q in gw.uplink._batches.values() for b in q for s in b.unacked}

        # On a loaded machine the uplink may connect after the readings are committed.
        await eventually(lambda: bool(in_flight()), 30, "a first batch in flight")
        sent = in_flight()
        assert len(sent) < gw.outbox.depth
        watch = collector_factory([])
        for forged in ([[1, 2**63 - 1]], [[1, 2**64 - 1]], [[-(2**63), 2**63 - 1]]):
            ack = {"v": 1, "gateway": "gw-forged", "acks": forged}
            watch.publish("fogline/gw-forged/down/ack", orjson.dumps(ack))
        await eventually(lambda: gw.uplink.counts["stale_acks"] == 3, 5, "the forged acks")
        sent |= in_flight()
        gw.outbox.flush()
        # At most what was in flight is gone; what was never sent is still there.
        assert gw.outbox.depth >= 400 - len(sent)
        await publish(collector_factory, 10, 1000, hot=False)
        await eventually(lambda: gw.metrics.step_in["readings"] == 410, 5, "the gateway alive")


async def test_what_an_absent_cloud_missed_goes_again_at_its_first_ack(
    collector_factory, gateway_options, cloud_options, tmp_path
) -> None:
    """Alerts sent before the cloud subscribed are lost at the broker and back off; the
    first ack of the cloud that arrives later ends their backoff, so they do not wait for
    a timeout doubled while nobody answered. Many resends on a broker's 20 packet ids
    also pin that a batch never loses track of its PUBACK to an id given again."""
    gid = f"gw-{uuid.uuid4().hex[:6]}"
    async with Gateway(gateway_options(PIPELINE, gid)) as gw:
        await eventually(gw.up.connected.is_set, 10, "the uplink")
        gw.uplink.timer.initial = 0.25  # reach a long backoff in seconds, not minutes
        for round_ in range(3):
            await publish(collector_factory, 5, 10 * round_, hot=True)
        await eventually(lambda: gw.outbox.depth >= 18, 10, "3 alerts and 15 events committed")

        def next_try_in() -> float:
            alerts = gw.uplink._batches["alert"]
            if any(b.puback_at is None for b in alerts):
                return 0.0  # (re)sent, the broker's PUBACK not in yet
            return min(b.deadline for b in alerts) - time.monotonic()

        # Without the cloud's ack, no alert is tried again for 5 s or more.
        await eventually(lambda: next_try_in() > 5.0, 60, "the alerts' timeout doubled")
        # Their next tries as the backoff has them: all three must be stored before the
        # first of these comes, which only an early resend (at the cloud's first ack) does.
        scheduled = min(b.deadline for b in gw.uplink._batches["alert"])
        async with Cloud(cloud_options(tmp_path / "late-cloud.db")) as cloud:
            await eventually(lambda: stored(cloud, gid)[1] == 3, 15, "the 3 alerts stored")
            assert time.monotonic() < scheduled, "the alerts waited out their backoff"
            await eventually(lambda: everything_stored(gw, cloud), 15, "everything stored")
            assert not gw.uplink._by_mid, "every PUBACK came back to its batch"


async def test_a_gateway_without_a_cloud_warns_once_and_says_when_acks_resume(
    broker: Broker,
    collector_factory,
    gateway_options,
    cloud_options,
    tmp_path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As the pipelines' "Try it" runs it: records wait for a cloud that is not there. One
    warning names the uplink and what to check; the resends are DEBUG, not a line every
    few seconds; one line says when acks come again."""
    caplog.set_level(logging.DEBUG, logger="fogline.gateway.uplink")

    def lines(level: int, text: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "fogline.gateway.uplink" and r.levelno == level and text in r.getMessage()
        ]

    gid = f"gw-{uuid.uuid4().hex[:6]}"
    async with Gateway(gateway_options(PIPELINE, gid, uplink_stall_after=2.0)) as gw:
        gw.uplink.timer.initial = 0.25  # many resends within the test's seconds
        await publish(collector_factory, 5, 0, hot=False)
        await eventually(lambda: lines(logging.WARNING, "no ack"), 15, "the warning")
        await eventually(lambda: gw.uplink.counts["resent_batches"] >= 10, 30, "resends")
        assert len(lines(logging.WARNING, "")) == 1, caplog.text
        (warning,) = lines(logging.WARNING, "")
        assert re.fullmatch(
            rf"no ack from the cloud on {re.escape(broker.url)} for \d+ s; "
            r"is `fogline cloud` running and subscribed there\?",
            warning,
        )
        assert lines(logging.DEBUG, "sent again"), "each resend is still told, at DEBUG"
        assert not lines(logging.INFO, "sent again")
        async with Cloud(cloud_options(tmp_path / "cloud.db")) as cloud:
            await eventually(lambda: everything_stored(gw, cloud), 30, "everything stored")
            await eventually(lambda: lines(logging.INFO, "acks from the cloud again"), 5, "resume")
        assert re.fullmatch(
            rf"acks from the cloud again on {re.escape(broker.url)} after \d+ s without",
            lines(logging.INFO, "acks from the cloud again")[0],
        )
        assert len(lines(logging.WARNING, "")) == 1, caplog.text
