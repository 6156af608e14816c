"""What the cloud can reconcile from a gateway's health records (issue 11): alert episodes
the gateway no longer holds, and every seq its outbox evicted, even with a tiny bound.

A real gateway and cloud in this process, on a real mosquitto; the uplink crosses
`LinkProxy` where the link must fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
from sqlalchemy import select
from support import Collector, eventually

from cloud.app import Cloud
from cloud.models import Alert
from cloud.models import Gateway as GatewayRow
from gateway.app import Gateway, GatewayOptions


def pipeline(prefix: str, clear: int) -> str:
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
