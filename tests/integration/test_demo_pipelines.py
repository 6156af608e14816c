"""The demo pipelines do what their headers promise, on a real broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from support import Broker, eventually, udp_port

from fogline.envelope import decode_batch
from gateway.app import Gateway

ROOT = Path(__file__).resolve().parents[2]


def fast(name: str, **replace: str) -> str:
    """A demo pipeline with short windows, so a test does not wait 30 s."""
    text = (ROOT / "pipelines" / f"{name}.yaml").read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


async def test_farm_example_from_its_header(
    broker: Broker, collector_factory, gateway_options
) -> None:
    text = fast(
        "farm",
        **{
            "size: 30s": "size: 1s",
            "lateness: 5s": "lateness: 0.2s",
            "127.0.0.1:5683": f"127.0.0.1:{udp_port()}",
            "warmup: 12": "warmup: 3",
        },
    )
    opts = gateway_options(text, "farm1", file=str(ROOT / "pipelines" / "farm.yaml"))
    watch = collector_factory(
        ["farm/+/+/valve/set", "fogline/farm1/up/alert", "fogline/farm1/up/digest"]
    )

    def uplinked(kind: str) -> list[dict[str, object]]:
        messages = watch.on(f"fogline/farm1/up/{kind}")
        return [r["data"] for _, p in messages for r in decode_batch(p)["records"]]

    async with Gateway(opts):
        # The plot's own normal first: dry and leaking are judged against it. One reading a
        # window, each window closed (its digest uplinked) before the next reading. Readings
        # that move a little, as a live probe's do (identical ones are a stuck probe).
        for n in range(1, 5):
            watch.publish(
                "farm/north/plot-7/telemetry",
                b'[{"n":"moisture","v":%.1f},{"n":"valve","v":0},{"n":"flow","v":0.0},'
                b'{"n":"pressure","v":%.2f},{"n":"battery","v":3.6}]'
                % (30 + n / 10, 2.6 + n / 100),
            )
            await eventually(lambda n=n: len(uplinked("digest")) >= n, what=f"digest {n}")
        # The line the header tells users to paste, four times: dry soil, and flow with the
        # valve closed, four readings in a row.
        for i in range(1, 5):
            watch.publish(
                "farm/north/plot-7/telemetry",
                b'[{"n":"moisture","v":14.%d},{"n":"valve","v":0},{"n":"flow","v":3.2},'
                b'{"n":"pressure","v":2.0%d},{"n":"battery","v":3.6}]' % (i, i),
            )
        commands = await eventually(
            lambda: len(watch.on("farm/north/plot-7/valve/set")) >= 2 and watch.on("farm/"),
            what="open and close commands",
        )
        assert sorted(orjson.loads(p)["command"] for _, p in commands) == ["close", "open"]

        # Alerts go through the outbox (committed first), so they may follow the actions.
        # The per-reading alerts (the leak, the fast drying) come before the window's.
        await eventually(
            lambda: {"dry_soil", "leak_valve_closed"} <= {a["rule"] for a in uplinked("alert")},
            what="both alerts on the uplink",
        )
        rules = {a["rule"] for a in uplinked("alert")}
        assert rules - {"dry_soil", "leak_valve_closed"} <= {
            "soil_drying_fast",
            "model_leak",
            "model_dry_soil",
            "probe_silent",
        }
        assert all(a["farm"] == "north" and a["plot"] == "plot-7" for a in uplinked("alert"))


async def test_factory_vibration_anomaly_raises_once(
    broker: Broker, collector_factory, gateway_options
) -> None:
    """Twelve normal windows, then a bearing fault: one warning alert, not a storm."""
    text = fast(
        "factory",
        **{
            "size: 10s": "size: 1s",
            "hop: 5s": "hop: 0.5s",
            "lateness: 2s": "lateness: 0s",
            "for: 10s": "for: 1s",
        },
    )
    opts = gateway_options(text, file=str(ROOT / "pipelines" / "factory.yaml"))
    watch = collector_factory(["fogline/gw1/up/alert"])
    async with Gateway(opts) as gw:
        # Readings timestamped in the past, one window per simulated second, sent at once.
        start = int(time.time()) - 30
        for second in range(20):
            fault = second >= 12
            for i in range(10):
                vib = 2.0 + 0.05 * ((i * 7 + second) % 5) + (4.0 if fault else 0.0)
                body = {"ts": start + second + i / 10, "vibration": vib, "temperature": 60.0}
                watch.publish("factory/l1/m-06/telemetry", orjson.dumps(body), qos=1)
        await eventually(lambda: gw.metrics.step_in["readings"] == 200, what="all readings")

        def raises() -> list[dict[str, Any]]:
            alerts = [
                r["data"]
                for _, p in watch.on("fogline/gw1/up/alert")
                for r in decode_batch(p)["records"]
            ]
            return [
                a for a in alerts if a["rule"] == "vibration_anomaly" and a["state"] == "raised"
            ]

        await eventually(raises, what="the vibration alert uplinked")
    raised = raises()
    assert len(raised) == 1
    assert raised[0]["machine"] == "m-06"
    assert raised[0]["values"]["vibration_p50_z"] > 4


async def test_no_task_outlives_the_gateway(broker: Broker, gateway_options) -> None:
    text = (ROOT / "pipelines" / "factory.yaml").read_text()
    before = asyncio.all_tasks()
    opts = gateway_options(text, file=str(ROOT / "pipelines" / "factory.yaml"))
    async with Gateway(opts) as gw:
        assert {t.get_name() for t in asyncio.all_tasks()} >= {"gw[gw1].pipeline", "gw[gw1].ticker"}
    await asyncio.sleep(0.1)
    left = {t.get_name() for t in asyncio.all_tasks() - before}
    assert left == set(), f"tasks left running: {left}"
    assert gw.stopped.is_set()
