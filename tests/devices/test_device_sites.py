"""Sites: profiles and drawn sites vary the fleets, their sensors and their delivery.

The reference site is the simulator the pipelines were first tuned on; every other site
must differ from it in the ways the issue names, and still keep the healthy twin (same seed,
no fault: the same noise), which the detection benchmark relies on.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from device_helpers import by_device, factory, farm, ticks

from devices import FaultSpec
from devices.sites import FIELD, PROFILES, REFERENCE, site


def test_site_names_profiles_and_drawn_sites() -> None:
    assert site("reference") is REFERENCE
    assert site("sandy").field_capacity == (16.0, 22.0)
    assert site("seed:12") == site("seed:12")
    assert site("seed:12") != site("seed:13")
    assert not site("seed:12").keyphasor
    with pytest.raises(ValueError, match=r"unknown site 'sandi'.*did you mean 'sandy'"):
        site("sandi")
    assert set(PROFILES) >= {"reference", "field", "rough-hall", "slow-line", "sandy"}


def test_a_site_described_from_outside_overrides_any_field() -> None:
    mine = site("field, noise=1.4,pressure=-0.4,field_capacity=18..24,dither=false,battery=3.4")
    assert dataclasses.replace(mine, name="field") == dataclasses.replace(
        FIELD, noise=1.4, pressure=-0.4, field_capacity=(18.0, 24.0), dither=False,
        battery=(3.4, 3.4),
    )  # fmt: skip
    assert (
        mine.name == "field,noise=1.4,pressure=-0.4,field_capacity=18..24,dither=false,battery=3.4"
    )
    assert site("seed:7,speed=0.6,resonance=none") == dataclasses.replace(
        site("seed:7"), name="seed:7,speed=0.6,resonance=none", speed=0.6, resonance=None
    )
    for spec, error in (
        ("field,nois=1", "unknown site field 'nois' (did you mean 'noise'?); expected speed, "),
        ("field,noise=abc", "site field noise: expected a number above 0, got 'abc'"),
        ("field,speed=0", "site field speed: expected a number above 0, got '0'"),
        ("field,pressure=nan", "site field pressure: expected a number, got 'nan'"),
        ("field,field_capacity=24..18", "site field field_capacity: expected a range LOW..HIGH"),
        ("field,dither=2", "site field dither: expected true or false, got '2'"),
        ("field,keyphasor=none", "site field keyphasor: expected true or false, got 'none'"),
        ("field,noise", "site field noise: expected noise=VALUE, got 'noise'"),
        ("field,disorder=0.9", "site field disorder: expected a share from 0 to 0.5, got '0.9'"),
        ("sandi,noise=1", "unknown site 'sandi'"),
    ):
        with pytest.raises(ValueError, match="^" + re.escape(error)):
            site(spec)


def test_calibration_offsets_differ_per_device_and_drift() -> None:
    plain = by_device(factory(count=6), 5)
    cal = by_device(factory(count=6, site=dataclasses.replace(REFERENCE, calibration=1.0)), 5)
    offsets = [cal[d][0]["temperature"] - plain[d][0]["temperature"] for d in plain]
    assert np.std(offsets) > 0.3  # a degree or two, one way or the other, machine by machine
    drifting = dataclasses.replace(REFERENCE, drift=1.0)
    fleet = factory(count=6, site=drifting)
    twin = factory(count=6)
    early = [
        a[1]["temperature"] - b[1]["temperature"]
        for a, b in zip(fleet.step(0.0), twin.step(0.0), strict=True)
    ]
    late = [
        a[1]["temperature"] - b[1]["temperature"]
        for a, b in zip(fleet.step(36000.0), twin.step(36000.0), strict=True)
    ]
    assert max(abs(x) for x in early) < 0.02
    assert max(abs(x) for x in late) > 0.5  # ten hours of creep


def test_jitter_and_disorder_deliver_late_and_twice() -> None:
    jumbled = dataclasses.replace(REFERENCE, jitter=0.05, disorder=0.2)
    messages = [m for tick in ticks(factory(count=4, site=jumbled), 200) for m in tick]
    per_device: dict[str, list[float]] = {}
    for topic, payload in messages:
        per_device.setdefault(topic, []).append(payload["ts"])
    backwards = sum(int(np.sum(np.diff(ts) < 0)) for ts in per_device.values())
    twice = sum(len(ts) - len(set(ts)) for ts in per_device.values())
    assert backwards > 20
    assert twice > 20
    assert len(messages) > 800  # nothing lost: 4 x 200 plus the duplicates
    fractions = {round(ts % 1, 3) for ts in per_device[messages[0][0]]}
    assert len(fractions) > 50  # not on the step's second


def test_one_x_estimated_from_the_spectrum_tracks_the_true_component() -> None:
    faults = [FaultSpec("imbalance", "m-02", 60.0)]
    keyed = by_device(factory(count=6, faults=faults), 150)
    blind = by_device(
        factory(count=6, faults=faults, site=dataclasses.replace(REFERENCE, keyphasor=False)), 150
    )
    for device in keyed:
        true = np.mean([p["vibration_1x"] for p in keyed[device][:50]])
        estimate = np.mean([p["vibration_1x"] for p in blind[device][:50]])
        assert estimate == pytest.approx(true, rel=0.3)
    grown = np.mean([p["vibration_1x"] for p in blind["m-02"][120:]])
    before = np.mean([p["vibration_1x"] for p in blind["m-02"][:50]])
    assert grown > 2.5 * before


def test_a_field_site_keeps_the_healthy_twin_and_stuck_sensors_flicker() -> None:
    faults = [FaultSpec("stuck", "m-01", 10.0), FaultSpec("bearing", "m-03", 5.0)]
    sick = by_device(factory(count=4, faults=faults, site=FIELD), 40)
    twin = by_device(factory(count=4, site=FIELD), 40)
    assert sick["m-02"] == twin["m-02"]
    assert sick["m-04"] == twin["m-04"]
    stuck = [p["temperature"] for p in sick["m-01"] if p["t"] >= 10]
    assert len(set(stuck)) > 1  # not bit-identical
    assert max(stuck) - min(stuck) <= 0.021  # one digit either way


def test_farm_sites_move_soil_pressure_and_battery() -> None:
    ref = [p for tick in ticks(farm(count=8), 60, rate=0.2) for _, p in tick]
    sandy = [p for tick in ticks(farm(count=8, site=site("sandy")), 60, rate=0.2) for _, p in tick]

    def mean(rows: list[dict[str, float]], name: str) -> float:
        return float(np.mean([p[name] for p in rows]))

    assert mean(sandy, "moisture") < mean(ref, "moisture") - 5
    assert mean(sandy, "pressure") < mean(ref, "pressure") - 0.2
    assert mean(sandy, "battery") < 3.5  # a chemistry below the reference rule, healthy
