"""Conformance checks every anomaly-score operator passes (a new detector gets them for free).

The detectors are found in the registry as subclasses of `AnomalyScore`.
"""

from __future__ import annotations

import numpy as np
import pytest
from oplab import make_op, rec, run_op

from gateway.operators import REGISTRY
from gateway.operators.anomaly import AnomalyScore

DETECTORS = sorted(name for name, op in REGISTRY.items() if issubclass(op, AnomalyScore))


def test_the_known_detectors_are_found():
    assert {"zscore", "ewma"} <= set(DETECTORS)


def default_out(name: str) -> str:
    return f"x_{REGISTRY[name].Config.suffix}"


def noisy(n: int, level: float = 10.0, sigma: float = 0.1, seed: int = 7) -> list[float]:
    return [float(v) for v in np.random.default_rng(seed).normal(level, sigma, n)]


def scores(run, field: str) -> list[float]:
    return [r.fields[field] for r in run.out]


@pytest.fixture(params=DETECTORS)
def name(request):
    """The registered name of each anomaly-score operator in turn."""
    return request.param


def test_score_is_zero_during_warmup(name):
    xs = [1.0, 50.0, -3.0, 1e6, 2.0, 7.0, 100.0]
    run = run_op(name, {"field": "x", "warmup": 5}, [rec("m1", i, x=x) for i, x in enumerate(xs)])
    s = scores(run, default_out(name))
    assert s[:5] == [0.0] * 5
    assert all(type(v) is float for v in s)
    assert s[5] > 0
    assert s[6] > 0


def test_warmup_counts_per_key(name):
    records = [rec("m1", i, x=float(i % 3)) for i in range(6)] + [rec("m2", 6, x=99.0)]
    run = run_op(name, {"field": "x", "warmup": 3}, records)
    assert run.out[-1].fields[default_out(name)] == 0.0  # m2's first sample


def test_spike_scores_higher_than_any_normal_point(name):
    xs = [*noisy(200), 15.0]
    run = run_op(name, {"field": "x", "warmup": 10}, [rec("m1", i, x=x) for i, x in enumerate(xs)])
    s = scores(run, default_out(name))
    assert s[-1] > max(s[:-1])
    assert s[-1] > 10 * max(s[50:-1])


def test_negative_spike_scores_high_too(name):
    xs = [*noisy(100), 5.0]
    run = run_op(name, {"field": "x", "warmup": 10}, [rec("m1", i, x=x) for i, x in enumerate(xs)])
    s = scores(run, default_out(name))
    assert s[-1] > max(s[:-1])


def test_keys_are_independent(name):
    a, b = noisy(60, 10.0, 0.1, seed=1), noisy(60, 500.0, 25.0, seed=2)
    config = {"field": "x", "warmup": 5}
    alone = run_op(name, config, [rec("m1", i, x=x) for i, x in enumerate(a)])
    mixed = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        mixed += [rec("m2", i, x=y), rec("m1", i, x=x)]
    both = run_op(name, config, mixed)
    out = default_out(name)
    assert [r.fields[out] for r in both.out if r.key == ("m1",)] == scores(alone, out)
    assert both.op.open_state() == 2


def test_out_name_is_honoured(name):
    run = run_op(name, {"field": "x", "out": "unusual", "warmup": 1}, [rec("m1", 0, x=1.0)])
    [r] = run.out
    assert r.fields["unusual"] == 0.0
    assert default_out(name) not in r.fields


def test_output_fields_are_the_declared_ones(name):
    config = REGISTRY[name].Config.model_validate({"field": "x"})
    run = run_op(name, {"field": "x"}, [rec("m1", 0, x=1.0, y="keep")])
    [r] = run.out
    added = set(r.fields) - {"machine", "x", "y"}
    assert added == {config.output_field(), *config.extra_outputs()}
    assert r.fields["y"] == "keep"
    assert (r.key, r.ts) == (("m1",), 0.0)


def test_input_record_is_not_mutated(name):
    original = rec("m1", 0, x=1.0)
    run = run_op(name, {"field": "x"}, [original])
    assert original.fields == {"machine": "m1", "x": 1.0}
    assert run.out[0] is not original


@pytest.mark.parametrize(("value", "shown"), [("3.5", "'3.5'"), (True, "True"), ([1.0], "[1.0]")])
def test_non_numeric_field_is_rejected_as_wrong_type(name, value, shown):
    bad = rec("m1", 1, x=value)
    run = run_op(name, {"field": "x"}, [rec("m1", 0, x=1.0), bad, rec("m1", 2, x=2)])
    assert [r.ts for r in run.out] == [0, 2]
    assert run.rejects == [(bad, "wrong_type", f"field 'x': expected a number, got {shown}")]


def test_missing_or_null_field_is_rejected_as_missing_input(name):
    # As `infer` counts it: a window of readings without an optional field is not a type error.
    run = run_op(name, {"field": "x"}, [rec("m1", 0, y=1.0), rec("m1", 1, x=None)])
    assert run.out == []
    assert run.reasons == ["missing_input", "missing_input"]
    assert run.rejects[0][2] == "no field 'x' (or null)"


def test_deterministic(name):
    xs = [*noisy(80), 14.0, 10.0, 9.0]
    records = [rec(f"m{i % 3}", i, x=x) for i, x in enumerate(xs)]
    config = {"field": "x", "warmup": 4, "exclude_above": 3}
    first = run_op(name, config, records)
    second = run_op(name, config, records)
    assert [r.fields for r in first.out] == [r.fields for r in second.out]


def test_state_carries_across_batches(name):
    xs = noisy(40)
    records = [rec("m1", i, x=x) for i, x in enumerate(xs)]
    whole = run_op(name, {"field": "x", "warmup": 5}, records)
    split = make_op(name, {"field": "x", "warmup": 5})
    for i in range(0, 40, 7):
        split.feed(records[i : i + 7])
    assert [r.fields for r in split.out] == [r.fields for r in whole.out]


def test_exclude_above_keeps_a_lasting_fault_from_being_learnt(name):
    xs = [*noisy(100), *([12.0] * 30)]  # a lasting shift of 20 sigma
    records = [rec("m1", i, x=x) for i, x in enumerate(xs)]
    out = default_out(name)
    guarded = scores(run_op(name, {"field": "x", "warmup": 10, "exclude_above": 4}, records), out)
    learning = scores(run_op(name, {"field": "x", "warmup": 10}, records), out)
    assert min(guarded[100:]) > 4
    assert guarded[-1] == pytest.approx(guarded[100])  # nothing of the fault was learnt
    assert learning[-1] < guarded[-1]  # without it, the fault becomes the new normal
