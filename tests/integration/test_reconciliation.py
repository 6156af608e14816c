"""What the cloud can reconcile from a gateway's health records (issue 11): alert episodes
the gateway no longer holds, and every seq its outbox evicted, even with a tiny bound.

A real gateway and cloud in this process, on a real mosquitto; the uplink crosses
`LinkProxy` where the link must fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable

import orjson
from sqlalchemy import func, select
from support import Broker, Collector, LinkProxy, eventually

from cloud.app import Cloud
from cloud.gaps import DEFAULT_GRACE, LossReport, in_flight_from, loss_report
from cloud.models import Alert, EvictedRange
from cloud.models import Gateway as GatewayRow
from fogline.urls import parse_broker_url
from gateway.app import Gateway, GatewayOptions


def pipeline(prefix: str, clear: int, events: bool = False) -> str:
    return f"""
name: reconcile
key: [machine]
sources:
  - mqtt: {{topics: ["{prefix}/{{machine}}/t"], qos: 1}}
steps:
  - validate:
      id: readings
      fields: {{temperature: {{type: number}}}}
  - alert:
      id: alerts
      rules: [{{name: hot, raise: temperature > 90, clear: temperature < {clear}}}]
outputs:
  - uplink: {{from: alerts, kind: alert}}
{"  - uplink: {from: readings, kind: event}" if events else ""}
health_every: 0.5s
tick: 50ms
"""


def episodes(cloud: Cloud, gateway: str) -> dict[str, tuple[str, str | None]]:
    """alert_id -> (state, closed_by) of the gateway's own episodes."""
    with cloud.engine.connect() as conn:
        rows = conn.execute(
            select(Alert.alert_id, Alert.state, Alert.closed_by).where(
                Alert.gateway_id == gateway, Alert.rule == "hot"
            )
        )
        return {alert_id: (state, closed_by) for alert_id, state, closed_by in rows}


async def test_an_alert_lost_with_a_restart_is_closed_at_the_cloud_and_a_new_one_stays_open(
    cloud: Cloud,
    collector_factory: Callable[[list[str]], Collector],
    gateway_options: Callable[..., GatewayOptions],
) -> None:
    prefix, gid = f"rc-{uuid.uuid4().hex[:6]}", f"gw-{uuid.uuid4().hex[:6]}"
    devices = collector_factory([])

    def hot(machine: str) -> None:
        devices.publish(f"{prefix}/{machine}/t", orjson.dumps({"temperature": 95.0}))

    async with Gateway(gateway_options(pipeline(prefix, 80), gid)) as gw:
        hot("m-1")
        await eventually(lambda: len(episodes(cloud, gid)) == 1, 15, "the raise at the cloud")
        (lost,) = episodes(cloud, gid)
        await eventually(lambda: lost in gw.health()["alerts_raised"]["ids"], 5, "listed")
    # Restarted with the same pipeline, the gateway restores the episode and lists it, so
    # its newer health records keep it open.
    async with Gateway(gateway_options(pipeline(prefix, 80), gid)) as gw:
        assert gw.health()["alerts_raised"] == {"ids": [lost], "complete": True}
        later = gw.outbox.next_seq
        await eventually(lambda: cloud_health_seq(cloud, gid) >= later, 15, "a health record")
        assert episodes(cloud, gid) == {lost: ("open", None)}
    # The restarted gateway runs a changed alert step: its state starts afresh, so m-1's
    # episode is gone at the edge, and its clear will never come.
    async with Gateway(gateway_options(pipeline(prefix, 75), gid)) as gw:
        hot("m-2")
        await eventually(lambda: len(episodes(cloud, gid)) == 2, 15, "the new raise")
        await eventually(
            lambda: episodes(cloud, gid)[lost] == ("cleared", "gateway"), 15, "the lost one closed"
        )
        (kept,) = set(episodes(cloud, gid)) - {lost}
        health_seq = gw.outbox.next_seq  # every health record from here on lists m-2's
        await eventually(
            lambda: cloud_health_seq(cloud, gid) >= health_seq, 15, "a later health record"
        )
        assert episodes(cloud, gid)[kept] == ("open", None), "the gateway still holds it"
        assert gw.health()["alerts_raised"] == {"ids": [kept], "complete": True}


def cloud_health_seq(cloud: Cloud, gateway: str) -> int:
    with cloud.engine.connect() as conn:
        seq = conn.execute(
            select(GatewayRow.health_seq).where(GatewayRow.id == gateway)
        ).scalar_one_or_none()
    return int(seq or 0)


def loss(cloud: Cloud, gateway: str) -> LossReport:
    """The cloud's account of the gateway's seqs, as `/api/gateways/<id>` gives it."""
    with cloud.engine.connect() as conn:
        row = conn.execute(select(GatewayRow).where(GatewayRow.id == gateway)).one()
        horizon = in_flight_from(
            conn, gateway, row.health_seq, row.pending_from, time.time(), DEFAULT_GRACE
        )
        return loss_report(conn, gateway, row.received, row.max_seq, horizon=horizon)


def settled(report: LossReport, after: int) -> bool:
    return report.max_seq >= after and report.in_flight == 0 and report.unexplained == 0


async def test_an_8_kib_outbox_through_a_slow_link_and_an_outage_leaves_no_gap_unexplained(
    broker: Broker,
    cloud: Cloud,
    collector_factory: Callable[[list[str]], Collector],
    gateway_options: Callable[..., GatewayOptions],
) -> None:
    """A slow link first: alerts get through, the events between them are evicted, and
    every alert delivered splits the evicted seqs into one more range. Then an outage:
    everything is evicted but the newest records. Each reading is an event; every 5th
    reading of a machine crosses the alert's threshold."""
    prefix, gid = f"ev-{uuid.uuid4().hex[:6]}", f"gw-{uuid.uuid4().hex[:6]}"
    proxy = LinkProxy(broker.port, rate=6_000.0)
    await proxy.start()
    devices = collector_factory([])
    sent = 0

    async def readings(seconds: float, per_tick: int = 40) -> None:
        nonlocal sent
        for _ in range(int(seconds / 0.1)):
            for _ in range(per_tick):
                machine, n = sent % 8, sent // 8
                temperature = 95.0 if (n // 5) % 2 else 20.0
                topic = f"{prefix}/m-{machine}/t"
                devices.publish(topic, orjson.dumps({"temperature": temperature}))
                sent += 1
            await asyncio.sleep(0.1)

    options = gateway_options(
        pipeline(prefix, 80, events=True), gid, outbox_max_bytes=8192, uplink_keepalive=2
    )
    options = dataclasses.replace(options, uplink=parse_broker_url(proxy.url))
    try:
        async with Gateway(options) as gw:
            await eventually(gw.up.connected.is_set, 15, "the uplink")
            await readings(8.0)
            proxy.stall()
            await readings(4.0)
            evicted = dict(gw.outbox.evicted)
            assert sum(evicted.values()) > 2000, evicted
            proxy.heal()
            last = gw.outbox.next_seq
            await eventually(lambda: settled(loss(cloud, gid), last), 60, "every gap explained")
            report = loss(cloud, gid)
            assert report.missing > 1000, report
            assert {"alert", "event", "health"} <= set(gw.outbox.evicted), dict(gw.outbox.evicted)
            # The gateway forgets the ranges once the cloud has stored a record carrying them.
            await eventually(lambda: not gw.outbox.dropped_ranges, 10, "the ranges forgotten")
            with cloud.engine.connect() as conn:
                ranges = conn.execute(
                    select(func.count()).where(EvictedRange.gateway_id == gid)
                ).scalar_one()
            assert ranges > 0
    finally:
        await proxy.close()
