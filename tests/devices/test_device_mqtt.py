"""The simulators over MQTT with a real mosquitto, and in a closed loop with the real gateway."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
from device_helpers import ROOT, contract
from support import Broker, eventually

from devices import (
    Codec,
    FactoryConfig,
    FactoryFleet,
    FarmConfig,
    FarmFleet,
    FaultSpec,
    Runner,
    SimClock,
    SystemClock,
)
from devices.fleet import Fleet
from devices.transport import MqttTransport
from fogline.urls import parse_broker_url
from gateway.app import Gateway


async def run_fleet(
    broker: Broker,
    make: type[Fleet],
    config: object,
    *,
    rate: float,
    duration: float,
    speed: float = 1.0,
    fmt: str = "json",
    faults: list[FaultSpec] | None = None,
    during=None,
) -> tuple[Fleet, int]:
    """Connect, then start the simulated clock and run; `during(fleet)` runs alongside."""
    fleet = make(config, 1, SimClock(time.time(), speed), faults or [])
    transport = MqttTransport(
        parse_broker_url(broker.url),
        f"devices-test-{make.name}",
        qos=1,
        command_filters=[make.COMMAND_FILTER],
        on_command=fleet.command,
    )
    async with transport:
        fleet.start_at(time.time())
        codec = Codec(fmt, fleet.UNITS, fleet.base_names())
        runner = Runner(fleet, transport, codec, rate=rate, duration=duration, clock=SystemClock())
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(runner.run(asyncio.Event()), name="devices.test.run")
            if during is not None:
                await during(fleet)
        stats = running.result()
    assert stats.unsent == 0
    assert stats.behind < 0.5
    return fleet, stats.sent


async def test_factory_readings_arrive_as_the_pipeline_expects_and_a_stop_is_obeyed(
    broker: Broker, collector_factory
) -> None:
    watch = collector_factory(["factory/+/+/telemetry"])

    async def stop_m02(fleet: Fleet) -> None:
        await eventually(lambda: len(watch.on("factory/line-1/m-02/")) >= 2, what="m-02 readings")
        watch.publish("factory/line-1/m-02/actions", b'{"command": "stop"}')

    fleet, sent = await run_fleet(
        broker, FactoryFleet, FactoryConfig(5), rate=5.0, duration=2.0, during=stop_m02
    )
    assert sent == 5 * 5 * 2
    await eventually(lambda: len(watch.on("factory/")) == sent, what="every reading")
    messages = watch.on("factory/")
    assert Counter(t for t, _ in messages) == {
        f"factory/line-1/m-0{i}/telemetry": 10 for i in range(1, 6)
    }
    records = contract("factory.yaml", messages, time.time())
    assert len(records) == sent
    assert abs(records[-1].ts - time.time()) < 1.0
    m02 = [orjson.loads(p) for t, p in messages if "/m-02/" in t]
    assert fleet.commands_applied == 1
    assert not fleet.running[1]
    assert m02[-1]["rpm"] < 0.6 * m02[0]["rpm"]  # spinning down
    m01 = [orjson.loads(p) for t, p in messages if "/m-01/" in t]
    assert abs(m01[-1]["rpm"] - m01[0]["rpm"]) < 20


async def test_farm_senml_over_mqtt_and_a_valve_that_opens_on_command(
    broker: Broker, collector_factory
) -> None:
    watch = collector_factory(["farm/+/+/telemetry"])

    async def open_plot2(fleet: Fleet) -> None:
        await eventually(lambda: watch.on("farm/north/plot-2/"), what="plot-2 readings")
        watch.publish("farm/north/plot-2/valve/set", b'{"command": "open", "minutes": 20}')

    _, sent = await run_fleet(
        broker, FarmFleet, FarmConfig(3), rate=4.0, duration=1.5, fmt="senml", during=open_plot2
    )
    assert sent == 3 * 4 * 1.5
    await eventually(lambda: len(watch.on("farm/")) == sent, what="every pack")
    records = contract("farm.yaml", watch.on("farm/"), time.time())
    plot2 = [r.fields for r in records if r.key == ("north", "plot-2")]
    assert plot2[0]["valve"] == 0
    assert plot2[-1]["valve"] == 1
    assert plot2[-1]["flow"] > 9


async def test_the_gateway_stops_an_overheating_machine(
    broker: Broker, collector_factory, gateway_options
) -> None:
    """The demo's loop: overheating -> critical alert -> stop action -> the machine cools."""
    watch = collector_factory(["factory/+/+/actions"])
    path = ROOT / "pipelines" / "factory.yaml"
    opts = gateway_options(path.read_text(), file=str(path))
    temperatures: list[float] = []

    async def watch_m02(fleet: Fleet) -> None:
        await eventually(lambda: watch.on("factory/line-1/m-02/actions"), what="the stop action")
        temperatures.append(float(fleet.temperature[1]))

    async with Gateway(opts):
        fleet, _ = await run_fleet(
            broker,
            FactoryFleet,
            FactoryConfig(3),
            rate=0.5,
            speed=40.0,  # 95 °C is about a simulated minute away: 1.5 s here
            duration=4.0,
            faults=[FaultSpec("overheating", "m-02", 0.0)],
            during=watch_m02,
        )
    (action,) = [orjson.loads(p) for _, p in watch.on("factory/")]
    assert action["command"] == "stop"
    assert action["reason"] == "critical_temperature"
    factory = fleet
    assert list(factory.running) == [True, False, True]
    assert temperatures[0] > 95
    assert factory.temperature[1] < temperatures[0] - 15
    assert factory.rpm[1] == 0.0
