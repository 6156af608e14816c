"""The gateway against a real mosquitto: readings in; digests, alerts and actions out."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sqlite3
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from support import Broker, eventually, mid_window

from fogline.envelope import decode_batch
from gateway.app import Gateway
from gateway.metrics import Metrics
from gateway.spec import load_pipeline
from gateway.status import show_status, status_line

ROOT = Path(__file__).resolve().parents[2]

FAST = """
name: fast
key: [machine]
sources:
  - mqtt: {topics: ["plant/{machine}/telemetry"], qos: 1}
steps:
  - validate:
      id: readings
      fields:
        temperature: {type: number, min: -40, max: 250}
  - window:
      id: windows
      size: 1s
      lateness: 0.2s
      aggregates: {temperature: [count, mean, max]}
  - alert:
      id: hot
      from: readings
      rules:
        - {name: hot, raise: temperature > 90, clear: temperature < 80, severity: critical}
outputs:
  - uplink: {from: windows, kind: digest}
  - uplink: {from: hot, kind: alert}
  - action:
      from: hot
      when: state == "raised"
      topic: "plant/{machine}/actions"
      payload: {command: stop, rule: "{rule}", at: "{raised_at}"}
dead_letter: {topic: "fogline/{gateway}/deadletter"}
tick: 50ms
"""


def records(messages: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    return [r["data"] for _, p in messages for r in decode_batch(p)["records"]]


async def test_digest_alert_and_action_by_content(
    broker: Broker, collector_factory, gateway_options
) -> None:
    watch = collector_factory(["fogline/gw1/up/#", "plant/+/actions"])
    async with Gateway(gateway_options(FAST)) as gw:
        now = mid_window(1.0)  # the three readings share one 1 s window
        for i, temp in enumerate([20.0, 22.0, 24.0]):
            watch.publish(
                "plant/m-1/telemetry", orjson.dumps({"ts": now + i * 0.01, "temperature": temp})
            )
        watch.publish("plant/m-2/telemetry", orjson.dumps({"ts": now, "temperature": 97.5}))

        actions = await eventually(lambda: watch.on("plant/m-2/actions"), what="the stop action")
        action = orjson.loads(actions[0][1])
        assert action["command"] == "stop"
        assert action["rule"] == "hot"
        assert isinstance(action["at"], float)  # a lone {field} keeps its type

        alerts = records(await eventually(lambda: watch.on("fogline/gw1/up/alert"), what="alert"))
        assert alerts[0]["machine"] == "m-2"
        assert alerts[0]["state"] == "raised"
        assert alerts[0]["values"] == {"temperature": 97.5}

        digests = await eventually(
            lambda: [
                d for d in records(watch.on("fogline/gw1/up/digest")) if d["machine"] == "m-1"
            ],
            what="the digest of m-1",
        )
        m1 = digests[0]
        assert m1["count"] == 3
        assert m1["temperature_mean"] == pytest.approx(22.0)
        assert m1["temperature_max"] == 24.0
        assert m1["window_end"] - m1["window_start"] == pytest.approx(1.0)
        assert gw.metrics.outputs["action"] == 1
        # The stop's time in the gateway, from its reading's arrival to its publish.
        latency = gw.metrics.action_latency
        assert latency.count == 1
        assert 0 < latency.sum < 1.0
        assert sum(latency.counts) == 1
        text = gw.metrics.render()
        assert "# TYPE fogline_action_latency_seconds histogram" in text
        assert 'fogline_action_latency_seconds_bucket{le="+Inf"} 1' in text
        assert "fogline_action_latency_seconds_count 1" in text
    # seq is per gateway and strictly increasing across kinds
    seqs = [r["seq"] for _, p in watch.on("fogline/gw1/up/") for r in decode_batch(p)["records"]]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))


async def test_garbage_is_counted_and_the_stream_goes_on(
    broker: Broker, collector_factory, gateway_options
) -> None:
    watch = collector_factory(["fogline/gw1/#", "plant/+/actions"])
    async with Gateway(gateway_options(FAST)) as gw:
        bad = {
            b"{not json": "malformed_json",
            b'{"temperature": "hot"}': "wrong_type",
            b'{"temperature": NaN}': "malformed_json",  # JSON has no NaN: orjson refuses it
            b'{"temperature": 900}': "out_of_range",
            b'{"pressure": 1}': "missing_field",
            b"42": "not_an_object",
            b'{"temperature": 20, "pad": "' + b"x" * 70_000 + b'"}': "too_large",
            b'{"ts": "yesterday", "temperature": 20}': "bad_timestamp",
        }
        for payload in bad:
            watch.publish("plant/m-9/telemetry", payload)
        watch.publish("plant/m-9/telemetry", orjson.dumps({"temperature": 99.0}))
        await eventually(lambda: watch.on("plant/m-9/actions"), what="an action after the garbage")
        reasons = {reason: n for (_, reason), n in gw.metrics.rejects.items()}
        assert reasons == Counter(bad.values())
        dead = await eventually(
            lambda: (
                len(watch.on("fogline/gw1/deadletter")) == len(bad)
                and watch.on("fogline/gw1/deadletter")
            ),
            what="one dead letter per bad payload",
        )
        assert {orjson.loads(p)["reason"] for _, p in dead} == set(bad.values())


async def test_broker_restart_mid_stream(
    broker: Broker, collector_factory, gateway_options
) -> None:
    async with Gateway(gateway_options(FAST)) as gw:
        watch = collector_factory(["plant/+/actions"])
        watch.publish("plant/a/telemetry", orjson.dumps({"temperature": 99.0}))
        await eventually(lambda: watch.on("plant/a/actions"), what="the first action")
        watch.close()

        broker.stop()
        await eventually(lambda: not gw.edge.connected.is_set(), what="the gateway to notice")
        broker.start()
        await eventually(gw.edge.connected.is_set, timeout=20, what="the gateway to reconnect")

        watch = collector_factory(["plant/+/actions"])
        watch.publish("plant/b/telemetry", orjson.dumps({"temperature": 99.0}))
        await eventually(lambda: watch.on("plant/b/actions"), what="an action after the restart")
        assert gw.metrics.reconnects["edge"] >= 1


async def test_senml_and_arrays(broker: Broker, collector_factory, gateway_options) -> None:
    watch = collector_factory(["plant/+/actions"])
    async with Gateway(gateway_options(FAST)) as gw:
        senml = [{"bn": "urn:dev:s1:", "n": "temperature", "u": "Cel", "v": 96.0}]
        watch.publish("plant/s1/telemetry", orjson.dumps(senml))
        watch.publish(
            "plant/s2/telemetry", orjson.dumps([{"temperature": 50.0}, {"temperature": 95.5}])
        )
        await eventually(
            lambda: watch.on("plant/s1/actions") and watch.on("plant/s2/actions"), what="actions"
        )
        assert gw.metrics.total_rejects() == 0


async def test_metrics_and_healthz(broker: Broker, collector_factory, gateway_options) -> None:
    watch = collector_factory([])
    async with Gateway(gateway_options(FAST, metrics_port=0)) as gw:
        watch.publish("plant/m/telemetry", orjson.dumps({"temperature": 20.0}))
        port = gw.metrics_server.port
        await eventually(lambda: gw.metrics.total_in() == 1, what="the reading")

        def get(path: str) -> tuple[int, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()

        status, body = await __import__("asyncio").to_thread(get, "/healthz")
        assert status == 200
        health = orjson.loads(body)
        assert health["status"] == "ok", health
        assert health["edge_connected"] is True
        assert health["uplink"]["connected"] is True
        assert health["uplink"]["reasons"] == []
        assert await __import__("asyncio").to_thread(get, "/readyz") == (200, "ready\n")
        assert await __import__("asyncio").to_thread(get, "/livez") == (200, "alive\n")
        status, body = await __import__("asyncio").to_thread(get, "/metrics")
        assert 'fogline_messages_in_total{source="mqtt"} 1' in body
        assert 'fogline_step_records_in_total{step="readings"} 1' in body
        assert "fogline_queue_depth" in body
        assert "fogline_uplink_connected 1" in body
        assert "fogline_uplink_degraded 0" in body
        assert "fogline_uplink_wire_bytes_total" in body
        assert all(line.startswith(("# ", "fogline_")) for line in body.splitlines())


class Terminal(io.StringIO):
    """What the status line is written to: a terminal, as far as the gateway can tell."""

    def isatty(self) -> bool:
        return True


async def test_the_status_line_counts_records_out_not_bytes_or_acks(
    broker: Broker, gateway_options
) -> None:
    """Its one health record sent, the gateway shows `out ... (1)`; the uplink's own
    counters (bytes written, acks awaited, timeouts) are not records."""
    async with Gateway(gateway_options(FAST)) as gw:
        await eventually(lambda: gw.metrics.uplink["wire_bytes"], what="the health record sent")
        terminal = Terminal()
        status = asyncio.create_task(
            show_status(gw.metrics, lambda: gw.uplink.pending, every=0.05, stream=terminal)
        )
        await eventually(lambda: "uplink pending" in terminal.getvalue(), what="a status line")
        status.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await status
    line = terminal.getvalue().split("\r\x1b[2K")[-1]
    assert re.fullmatch(
        r"in 0 msg/s \(0\) \| out 0/s \(1\) \| rejects 0 \| uplink pending \d\n", line
    )


def test_a_failed_action_or_a_model_swap_is_not_a_record_out() -> None:
    metrics = Metrics()
    metrics.outputs.update(health=1, action=2, action_not_connected=3, model_updates_running=1)
    metrics.uplink.update(wire_bytes=648, payload_bytes=500, ack_timeouts=4, acked_records=1)
    assert status_line(metrics, 0, 0.0, 3.0) == (
        "in 0 msg/s (0) | out 3/s (3) | rejects 0 | uplink pending 0"
    )


async def test_a_stop_keeps_open_windows_for_the_next_start(
    broker: Broker, collector_factory, gateway_options
) -> None:
    """The window's state is committed at the stop, not cut short and sent: the next start
    goes on with it (gateway/state.py)."""
    slow = FAST.replace("size: 1s", "size: 1h")
    watch = collector_factory(["fogline/gw1/up/digest"])
    async with Gateway(gateway_options(slow)) as gw:
        watch.publish("plant/m/telemetry", orjson.dumps({"temperature": 20.0}))
        await eventually(lambda: gw.metrics.step_in["windows"] == 1, what="the reading")
    async with Gateway(gateway_options(slow)) as gw:
        assert gw.state.restored_parts >= 1
        assert gw.state.reset == []
        watch.publish("plant/m/telemetry", orjson.dumps({"temperature": 30.0}))
        await eventually(lambda: gw.metrics.step_in["windows"] == 1, what="the second reading")
        window = next(op for sid, _, _, op in gw.engine.steps if sid == "windows")
        (digest,) = window.flush()
        assert digest.fields["count"] == 2
        assert digest.fields["temperature_mean"] == 25.0
    assert not watch.on("fogline/gw1/up/digest")


def test_factory_pipeline_loads() -> None:
    assert load_pipeline(ROOT / "pipelines" / "factory.yaml").key == ("line", "machine")


async def test_an_action_burst_beyond_the_broker_inflight_window(
    broker: Broker, collector_factory, gateway_options
) -> None:
    """mosquitto allows 20 unacknowledged QoS 1 publishes; 60 machines overheat at once."""
    watch = collector_factory(["plant/+/actions"])
    async with Gateway(gateway_options(FAST)) as gw:
        for i in range(60):
            watch.publish(f"plant/b{i}/telemetry", orjson.dumps({"temperature": 99.0}))
        await eventually(lambda: len(watch.on("plant/")) == 60, what="60 stop actions")
        assert gw.metrics.outputs["action"] == 60


EVENTS = FAST.replace("outputs:\n", "outputs:\n  - uplink: {from: readings, kind: event}\n", 1)


async def test_a_new_alert_overtakes_an_unacknowledged_backlog(
    broker: Broker, collector_factory, gateway_options
) -> None:
    """No cloud acks anything: the event window fills, yet the alert goes out at once."""
    watch = collector_factory(["fogline/gw1/up/#", "plant/+/actions"])
    async with Gateway(gateway_options(EVENTS)) as gw:
        for i in range(6000):
            watch.client.publish(
                "plant/m/telemetry", orjson.dumps({"temperature": 20.0 + i % 5}), qos=0
            )
        await eventually(
            lambda: gw.metrics.step_in["readings"] >= 5000, what="the backlog", timeout=20
        )
        window = gw.metrics.gauges["uplink_inflight_batches"]
        await eventually(lambda: window()[(("kind", "event"),)] >= 8, what="the events in flight")
        watch.publish("plant/hot/telemetry", orjson.dumps({"temperature": 99.0}))
        alerts = await eventually(
            lambda: watch.on("fogline/gw1/up/alert"), timeout=3, what="the alert"
        )
        assert decode_batch(alerts[0][1])["records"][0]["data"]["machine"] == "hot"
        assert gw.uplink.pending >= 1000, "the backlog is still there, unacknowledged"


def fill(db: sqlite3.Connection) -> None:
    """Use up the free pages too."""
    for _ in range(64):
        db.execute("INSERT INTO filler VALUES (zeroblob(512))")


async def test_a_full_disk_holds_readings_acts_locally_and_loses_nothing_once_freed(
    broker: Broker, collector_factory, gateway_options
) -> None:
    """Issue 11: an outbox that cannot commit (SQLite's max_page_count, like a full disk)."""
    watch = collector_factory(["fogline/gw1/up/digest", "plant/+/actions"])
    async with Gateway(gateway_options(FAST)) as gw:
        db = gw.outbox._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages + 8}")  # not a page more: the disk is full
        db.execute("CREATE TABLE filler (x BLOB)")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            fill(db)
        sent = 0
        while gw.metrics.uplink["commit_failures"] < 3:  # until what fitted in free pages is used
            assert sent < 5000, "the outbox never filled up"
            for _ in range(20):
                body = orjson.dumps({"temperature": 20.0 + sent % 7})
                watch.publish(f"plant/d{sent % 4}/telemetry", body)
                sent += 1
            await asyncio.sleep(0.05)
        watch.publish("plant/d9/telemetry", orjson.dumps({"temperature": 99.0}))
        sent += 1
        # Local actions never wait on the outbox.
        await eventually(lambda: watch.on("plant/d9/actions"), what="the stop action")
        status = gw.health_status()
        assert status["status"] == "degraded"
        assert any("cannot commit" in r for r in status["reasons"]), status["reasons"]
        assert gw.delivery.pending()  # the readings are held unacknowledged at the broker
        db.execute("PRAGMA max_page_count = 1073741823")  # space again
        await eventually(lambda: gw.uplink.storage_error is None, what="commits again")

        def counted() -> int:
            seen = {}
            for _, payload in watch.on("fogline/gw1/up/digest"):
                for entry in decode_batch(payload)["records"]:
                    seen[entry["seq"]] = entry["data"]["count"]
            return sum(seen.values())

        await eventually(lambda: counted() == sent, timeout=20, what="every reading in a digest")
    assert gw.metrics.total_rejects() == 0


async def test_qos1_publishes_with_mqtt5_properties_are_read_too(
    broker: Broker, collector_factory, gateway_options
) -> None:
    """Plain QoS 1 publishes take the gateway's lean parser; one with properties (here user
    properties and a content type) takes gmqtt's, with the same result."""
    import paho.mqtt.client as paho  # noqa: PLC0415
    from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
    from paho.mqtt.properties import Properties  # noqa: PLC0415

    watch = collector_factory(["plant/+/actions"])
    v5 = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    v5.connect("127.0.0.1", broker.port)
    v5.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "north")]
    props.ContentType = "application/json"
    try:
        async with Gateway(gateway_options(FAST)) as gw:
            for machine, t in [("m-5", 20.0), ("m-5", 99.0)]:
                payload = orjson.dumps({"temperature": t})
                v5.publish(f"plant/{machine}/telemetry", payload, 1, properties=props)
            watch.publish("plant/m-6/telemetry", orjson.dumps({"temperature": 99.0}))
            await eventually(lambda: watch.on("plant/m-5/actions"), what="a v5 publish's stop")
            await eventually(lambda: watch.on("plant/m-6/actions"), what="a plain publish's stop")
            assert gw.metrics.step_in["readings"] == 3
            assert not gw.metrics.rejects
    finally:
        v5.loop_stop()
        v5.disconnect()
