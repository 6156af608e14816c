"""The factory simulator: deterministic, physically plausible, and each fault does its job.

Every fault is checked against a healthy twin: the same seed without the fault draws the
same noise, so a difference is the fault's doing and nothing else.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from device_helpers import WALL0, at, by_device, contract, factory, ticks

from devices import FaultSpec
from devices.codec import Codec


def mean(series: list[dict], field: str, start: float, end: float) -> float:
    return float(np.mean([p[field] for p in series if start <= p["t"] < end]))


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    faults = [FaultSpec("bearing", "m-02", 5.0), FaultSpec("spikes", "m-03", 0.0)]
    one = ticks(factory(seed=11, faults=faults), 30)
    assert one == ticks(factory(seed=11, faults=faults), 30)
    other = ticks(factory(seed=12, faults=faults), 30)
    assert [m[0] for tick in one for m in tick] == [m[0] for tick in other for m in tick]
    assert one != other


def test_names_topics_and_payloads_meet_the_pipeline_contract() -> None:
    fleet = factory(count=25)
    assert fleet.devices[:2] == ["m-01", "m-02"]
    assert fleet.devices[-1] == "m-25"
    assert fleet.groups[9:11] == ["line-1", "line-2"]
    assert fleet.topics[10] == "factory/line-2/m-11/telemetry"
    codec = Codec("json", fleet.UNITS, fleet.base_names())
    sent = [(t, codec.encode(t, p)) for tick in ticks(fleet, 20) for t, p in tick]
    records = contract("factory.yaml", sent, WALL0)
    assert len(records) == 25 * 20
    first = orjson.loads(sent[0][1])
    assert list(first) == [
        "ts",
        "vibration",
        "vibration_peak",
        "vibration_hf",
        "vibration_1x",
        "temperature",
        "current",
        "rpm",
    ]
    assert first["ts"] == WALL0
    # A healthy machine: ISO 10816 "good" vibration, warm but far from alarms.
    assert all(0.5 < r.fields["vibration"] < 4.5 for r in records)
    assert all(35 < r.fields["temperature"] < 80 for r in records)
    assert all(900 < r.fields["rpm"] < 3000 and r.fields["current"] > 1 for r in records)
    assert records[0].key == ("line-1", "m-01")


def test_raw_block_is_the_waveform_the_features_describe() -> None:
    fleet = factory(count=3, raw=True, faults=[FaultSpec("bearing", "m-02", 0.0)])
    series = by_device(fleet, 40)
    for name in ("m-01", "m-02"):
        p = at(series[name], 39.0)
        block = np.array(p["vibration_block"])
        assert p["sample_rate"] == 2000.0
        assert block.shape == (256,)
        assert math.sqrt(np.mean(block**2)) == pytest.approx(p["vibration"], abs=0.002)
        assert np.max(np.abs(block)) == pytest.approx(p["vibration_peak"], abs=0.002)
    # On the healthy machine the largest line sits at the running speed (7.8 Hz bins).
    well = at(series["m-01"], 39.0)
    spectrum = np.abs(np.fft.rfft(np.array(well["vibration_block"]) * np.hanning(256)))
    assert abs(np.fft.rfftfreq(256, 1 / 2000)[np.argmax(spectrum)] - well["rpm"] / 60) < 8
    sick = np.array(at(series["m-02"], 39.0)["vibration_block"])
    well = np.array(at(series["m-01"], 39.0)["vibration_block"])
    band = np.fft.rfftfreq(256, 1 / 2000) >= 500
    share = [
        np.sum(np.abs(np.fft.rfft(b))[band] ** 2) / np.sum(np.abs(np.fft.rfft(b)) ** 2)
        for b in (sick, well)
    ]
    assert share[0] > 0.3  # the bearing's energy is in the high band
    assert share[1] < 0.1


def test_imbalance_raises_the_1x_component() -> None:
    faults = [FaultSpec("imbalance", "m-02", 10.0)]
    sick, twin = by_device(factory(faults=faults), 90), by_device(factory(), 90)
    assert sick["m-02"][:10] == twin["m-02"][:10]  # identical before the onset
    ratio = mean(sick["m-02"], "vibration_1x", 40, 90) / mean(twin["m-02"], "vibration_1x", 40, 90)
    assert 3.5 < ratio < 4.5
    assert mean(sick["m-02"], "vibration", 40, 90) > 2 * mean(twin["m-02"], "vibration", 40, 90)
    hf = mean(sick["m-02"], "vibration_hf", 40, 90) / mean(twin["m-02"], "vibration_hf", 40, 90)
    assert hf < 1.1  # imbalance lives at 1x, not in the bearing band
    assert sick["m-01"] == twin["m-01"]


def test_bearing_defect_raises_high_band_energy_and_rms() -> None:
    faults = [FaultSpec("bearing", "m-03", 10.0, 80.0)]
    sick, twin = by_device(factory(faults=faults), 120), by_device(factory(), 120)
    hf = mean(sick["m-03"], "vibration_hf", 40, 90) / mean(twin["m-03"], "vibration_hf", 40, 90)
    rms = mean(sick["m-03"], "vibration", 40, 90) / mean(twin["m-03"], "vibration", 40, 90)
    peak = mean(sick["m-03"], "vibration_peak", 40, 90) / mean(
        twin["m-03"], "vibration_peak", 40, 90
    )
    assert hf > 3
    assert rms > 1.2
    assert peak > 2
    one_x = mean(sick["m-03"], "vibration_1x", 40, 90) / mean(twin["m-03"], "vibration_1x", 40, 90)
    assert one_x == pytest.approx(1.0, abs=0.1)
    # Gone when the fault ends (the bearing was replaced).
    assert at(sick["m-03"], 100.0)["vibration_hf"] == at(twin["m-03"], 100.0)["vibration_hf"]


def test_overheating_crosses_95_degrees_within_two_minutes_and_a_stop_cools_it() -> None:
    faults = [FaultSpec("overheating", "m-02", 30.0)]
    fleet = factory(faults=faults)
    series = by_device(fleet, 150)
    twin = by_device(factory(), 150)
    crossed = next(p["t"] for p in series["m-02"] if p["temperature"] > 95)
    assert 30 < crossed < 150
    assert max(p["temperature"] for p in twin["m-02"]) < 85
    assert at(series["m-02"], 149.0)["current"] > at(twin["m-02"], 149.0)["current"]
    # What the gateway's critical rule does: stop. The motor spins down and cools.
    assert fleet.command(
        "factory/line-1/m-02/actions", b'{"command": "stop", "reason": "critical"}'
    )
    after = [fleet.step(150.0 + k) for k in range(1, 301)]
    m02 = [p for tick in after for topic, p in tick if "/m-02/" in topic]
    assert m02[10]["rpm"] < 0.01 * series["m-02"][-1]["rpm"]
    assert m02[-1]["rpm"] == 0.0
    assert m02[-1]["current"] < 0.2
    assert m02[-1]["vibration"] < 0.1
    assert m02[-1]["temperature"] < 50
    assert fleet.command("factory/line-1/m-02/actions", b'{"command": "start"}')
    assert fleet.step(460.0)[1][1]["rpm"] > 0


def test_a_spinning_down_machine_never_reads_a_negative_rpm() -> None:
    """The pipeline rejects a reading with rpm below 0 as out of range, so a tachometer's
    noise near standstill would cost a stopped machine its readings."""
    fleet = factory(count=400, seed=5)
    ticks(fleet, 5)
    for topic in fleet.topics:
        fleet.command(topic.replace("telemetry", "actions"), b'{"command": "stop"}')
    readings = [p for k in range(5, 40) for _, p in fleet.step(float(k))]
    assert min(p["rpm"] for p in readings) == 0.0


def test_commands_that_are_not_for_us_are_counted_and_ignored(caplog) -> None:
    fleet = factory()
    assert not fleet.command("factory/line-1/m-99/actions", b'{"command": "stop"}')
    assert not fleet.command("factory/line-1/m-01/actions", b"not json")
    assert not fleet.command("factory/line-1/m-01/actions", b'{"command": "dance"}')
    assert fleet.commands_ignored == 3
    assert fleet.running.all()
    assert "m-01: unknown command 'dance'" in caplog.text


def test_stuck_sensor_repeats_its_onset_reading() -> None:
    faults = [FaultSpec("stuck", "m-01", 10.0, 20.0)]
    series = by_device(factory(faults=faults), 40)["m-01"]
    twin = by_device(factory(), 40)["m-01"]
    frozen = {k: v for k, v in at(twin, 10.0).items() if k not in {"ts", "t"}}
    for p in series:
        values = {k: v for k, v in p.items() if k not in {"ts", "t"}}
        if 10 <= p["t"] < 30:
            assert values == frozen  # ts still advances: the node is alive, the sensor is not
        else:
            assert p == at(twin, p["t"])


def test_dropout_sends_nothing_while_it_lasts() -> None:
    faults = [FaultSpec("dropout", "m-04", 5.0, 10.0)]
    series = by_device(factory(faults=faults), 30)
    assert [p["t"] for p in series["m-04"]] == [t for t in range(30) if not 5 <= t < 15]
    assert len(series["m-01"]) == 30


def test_spikes_hit_about_one_reading_in_ten_and_leave_the_rest_untouched() -> None:
    faults = [FaultSpec("spikes", "m-02", 0.0)]
    sick, twin = by_device(factory(faults=faults), 300), by_device(factory(), 300)
    spiked = [(p, q) for p, q in zip(sick["m-02"], twin["m-02"], strict=True) if p != q]
    assert 10 < len(spiked) < 60
    for p, q in spiked:
        jumps = [
            p["vibration"] > 3.5 * q["vibration"],
            p["temperature"] > q["temperature"] + 25,
            p["current"] > 2.2 * q["current"],
        ]
        assert sum(jumps) == 1, (p, q)
