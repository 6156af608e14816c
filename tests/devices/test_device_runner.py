"""The runner paces a fleet in wall time (a fake clock here), batches, labels and reports."""

from __future__ import annotations

import asyncio
import io
import logging
import types
from collections import Counter
from pathlib import Path

import orjson
import pytest
from device_helpers import WALL0

from devices import (
    Codec,
    FactoryConfig,
    FactoryFleet,
    FakeClock,
    FarmConfig,
    FarmFleet,
    FaultSpec,
    Runner,
    SimClock,
)
from devices.labels import labels, write_labels
from devices.status import Status
from devices.transport import MemoryTransport


def make(
    speed: float = 1.0, faults: list[FaultSpec] | None = None, count: int = 10
) -> tuple[FactoryFleet, FakeClock, Codec]:
    clock = FakeClock(WALL0)
    fleet = FactoryFleet(FactoryConfig(count), 3, SimClock(clock.time(), speed), faults or [])
    return fleet, clock, Codec("json", fleet.UNITS, fleet.base_names())


@pytest.mark.parametrize(
    ("rate", "speed", "duration"), [(2.0, 1.0, 10.0), (2.0, 10.0, 1.0), (0.5, 4.0, 3.0)]
)
async def test_rate_is_readings_per_device_per_simulated_second(
    rate: float, speed: float, duration: float
) -> None:
    fleet, clock, codec = make(speed)
    sink = MemoryTransport()
    runner = Runner(fleet, sink, codec, rate=rate, duration=duration, clock=clock)
    stats = await runner.run(asyncio.Event())
    per_device = Counter(topic for topic, _ in sink.messages)
    assert set(per_device.values()) == {round(rate * duration * speed)}
    assert len(per_device) == 10
    stamps = sorted({orjson.loads(p)["ts"] for _, p in sink.messages})
    assert stamps[1] - stamps[0] == pytest.approx(1 / (rate * speed), abs=1e-3)
    assert stats.sent == stats.generated == len(sink.messages)
    assert stats.unsent == 0
    assert clock.time() == pytest.approx(WALL0 + duration)  # it runs for the whole duration


async def test_a_tick_is_published_in_spread_batches() -> None:
    fleet, clock, codec = make(count=10)

    class Recording(MemoryTransport):
        def __init__(self) -> None:
            super().__init__()
            self.when: list[float] = []

        async def send(self, messages):
            self.when.append(clock.time())
            return await super().send(messages)

    sink = Recording()
    runner = Runner(fleet, sink, codec, rate=1.0, duration=2.0, clock=clock, batch=3)
    await runner.run(asyncio.Event())
    assert sink.batches == 8  # 4 batches (3+3+3+1) per tick
    assert [round(w - WALL0, 3) for w in sink.when] == [
        0,
        0.125,
        0.25,
        0.375,
        1,
        1.125,
        1.25,
        1.375,
    ]


async def test_stop_ends_the_run() -> None:
    fleet, clock, codec = make()
    stop = asyncio.Event()

    class Stopping(MemoryTransport):
        async def send(self, messages):
            if len(self.messages) >= 30:
                stop.set()
            return await super().send(messages)

    sink = Stopping()
    stats = await Runner(fleet, sink, codec, rate=1.0, duration=None, clock=clock).run(stop)
    assert stats.ticks == 4
    assert len(sink.messages) == 40


async def test_labels_are_the_ground_truth_in_wall_and_simulated_time(tmp_path: Path) -> None:
    faults = [
        FaultSpec("bearing", "m-03", 2.0, 3.0),
        FaultSpec("overheating", "m-07", 4.0),
        FaultSpec("stuck", "m-01", 50.0),
    ]
    fleet, clock, codec = make(speed=10.0, faults=faults)
    planned = labels(fleet)
    assert [row["end"] for row in planned] == [WALL0 + 5.0, None, None]
    await Runner(fleet, MemoryTransport(), codec, rate=1.0, duration=8.0, clock=clock).run(
        asyncio.Event()
    )
    path = tmp_path / "truth.jsonl"
    write_labels(path, labels(fleet, clock.time()))
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert rows == [
        {
            "fault": "bearing",
            "device": "m-03",
            "key": {"line": "line-1", "machine": "m-03"},
            "topic": "factory/line-1/m-03/telemetry",
            "start": WALL0 + 2.0,
            "end": WALL0 + 5.0,
            "sim_start": WALL0 + 20.0,
            "sim_end": WALL0 + 50.0,
        },
        {
            "fault": "overheating",
            "device": "m-07",
            "key": {"line": "line-1", "machine": "m-07"},
            "topic": "factory/line-1/m-07/telemetry",
            "start": WALL0 + 4.0,
            "end": WALL0 + 8.0,  # open-ended: until the run stopped
            "sim_start": WALL0 + 40.0,
            "sim_end": WALL0 + 80.0,
        },
    ]  # the stuck sensor was due after the stop: it never happened, so it is not truth


def test_farm_labels_carry_the_farm_key_and_the_simulated_calendar() -> None:
    clock = SimClock(WALL0, 60.0, sim_epoch0=1_780_272_000.0)
    fleet = FarmFleet(FarmConfig(20), 1, clock, [FaultSpec("leak", "plot-17", 30.0, 60.0)])
    (row,) = labels(fleet)
    assert row["key"] == {"farm": "south", "plot": "plot-17"}
    assert (row["start"], row["end"]) == (WALL0 + 30, WALL0 + 90)
    assert (row["sim_start"], row["sim_end"]) == (1_780_272_000.0 + 1800, 1_780_272_000.0 + 5400)


async def test_status_line_on_a_terminal_and_log_lines_otherwise(caplog) -> None:
    faults = [FaultSpec("bearing", "m-03", 2.0, 2.0)]
    fleet, clock, codec = make(faults=faults)
    screen = io.StringIO()
    status = Status(fleet, clock, screen, tty=True)
    await Runner(
        fleet, MemoryTransport(), codec, rate=1, duration=3, clock=clock, status=status
    ).run(asyncio.Event())
    status.close()
    lines = screen.getvalue().split("\r\x1b[K")
    assert lines[0] == ""
    assert lines[1] == "factory: 10 devices | 10 sent | 20/s | sim 00:00:00 | no faults active"
    assert (
        lines[-1] == "factory: 10 devices | 30 sent | 10/s | sim 00:00:02 | faults: bearing m-03\n"
    )
    assert screen.getvalue().endswith("\n")

    caplog.set_level(logging.INFO, "fogline.devices")
    fleet, clock, codec = make(faults=faults)
    status = Status(fleet, clock, io.StringIO(), tty=False, log_every=2.0)
    await Runner(
        fleet, MemoryTransport(), codec, rate=1, duration=6, clock=clock, status=status
    ).run(asyncio.Event())
    messages = [r.getMessage() for r in caplog.records]
    assert "fault started: bearing on m-03 (sim 00:00:02)" in messages
    assert "fault ended: bearing on m-03 (sim 00:00:04)" in messages
    assert any(m.startswith("factory: 10 devices | ") and "/s | sim" in m for m in messages)


def test_the_package_exports_what_it_says() -> None:
    import devices  # noqa: PLC0415

    public = {
        name
        for name, value in vars(devices).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(devices.__all__) == public
