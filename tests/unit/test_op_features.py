"""`features`: window features of raw sample blocks against a plain numpy reference."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oplab import make_op, rec, run_op

# Submodules, not `devices`: with tests/ on sys.path, `devices` alone is tests/devices.
from devices.clock import SimClock
from devices.factory import FactoryConfig, FactoryFleet
from devices.faults import FaultSpec
from gateway.clock import FakeClock
from gateway.operators import features
from gateway.operators.base import Fields
from gateway.operators.features import FeaturesConfig
from gateway.spec import PipelineError, parse_pipeline
from gateway.spectrum import band_rms

T0 = 1_700_000_000.0  # a multiple of 10: windows start at T0, T0 + 10, ...
RATE = 2000.0
BANDS = [[0, 100], [100, 500], [500, 1000]]
FEATURES = ["rms", "peak_to_peak", "crest", "kurtosis"]
BLOCK = {"sample_rate": RATE, "bands": BANDS, "features": FEATURES}
CONFIG = {
    "size": "10s",
    "aggregates": {"temperature": ["slope", "range", "delta", "mean"]},
    "blocks": {"vibration_block": BLOCK},
}
BAND_FIELDS = [f"vibration_block_band_{lo}_{hi}" for lo, hi in BANDS]
FEATURE_FIELDS = [f"vibration_block_{f}" for f in FEATURES]


def band_power(block: np.ndarray, rate: float, lo: float, hi: float) -> float:
    """Mean square of the block band-passed to [lo, hi): its spectrum masked, transformed back."""
    freqs = np.fft.rfftfreq(block.size, 1 / rate)
    keep = (freqs >= lo) & ((freqs < hi) | (hi >= rate / 2))
    return float(np.mean(np.fft.irfft(np.fft.rfft(block) * keep, block.size) ** 2))


def reference(blocks: list[np.ndarray], rate: float = RATE) -> dict[str, float]:
    """What one window of one key should report for `vibration_block`."""
    v = np.concatenate(blocks)
    rms = float(np.sqrt(np.mean(v**2)))
    d = v - v.mean()
    out = {
        "vibration_block_rms": rms,
        "vibration_block_peak_to_peak": float(np.ptp(v)),
        "vibration_block_crest": float(np.max(np.abs(v))) / rms,
        "vibration_block_kurtosis": float(np.mean(d**4) / np.mean(d**2) ** 2),
    }
    for (lo, hi), name in zip(BANDS, BAND_FIELDS, strict=True):
        out[name] = math.sqrt(np.mean([band_power(b, rate, lo, hi) for b in blocks]))
    return out


def check(fields: dict, want: dict[str, float]) -> None:
    for name, value in want.items():
        assert fields[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def by_window(records):
    out = {}
    for r in records:
        k = (r.fields["machine"], r.fields["window_start"])
        assert k not in out, f"window {k} emitted twice"
        out[k] = r
    return out


@st.composite
def arrivals(draw):
    """Readings with blocks of mixed lengths, at most `lateness` out of order (see window)."""
    lateness = draw(st.sampled_from([0, 2]))
    n = draw(st.integers(1, 40))
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["m1", "m2", "m3"]),
                st.integers(0, 119),  # quarter seconds over three windows
                st.sampled_from([8, 16, 17, 64]),  # block lengths: some windows mix them
                st.integers(0, lateness * 4),
            ),
            min_size=n,
            max_size=n,
        )
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    order = sorted(range(n), key=lambda i: (rows[i][1] + rows[i][3], i))
    records = [
        rec(
            rows[i][0],
            T0 + rows[i][1] / 4,
            temperature=float(rng.normal(60, 5)),
            vibration_block=rng.normal(0, 2, size=rows[i][2]).tolist(),
        )
        for i in order
    ]
    return lateness, records


@settings(max_examples=60, deadline=None)
@given(case=arrivals())
def test_per_key_windows_match_numpy(case):
    lateness, records = case
    clock = FakeClock(T0 + 1000)
    run = make_op("features", {**CONFIG, "lateness": lateness}, clock)
    for r in records:
        run.feed([r])
        run.timer(clock.now())
    run.flush()
    assert run.rejects == []
    assert run.side == []

    expected = defaultdict(list)
    for r in records:
        expected[r.key[0], math.floor(r.ts / 10) * 10].append(r)
    got = by_window(run.out)
    assert set(got) == set(expected)
    for (machine, start), rs in expected.items():
        fields = got[machine, start].fields
        assert fields["count"] == len(rs)
        rs_by_time = sorted(rs, key=lambda r: r.ts)  # stable: ties keep arrival order
        t = np.array([r.ts for r in rs_by_time])
        temp = np.array([r.fields["temperature"] for r in rs_by_time])
        slope = np.polyfit(t - t[0], temp, 1)[0] if np.ptp(t) > 0 else 0.0
        assert fields["temperature_slope"] == pytest.approx(slope, rel=1e-6, abs=1e-9)
        assert fields["temperature_range"] == pytest.approx(np.ptp(temp))
        # Ties in time: the earliest arrival counts as first (and as last).
        last = next(r for r in rs if r.ts == t[-1]).fields["temperature"]
        first = next(r for r in rs if r.ts == t[0]).fields["temperature"]
        assert fields["temperature_delta"] == pytest.approx(last - first)
        check(fields, reference([np.array(r.fields["vibration_block"]) for r in rs]))


def machines_records(n_keys: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    records = []
    for k in range(n_keys):
        for t in range(10):
            size = 256 if k % 3 else 200  # one key in three sends shorter blocks
            block = rng.normal(0, 1 + k % 5, size=size).tolist()
            records.append(
                rec(f"m{k:03d}", T0 + t, temperature=20.0 + t * k, vibration_block=block)
            )
    return records


def test_many_keys_closing_at_once_equal_one_at_a_time(monkeypatch):
    records = machines_records(120)
    calls = []

    def counted(blocks, sample_rate, bands):
        calls.append(np.shape(blocks))
        return band_rms(blocks, sample_rate, bands)

    monkeypatch.setattr(features, "band_rms", counted)
    together = run_op("features", CONFIG, records, flush=True).out
    assert len(together) == 120
    assert sorted(calls) == [(400, 200), (800, 256)]  # one FFT per block length, not per key
    for out in together:
        [alone] = run_op(
            "features", CONFIG, [r for r in records if r.key == out.key], flush=True
        ).out
        assert alone.fields.keys() == out.fields.keys()
        assert out.fields["machine"] == alone.fields["machine"]
        for name, value in alone.fields.items():
            if name != "machine":
                assert out.fields[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
    k7 = next(r for r in together if r.key == ("m007",))
    check(
        k7.fields,
        reference([np.array(r.fields["vibration_block"]) for r in records if r.key == ("m007",)]),
    )
    assert k7.fields["temperature_slope"] == pytest.approx(7.0)


def test_hopping_windows_each_block_in_two_windows():
    rng = np.random.default_rng(4)
    times = [0.0, 2.5, 5.0, 7.5, 12.0, 19.9]
    records = [
        rec("m1", T0 + t, vibration_block=rng.normal(0, 1 + t, size=128).tolist()) for t in times
    ]
    run = run_op(
        "features",
        {"size": "10s", "hop": "5s", "blocks": {"vibration_block": BLOCK}},
        records,
        flush=True,
    )
    got = {r.fields["window_start"] - T0: r.fields for r in run.out}
    assert set(got) == {-5, 0, 5, 10, 15}
    for start, fields in got.items():
        inside = [r for r, t in zip(records, times, strict=True) if start <= t < start + 10]
        assert fields["count"] == len(inside)
        check(fields, reference([np.array(r.fields["vibration_block"]) for r in inside]))


@pytest.mark.parametrize(
    ("block", "detail"),
    [
        ([1.0, "x", 3.0], "got 'x' at index 1"),
        ([1.0, None], "got None at index 1"),
        ([[1.0, 2.0]], "got [1.0, 2.0] at index 0"),
        ([], "got an empty list"),
        ("1,2,3", "got '1,2,3'"),
        (4.5, "got 4.5"),
        ({"samples": [1.0]}, "got {'samples': [1.0]}"),
    ],
)
def test_a_bad_block_rejects_the_whole_reading(block, detail):
    rng = np.random.default_rng(2)
    good = [
        rec("m1", T0 + t, temperature=50.0, vibration_block=rng.normal(size=64).tolist())
        for t in (1, 2)
    ]
    bad = rec("m1", T0 + 3, temperature=99.0, vibration_block=block)
    run = run_op("features", CONFIG, [good[0], bad, good[1]], flush=True)
    assert run.rejects == [
        (bad, "wrong_type", f"field 'vibration_block': expected a list of numbers, {detail}")
    ]
    [out] = run.out
    assert out.fields["count"] == 2
    assert out.fields["temperature_range"] == 0.0  # the bad reading's temperature is not counted
    check(out.fields, reference([np.array(r.fields["vibration_block"]) for r in good]))


def test_a_long_bad_block_is_described_briefly():
    bad = rec("m1", T0 + 1, vibration_block="x" * 10_000)
    run = run_op("features", CONFIG, [bad], flush=True)
    [(_, reason, detail)] = run.rejects
    assert reason == "wrong_type"
    assert len(detail) < 120
    assert run.out == []


def test_a_bad_number_field_is_rejected_before_the_block():
    bad = rec("m1", T0 + 1, temperature="hot", vibration_block=["x"])
    run = run_op("features", CONFIG, [bad], flush=True)
    assert run.rejects == [(bad, "wrong_type", "field 'temperature': expected a number, got 'hot'")]


def test_readings_without_a_block_count_but_add_no_block_features():
    records = [
        rec("m1", T0 + 1, temperature=50.0),
        rec("m1", T0 + 2, temperature=52.0, vibration_block=None),
        rec("m2", T0 + 1, temperature=40.0, vibration_block=[0.5, -0.5, 0.5, -0.5]),
    ]
    run = run_op("features", CONFIG, records, flush=True)
    got = {r.key[0]: r.fields for r in run.out}
    assert got["m1"]["count"] == 2
    assert got["m1"]["temperature_slope"] == 2.0
    assert not any(name.startswith("vibration_block") for name in got["m1"])
    assert got["m2"]["vibration_block_rms"] == 0.5
    assert got["m2"]["vibration_block_band_500_1000"] == pytest.approx(0.5)  # 1000 Hz: Nyquist


def test_without_blocks_it_is_a_window():
    records = [rec("m1", T0 + t, temperature=20.0 + t) for t in (1, 4, 2, 12)]
    config = {"size": 10, "lateness": 5, "aggregates": {"temperature": ["slope", "delta", "p95"]}}
    got = run_op("features", config, records, flush=True).out
    assert got == run_op("window", config, records, flush=True).out
    assert [r.fields["temperature_slope"] for r in got] == [1.0, 0.0]


def test_output_fields_are_the_windows_plus_the_block_features():
    run = run_op(
        "features",
        CONFIG,
        [rec("m1", T0 + 1, temperature=60.0, vibration_block=[1.0, -1.0] * 32, status="ok")],
        flush=True,
    )
    [out] = run.out
    assert list(out.fields) == [
        "machine", "window_start", "window_end", "count", "first_ts", "last_ts",
        "temperature_slope", "temperature_range", "temperature_delta", "temperature_mean",
        *FEATURE_FIELDS, *BAND_FIELDS,
    ]  # fmt: skip
    config = FeaturesConfig.model_validate(CONFIG)
    produced = config.produces(Fields(frozenset({"temperature", "vibration_block"})), ("machine",))
    assert produced.known == set(out.fields)
    assert (("blocks",), frozenset({"vibration_block"})) in config.references()


def test_a_bearing_fault_shows_in_the_high_band():
    """Blocks from the factory simulator: a bearing defect rings the 500-1000 Hz band."""
    faults = [FaultSpec("bearing", "m-02", 0.0)]
    fleet = FactoryFleet(FactoryConfig(count=3, raw=True), 7, SimClock(T0), faults)
    records, hf = [], defaultdict(list)
    for t in range(60):
        for topic, payload in fleet.step(float(t)):
            machine = topic.split("/")[2]
            records.append(rec(machine, payload["ts"], vibration_block=payload["vibration_block"]))
            if payload["ts"] >= T0 + 50:
                hf[machine].append(payload["vibration_hf"])
    run = run_op("features", {"size": "10s", "blocks": {"vibration_block": BLOCK}}, records)
    run.flush()
    last = {r.key[0]: r.fields for r in run.out if r.fields["window_start"] == T0 + 50}
    healthy, sick = last["m-01"], last["m-02"]
    band = "vibration_block_band_500_1000"
    assert sick[band] > 5 * healthy[band]
    assert sick["vibration_block_kurtosis"] > healthy["vibration_block_kurtosis"] + 1
    for machine, fields in last.items():  # the device's own per-block band RMS, averaged
        assert fields[band] == pytest.approx(np.sqrt(np.mean(np.square(hf[machine]))), abs=1e-3)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ({"v": {"sample_rate": 2000, "bands": [[500, 1200]]}}, "half the sample rate"),
        ({"v": {"sample_rate": 2000, "bands": [[500, 100]]}}, r"band \[500, 100\]"),
        ({"v": {"sample_rate": 2000, "bands": [[-5, 100]]}}, r"band \[-5, 100\]"),
        ({"v": {"sample_rate": 0, "features": ["rms"]}}, "greater than 0"),
        ({"v": {"sample_rate": 2000}}, "at least one band or feature"),
        ({"v": {"sample_rate": 2000, "features": ["mean"]}}, "peak_to_peak"),
        ({"v": {"sample_rate": 2000, "bands": [[0, 100], [0, 100.0000001]]}}, "both `band_0_100`"),
        ({"v": {"sample_rate": 2000, "bands": [[0, 100], [0, 100]]}}, "distinct names"),
        ({"temperature": {"sample_rate": 2000, "features": ["rms"]}}, "either"),
    ],
)
def test_invalid_configs(blocks, message):
    config = {"size": 10, "aggregates": {"temperature": ["mean"]}, "blocks": blocks}
    with pytest.raises(ValueError, match=message):
        make_op("features", config)


PIPELINE = """\
name: t
key: [machine]
sources:
  - mqtt:
      topics: ["plant/{machine}/telemetry"]
steps:
  - features:
      size: 10s
      blocks:
        vibration_block:
          sample_rate: 2000
          bands: [[500, 1000]]
          features: [kurtosis]
  - filter: {when: %s}
outputs:
  - uplink: {from: filter, kind: event}
"""


def test_pipeline_check_sees_the_new_fields():
    ok = parse_pipeline(
        PIPELINE % "vibration_block_band_500_1000 > 1 and vibration_block_kurtosis > 4"
    )
    assert ok.streams["features"].known >= {"vibration_block_kurtosis", "window_end"}
    with pytest.raises(PipelineError, match="did you mean 'vibration_block_band_500_1000'"):
        parse_pipeline(PIPELINE % "vibration_block_band_500_100 > 1")
