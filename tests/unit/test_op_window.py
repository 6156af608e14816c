"""`window`: tumbling and hopping windows against a plain numpy reference."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oplab import make_op, rec, run_op

from gateway.clock import FakeClock

T0 = 1_700_000_000.0  # a multiple of 10: windows start at T0, T0 + 10, ...
AGGS = ["count", "sum", "mean", "min", "max", "std", "rms", "p50", "p95"]

REFERENCE = {
    "count": lambda v: float(len(v)),
    "sum": lambda v: float(np.sum(v)),
    "mean": lambda v: float(np.mean(v)),
    "min": lambda v: float(np.min(v)),
    "max": lambda v: float(np.max(v)),
    "std": lambda v: float(np.std(v)),
    "rms": lambda v: float(np.sqrt(np.mean(np.square(v)))),
    "p50": lambda v: float(np.percentile(v, 50)),
    "p95": lambda v: float(np.percentile(v, 95)),
}


def by_window(records):
    """(machine, window_start) -> output record, asserting there is only one of each."""
    out = {}
    for r in records:
        k = (r.fields["machine"], r.fields["window_start"])
        assert k not in out, f"window {k} emitted twice"
        out[k] = r
    return out


@st.composite
def arrivals(draw):
    """Readings in [T0, T0 + 60) with an arrival order at most `lateness` out of order.

    Each reading gets a delay in [0, lateness] and readings arrive by `ts + delay`, so a
    reading is never more than `lateness` older than any reading that arrived before it.
    """
    lateness = draw(st.sampled_from([0, 1, 2, 5]))
    n = draw(st.integers(1, 80))
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["m1", "m2", "m3"]),
                st.integers(0, 239),  # quarter seconds: exact float times
                st.floats(-1000, 1000, allow_nan=False, allow_infinity=False),
                st.integers(0, lateness * 4),
            ),
            min_size=n,
            max_size=n,
        )
    )
    order = sorted(range(n), key=lambda i: (rows[i][1] + rows[i][3], i))
    records = [rec(rows[i][0], T0 + rows[i][1] / 4, x=rows[i][2]) for i in order]
    return lateness, records


@settings(max_examples=150, deadline=None)
@given(case=arrivals())
def test_tumbling_event_time_matches_numpy(case):
    lateness, records = case
    clock = FakeClock(T0 + 1000)  # the wall clock never moves: only readings move time
    run = make_op("window", {"size": "10s", "lateness": lateness, "aggregates": {"x": AGGS}}, clock)
    for r in records:
        run.feed([r])
        run.timer(clock.now())
    run.flush()

    assert run.side == []
    assert run.op.late == 0
    assert run.op.open_state() == 0

    expected = defaultdict(list)
    for r in records:
        expected[r.key[0], math.floor(r.ts / 10) * 10].append(r.fields["x"])
    got = by_window(run.out)
    assert set(got) == set(expected)
    for (machine, start), xs in expected.items():
        out = got[machine, start]
        assert out.key == (machine,)
        assert out.ts == start + 10
        assert set(out.fields) == {
            "machine", "window_start", "window_end", "count", "first_ts", "last_ts", *(f"x_{a}" for a in AGGS)
        }  # fmt: skip
        assert out.fields["window_end"] == start + 10
        assert out.fields["count"] == len(xs)
        v = np.array(xs)
        for agg in AGGS:
            want = pytest.approx(REFERENCE[agg](v), rel=1e-9, abs=1e-9)
            assert out.fields[f"x_{agg}"] == want, agg


def test_windows_are_emitted_in_start_order_and_only_once():
    records = [rec("m1", T0 + t, x=float(t)) for t in (1, 11, 21, 31)]
    clock = FakeClock(T0)
    run = make_op("window", {"size": 10, "aggregates": {"x": ["sum"]}}, clock)
    run.feed(records)
    first = run.timer(clock.now())
    assert [r.fields["window_start"] for r in first] == [T0, T0 + 10, T0 + 20]
    assert run.timer(clock.now()) == []
    assert [r.fields["window_start"] for r in run.flush()] == [T0 + 30]
    assert run.flush() == []


def test_hopping_each_reading_lands_in_two_windows():
    times = [0.0, 2.5, 5.0, 7.5, 12.0, 19.9]
    records = [rec("m1", T0 + t, x=t) for t in times]
    run = run_op(
        "window",
        {"size": "10s", "hop": "5s", "aggregates": {"x": ["count", "sum"]}},
        records,
        flush=True,
    )
    got = {r.fields["window_start"] - T0: r.fields for r in run.out}
    expected = {}
    for start in (-5, 0, 5, 10, 15):
        xs = [t for t in times if start <= t < start + 10]
        expected[start] = (len(xs), sum(xs))
    assert {s: (f["count"], f["x_sum"]) for s, f in got.items()} == expected
    assert sum(f["count"] for f in got.values()) == 2 * len(times)
    assert all(f["window_end"] - f["window_start"] == 10 for f in got.values())


def test_hopping_on_timer_closes_each_window_at_its_own_end():
    clock = FakeClock(T0)
    run = make_op("window", {"size": 10, "hop": 5, "aggregates": {"x": ["count"]}}, clock)
    run.feed([rec("m1", T0 + 1, x=1.0), rec("m1", T0 + 6, x=2.0)])
    assert [r.fields["window_start"] - T0 for r in run.timer(clock.now())] == [-5]
    run.feed([rec("m1", T0 + 10, x=3.0)])
    assert [r.fields["window_start"] - T0 for r in run.timer(clock.now())] == [0]
    assert [r.fields["x_count"] for r in run.out] == [1, 2]


def test_processing_time_uses_the_clock_not_the_timestamp():
    clock = FakeClock(T0 + 3)
    run = make_op(
        "window",
        {"size": 10, "time": "processing", "lateness": 60, "aggregates": {"x": ["sum"]}},
        clock,
    )
    run.feed([rec("m1", 5.0, x=1.0), rec("m2", 1e12, x=2.0)])  # event times are ignored
    clock.advance(4)  # T0 + 7
    run.feed([rec("m1", 0.0, x=10.0)])
    assert run.timer(clock.now()) == []
    clock.advance(3)  # T0 + 10: the window [T0, T0 + 10) ends; lateness does not apply
    run.feed([rec("m1", 0.0, x=100.0)])
    out = run.timer(clock.now())
    assert {(r.key, r.fields["window_start"], r.fields["x_sum"]) for r in out} == {
        (("m1",), T0, 11.0),
        (("m2",), T0, 2.0),
    }
    clock.advance(10)
    [late_window] = run.timer(clock.now())
    assert late_window.fields["window_start"] == T0 + 10
    assert late_window.fields["x_sum"] == 100.0
    assert run.op.late == 0


def test_on_timer_waits_for_end_plus_lateness():
    clock = FakeClock(T0 + 500)
    run = make_op("window", {"size": 10, "lateness": 2, "aggregates": {"x": ["max"]}}, clock)
    run.feed([rec("m1", T0 + 1, x=1.0), rec("m1", T0 + 11.9, x=2.0)])
    assert run.timer(clock.now()) == []  # watermark T0 + 11.9 < end 10 + lateness 2
    run.feed([rec("m1", T0 + 8, x=5.0)])  # out of order, but within lateness: accepted
    assert run.timer(clock.now()) == []
    run.feed([rec("m1", T0 + 12, x=3.0)])
    [closed] = run.timer(clock.now())
    assert closed.fields["window_start"] == T0
    assert closed.fields["count"] == 2
    assert closed.fields["x_max"] == 5.0
    assert run.op.open_state() == 1  # [T0 + 10, T0 + 20) is still open
    assert run.side == []


def test_watermark_advances_with_the_wall_clock_when_devices_fall_silent():
    clock = FakeClock(T0 + 5)
    run = make_op("window", {"size": 10, "lateness": 2, "aggregates": {"x": ["mean"]}}, clock)
    run.feed([rec("m1", T0 + 5, x=4.0)])
    clock.advance(6.9)
    assert run.timer(clock.now()) == []
    clock.advance(0.1)  # watermark T0 + 12
    [closed] = run.timer(clock.now())
    assert closed.fields["x_mean"] == 4.0


def test_a_record_for_a_closed_window_goes_to_the_late_side_stream():
    clock = FakeClock(T0 + 100)
    run = make_op("window", {"size": 10, "lateness": 1, "aggregates": {"x": ["sum"]}}, clock)
    run.feed([rec("m1", T0 + 2, x=1.0), rec("m1", T0 + 11, x=2.0)])
    [closed] = run.timer(clock.now())
    assert closed.fields["x_sum"] == 1.0
    late = rec("m1", T0 + 9.5, x=50.0)
    other_key = rec("m2", T0 + 3, x=7.0)  # windows close for every key at once
    assert run.feed([late, rec("m1", T0 + 12, x=3.0), other_key]) == []
    assert run.side == [("late", late), ("late", other_key)]
    assert run.op.late == 2
    assert run.rejects == []
    out = run.flush()
    assert [(r.key, r.fields["window_start"], r.fields["x_sum"]) for r in out] == [
        (("m1",), T0 + 10, 5.0)
    ]


def test_hopping_record_is_late_only_when_all_its_windows_closed():
    clock = FakeClock(T0 + 100)
    run = make_op("window", {"size": 10, "hop": 5, "aggregates": {"x": ["count"]}}, clock)
    run.feed([rec("m1", T0 + 1, x=1.0), rec("m1", T0 + 10, x=1.0)])
    run.timer(clock.now())  # closes [T0 - 5, T0 + 5) and [T0, T0 + 10)
    run.feed([rec("m1", T0 + 6, x=1.0)])  # [T0, T0 + 10) closed, [T0 + 5, T0 + 15) open
    assert run.op.late == 0
    run.feed([rec("m1", T0 + 4, x=1.0)])  # both its windows closed
    assert run.op.late == 1
    assert [s for s, _ in run.side] == ["late"]
    counts = {r.fields["window_start"] - T0: r.fields["count"] for r in run.flush()}
    assert counts == {5: 2, 10: 1}


def test_output_fields_are_exactly_key_window_count_and_aggregates():
    run = run_op(
        "window",
        {"size": 10, "aggregates": {"vibration": ["rms", "p95"], "temperature": ["mean"]}},
        [rec("m1", T0 + 1, vibration=3.0, temperature=60.0, current=2.0, status="ok")],
        flush=True,
    )
    [out] = run.out
    assert out.fields == {
        "machine": "m1",
        "window_start": T0,
        "window_end": T0 + 10,
        "count": 1,
        "first_ts": T0 + 1,
        "last_ts": T0 + 1,
        "vibration_rms": 3.0,
        "vibration_p95": 3.0,
        "temperature_mean": 60.0,
    }


def test_a_field_without_values_in_a_window_omits_its_aggregates():
    records = [
        rec("m1", T0 + 1, x=1.0),
        rec("m1", T0 + 2, x=3.0, y=None),
        rec("m2", T0 + 1, x=2.0, y=10.0),
        rec("m1", T0 + 11, y=4.0),
    ]
    run = run_op(
        "window",
        {"size": 10, "aggregates": {"x": ["mean"], "y": ["max", "count"]}},
        records,
        flush=True,
    )
    got = {(r.key[0], r.fields["window_start"] - T0): r.fields for r in run.out}
    assert set(got[("m1", 0)]) == {
        "machine",
        "window_start",
        "window_end",
        "count",
        "first_ts",
        "last_ts",
        "x_mean",
    }
    assert got[("m1", 0)]["count"] == 2
    assert got[("m1", 0)]["x_mean"] == 2.0
    assert got[("m2", 0)]["y_max"] == 10.0
    assert got[("m2", 0)]["y_count"] == 1
    assert set(got[("m1", 10)]) == {
        "machine", "window_start", "window_end", "count", "first_ts", "last_ts", "y_max", "y_count"
    }  # fmt: skip
    assert got[("m1", 10)]["count"] == 1


def test_first_and_last_follow_event_time_not_arrival():
    records = [rec("m1", T0 + t, x=float(t)) for t in (5, 2, 8, 3)]
    run = run_op(
        "window",
        {"size": 10, "lateness": 10, "aggregates": {"x": ["first", "last"]}},
        records,
        flush=True,
    )
    [out] = run.out
    assert (out.fields["x_first"], out.fields["x_last"]) == (2.0, 8.0)


@pytest.mark.parametrize(
    "config",
    [
        {"size": 10, "hop": 20, "aggregates": {"x": ["mean"]}},  # hop > size
        {"size": 100, "hop": 0.5, "aggregates": {"x": ["mean"]}},  # 200 windows per reading
        {"size": 0, "aggregates": {"x": ["mean"]}},
        {"size": 10, "aggregates": {"x": ["median"]}},
    ],
)
def test_invalid_configs(config):
    with pytest.raises(ValueError, match="validation error"):
        make_op("window", config)


def test_a_window_without_aggregates_counts_and_times_readings():
    """A liveness window: how many readings, and when the first and the last came."""
    run = run_op(
        "window", {"size": 10}, [rec("m1", T0 + 1, x=1), rec("m1", T0 + 7.5, x=2)], flush=True
    )
    [out] = run.out
    assert out.fields["count"] == 2
    assert (out.fields["first_ts"], out.fields["last_ts"]) == (T0 + 1, T0 + 7.5)
    assert out.fields["window_end"] - out.fields["last_ts"] == 2.5


@pytest.mark.parametrize("value", ["hot", True, [1.0], {"v": 1}])
def test_a_value_that_is_not_a_number_rejects_its_reading_and_only_it(value: object) -> None:
    good = rec("m1", T0 + 1, v=2.0, w=None)
    bad = rec("m1", T0 + 2, v=1.0, w=value)
    run = run_op(
        "window",
        {"size": "10s", "aggregates": {"v": ["sum"], "w": ["max"]}},
        [good, bad],
        flush=True,
    )
    assert run.rejects == [(bad, "wrong_type", f"field 'w': expected a number, got {value!r}")]
    assert [r.fields["v_sum"] for r in run.out] == [2.0]
