"""`deadband`: report by exception, per key, against the last *passed* value."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from oplab import make_op, rec, run_op

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(values, max_size=60), threshold=st.floats(min_value=1e-3, max_value=1e4))
def test_passes_exactly_the_values_that_moved_from_the_last_passed_one(xs, threshold):
    records = [rec("m1", float(i), x=x) for i, x in enumerate(xs)]
    run = run_op("deadband", {"fields": {"x": threshold}}, records)
    passed = {r.ts for r in run.out}
    assert all(r is records[int(r.ts)] for r in run.out)
    last = None
    for r in records:
        x = r.fields["x"]
        if last is None:
            assert r.ts in passed  # the first record of a key always passes
            last = x
        elif abs(x - last) >= threshold:
            assert r.ts in passed, f"{x} moved {abs(x - last)} >= {threshold} from {last}"
            last = x
        else:
            assert r.ts not in passed, f"{x} moved only {abs(x - last)} < {threshold}"
    assert run.rejects == []


@settings(max_examples=100, deadline=None)
@given(xs=st.lists(values, min_size=1, max_size=40), threshold=st.floats(0.01, 1e4))
def test_passed_values_are_at_least_threshold_apart(xs, threshold):
    run = run_op(
        "deadband", {"fields": {"x": threshold}}, [rec("m", i, x=x) for i, x in enumerate(xs)]
    )
    out = [r.fields["x"] for r in run.out]
    assert out[0] == xs[0]
    assert all(abs(b - a) >= threshold for a, b in itertools.pairwise(out))


def test_slow_drift_is_caught():
    xs = [20.0, 20.2, 20.4, 20.6, 20.8, 21.0]
    run = run_op("deadband", {"fields": {"t": 0.5}}, [rec("m1", i, t=x) for i, x in enumerate(xs)])
    assert [r.fields["t"] for r in run.out] == [20.0, 20.6]


def test_percent_mode():
    xs = [100.0, 105.0, 110.0, 120.0, 121.0, 109.0, 108.0]
    run = run_op(
        "deadband",
        {"fields": {"x": 10}, "mode": "percent"},
        [rec("m1", i, x=x) for i, x in enumerate(xs)],
    )
    # 110 is 10 % above 100; 120 is only 9.1 % above 110, 121 is 10 %;
    # 109 is 9.9 % below 121, 108 is 10.7 %.
    assert [r.fields["x"] for r in run.out] == [100.0, 110.0, 121.0, 108.0]


def test_percent_mode_of_a_negative_value():
    xs = [-100.0, -95.0, -89.0]
    run = run_op(
        "deadband",
        {"fields": {"x": 10}, "mode": "percent"},
        [rec("m1", i, x=x) for i, x in enumerate(xs)],
    )
    assert [r.fields["x"] for r in run.out] == [-100.0, -89.0]


def test_percent_mode_an_unchanged_zero_does_not_pass():
    # 0 -> 0 has not moved at all: a deadband must not pass it (10 % of 0 is 0, and
    # |0 - 0| >= 0 is true, so without care every reading of an idle sensor passes).
    xs = [0.0, 0.0, 0.0, 5.0]
    run = run_op(
        "deadband",
        {"fields": {"x": 10}, "mode": "percent"},
        [rec("m1", i, x=x) for i, x in enumerate(xs)],
    )
    assert [r.ts for r in run.out] == [0.0, 3.0]


def test_heartbeat_passes_an_unchanged_value_after_the_duration():
    times = [0, 100, 299, 300, 450, 599.9, 600, 601]
    run = run_op(
        "deadband",
        {"fields": {"x": 1.0}, "heartbeat": "5m"},
        [rec("m1", t, x=5.0) for t in times],
    )
    assert [r.ts for r in run.out] == [0, 300, 600]


def test_heartbeat_counts_from_the_last_pass_of_any_cause():
    records = [
        rec("m1", 0, x=0.0),
        rec("m1", 200, x=9.0),
        rec("m1", 400, x=9.0),
        rec("m1", 500, x=9.0),
    ]
    run = run_op("deadband", {"fields": {"x": 1.0}, "heartbeat": 300}, records)
    assert [r.ts for r in run.out] == [0, 200, 500]


def test_without_heartbeat_an_unchanged_value_never_passes():
    run = run_op("deadband", {"fields": {"x": 1.0}}, [rec("m1", t * 1e6, x=1.0) for t in range(5)])
    assert [r.ts for r in run.out] == [0.0]


def test_keys_are_independent():
    records = [
        rec("m1", 0, x=0.0),
        rec("m2", 0, x=100.0),
        rec("m1", 1, x=0.5),  # m1: 0.5 from 0
        rec("m2", 1, x=0.5),  # m2: 99.5 from 100 -> passes
        rec("m1", 2, x=1.0),  # m1: 1.0 from 0 -> passes
        rec("m2", 2, x=1.0),  # m2: 0.5 from 0.5
        rec("m3", 2, x=1.0),  # a new key passes
    ]
    run = run_op("deadband", {"fields": {"x": 1.0}}, records)
    assert [(r.key[0], r.ts) for r in run.out] == [
        ("m1", 0),
        ("m2", 0),
        ("m2", 1),
        ("m1", 2),
        ("m3", 2),
    ]
    assert run.op.open_state() == 3


def test_any_field_moving_passes_and_resets_all_fields():
    config = {"fields": {"t": 0.5, "h": 2.0}}
    records = [
        rec("m1", 0, t=20.0, h=50.0),
        rec("m1", 1, t=20.1, h=51.5),
        rec("m1", 2, t=20.6, h=51.5),  # t moved: passes, h's last passed value is now 51.5
        rec("m1", 3, t=20.6, h=53.0),  # h moved 1.5 from 51.5: stays
        rec("m1", 4, t=20.6, h=53.5),  # h moved 2.0 from 51.5: passes
    ]
    run = run_op("deadband", config, records)
    assert [r.ts for r in run.out] == [0, 2, 4]


def test_state_carries_across_batches():
    run = make_op("deadband", {"fields": {"x": 1.0}})
    assert run.feed([rec("m1", 0, x=0.0), rec("m1", 1, x=0.6)]) == [run.out[0]]
    assert [r.ts for r in run.feed([rec("m1", 2, x=0.9), rec("m1", 3, x=1.0)])] == [3]


def test_first_record_without_the_field_is_rejected():
    bad = rec("m1", 0, y=1.0)
    run = run_op("deadband", {"fields": {"x": 1.0}}, [bad, rec("m1", 1, x=3.0)])
    assert [r.ts for r in run.out] == [1]
    assert run.rejects == [(bad, "missing_field", "field 'x' is missing")]
