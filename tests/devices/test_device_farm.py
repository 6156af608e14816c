"""The farm simulator: the sun dries the soil, valves water it, and each fault does its job."""

from __future__ import annotations

import numpy as np
import orjson
from device_helpers import MIDNIGHT, WALL0, at, by_device, contract, farm, ticks

from devices import FaultSpec
from devices.codec import Codec

RATE = 0.1  # one reading every 10 simulated seconds


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    faults = [FaultSpec("leak", "plot-2", 60.0), FaultSpec("battery", "plot-3", 0.0)]
    one = ticks(farm(seed=5, faults=faults), 3600, RATE)
    assert one == ticks(farm(seed=5, faults=faults), 3600, RATE)
    assert one != ticks(farm(seed=6, faults=faults), 3600, RATE)


def test_senml_packs_meet_the_pipeline_contract() -> None:
    fleet = farm(count=25)
    assert fleet.topics[11] == "farm/south/plot-12/telemetry"
    assert fleet.command_topic("south", "plot-12") == "farm/south/plot-12/valve/set"
    codec = Codec("senml", fleet.UNITS, fleet.base_names())
    sent = [(t, codec.encode(t, p)) for tick in ticks(fleet, 600, RATE) for t, p in tick]
    assert orjson.loads(sent[0][1]) == [
        {
            "bn": "urn:dev:plot-1:",
            "bt": WALL0,
            "n": "moisture",
            "u": "%",
            "v": orjson.loads(sent[0][1])[0]["v"],
        },
        {"n": "valve", "v": 0},
        {"n": "flow", "u": "l/min", "v": 0.0},
        {"n": "pressure", "u": "bar", "v": orjson.loads(sent[0][1])[3]["v"]},
        {"n": "battery", "u": "V", "v": orjson.loads(sent[0][1])[4]["v"]},
    ]
    records = contract("farm.yaml", sent, WALL0)
    assert len(records) == 25 * 60
    assert records[0].key == ("north", "plot-1")
    assert records[0].ts == WALL0
    assert all(15 < r.fields["moisture"] < 45 and 2.2 < r.fields["pressure"] < 3.0 for r in records)


def test_the_sun_dries_the_soil_by_day_not_by_night() -> None:
    fleet = farm(count=40)
    moisture = []
    for hour in range(25):
        fleet.step(hour * 3600.0)
        moisture.append(fleet.moisture.copy())
    day = np.mean(moisture[10] - moisture[14])  # 10:00 -> 14:00 UTC of the simulated day
    night = np.mean(moisture[0] - moisture[4])  # 00:00 -> 04:00
    assert day > 0.4
    assert day > 3 * max(night, 0.01)


def test_an_open_valve_flows_and_wets_the_soil_then_closes_on_time() -> None:
    fleet, twin = farm(), farm()
    assert fleet.command("farm/north/plot-2/valve/set", b'{"command": "open", "minutes": 20}')
    wet, dry = by_device(fleet, 1800, RATE)["plot-2"], by_device(twin, 1800, RATE)["plot-2"]
    during = at(wet, 600.0)
    assert during["valve"] == 1
    assert 9 < during["flow"] < 17
    assert during["pressure"] < at(dry, 600.0)["pressure"] - 0.3  # friction while flowing
    assert at(wet, 1200.0)["valve"] == 0
    assert at(wet, 1200.0)["flow"] == 0.0
    gained = at(wet, 1790.0)["moisture"] - at(dry, 1790.0)["moisture"]
    assert 2 < gained < 6
    assert fleet.command("farm/north/plot-2/valve/set", b'{"command": "open"}')
    assert fleet.command("farm/north/plot-2/valve/set", b'{"command": "close"}')
    assert fleet.step(1800.0)[1][1]["valve"] == 0


def test_leak_flows_with_the_valve_closed_and_pressure_falls() -> None:
    faults = [FaultSpec("leak", "plot-3", 60.0)]
    sick = by_device(farm(faults=faults), 600, RATE)["plot-3"]
    twin = by_device(farm(), 600, RATE)["plot-3"]
    assert sick[:6] == twin[:6]
    leaking = [p for p in sick if p["t"] >= 200]
    assert all(p["valve"] == 0 and p["flow"] > 0.5 for p in leaking)
    pressures = [p["pressure"] for p in sick if 60 <= p["t"] <= 180]
    assert pressures[0] - pressures[-1] > 0.8  # falling while the leak opens up
    assert all(p["pressure"] < at(twin, p["t"])["pressure"] - 1.0 for p in leaking)
    assert all(p["flow"] == 0.0 for p in twin)


def test_blocked_line_opens_the_valve_but_nothing_flows() -> None:
    faults = [FaultSpec("blocked", "plot-1", 100.0, 600.0)]
    sick = by_device(farm(faults=faults), 900, RATE)["plot-1"]
    twin = by_device(farm(), 900, RATE)["plot-1"]
    blocked = [p for p in sick if 120 <= p["t"] < 700]
    assert all(p["valve"] == 1 and p["flow"] < 0.3 for p in blocked)
    assert all(p["pressure"] >= at(twin, p["t"])["pressure"] for p in blocked)  # no flow, no loss
    assert all(p["valve"] == 0 for p in twin)
    # Unblocked while the cycle still runs: water flows again.
    assert at(sick, 800.0)["valve"] == 1
    assert at(sick, 800.0)["flow"] > 9


def test_dryout_drives_moisture_below_20_within_minutes() -> None:
    faults = [FaultSpec("dryout", "plot-4", 60.0)]
    sick = by_device(farm(faults=faults), 900, RATE)["plot-4"]
    twin = by_device(farm(), 900, RATE)["plot-4"]
    below = next(p["t"] for p in sick if p["moisture"] < 20)
    assert 60 < below < 360
    assert min(p["moisture"] for p in twin) > 20


def test_battery_sag_makes_readings_noisy_and_biased_then_silent() -> None:
    faults = [FaultSpec("battery", "plot-2", 0.0, 1200.0)]
    sick = by_device(farm(faults=faults), 1800, RATE)["plot-2"]
    twin = by_device(farm(), 1800, RATE)["plot-2"]
    late = [(p, at(twin, p["t"])) for p in sick if 400 <= p["t"] < 600]
    error = np.array([p["moisture"] - q["moisture"] for p, q in late])
    assert error.mean() < -2
    assert error.std() > 1
    assert all(p["battery"] < q["battery"] - 0.3 for p, q in late)
    # Flat after the 10 minute sag: silent from 600 s until the fault ends.
    times = [p["t"] for p in sick]
    assert 590.0 in times
    assert not any(600 <= t < 1200 for t in times)
    assert 1200.0 in times
    short = [FaultSpec("battery", "plot-2", 0.0, 100.0)]  # a short fault: sag in 70 s
    times = [p["t"] for p in by_device(farm(faults=short), 200, RATE)["plot-2"]]
    assert 60.0 in times
    assert not any(70 <= t < 100 for t in times)


def test_sensor_faults_apply_to_probes_too() -> None:
    faults = [
        FaultSpec("stuck", "plot-1", 100.0, 100.0),
        FaultSpec("dropout", "plot-2", 100.0, 100.0),
    ]
    series = by_device(farm(faults=faults), 400, RATE)
    stuck = {p["moisture"] for p in series["plot-1"] if 100 <= p["t"] < 200}
    assert len(stuck) == 1
    assert not [p for p in series["plot-2"] if 100 <= p["t"] < 200]


def test_sim_clock_sets_the_time_of_day() -> None:
    noon = farm(sim_epoch0=MIDNIGHT + 12 * 3600)
    assert noon.sun(0.0) == 1.0
    assert farm().sun(0.0) == 0.0
