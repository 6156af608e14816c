"""`ewma`: an exponentially weighted mean that forgets, and the distance from it."""

from __future__ import annotations

import math

import pytest
from oplab import rec, run_op


def test_adds_the_moving_mean_and_its_score():
    run = run_op("ewma", {"field": "flow", "alpha": 0.5, "warmup": 1}, [rec("m1", 0, flow=4.0)])
    assert run.out[0].fields == {"machine": "m1", "flow": 4.0, "flow_ewma": 4.0, "flow_ewma_z": 0.0}


@pytest.mark.parametrize("alpha", [0.1, 0.25, 1.0])
def test_mean_moves_towards_a_step_by_alpha_per_sample(alpha):
    xs = [0.0] * 5 + [1.0] * 10
    run = run_op(
        "ewma",
        {"field": "x", "alpha": alpha, "warmup": 1},
        [rec("m1", i, x=x) for i, x in enumerate(xs)],
    )
    means = [r.fields["x_ewma"] for r in run.out]
    assert means[:5] == [0.0] * 5
    assert means[5:] == pytest.approx([1 - (1 - alpha) ** k for k in range(1, 11)])


def test_a_slow_drift_becomes_normal_where_zscore_keeps_alarming():
    xs = [10.0 + 0.05 * i + (0.1 if i % 2 else -0.1) for i in range(400)]
    records = [rec("m1", i, x=x) for i, x in enumerate(xs)]
    ewma = [r.fields["x_ewma_z"] for r in run_op("ewma", {"field": "x", "alpha": 0.2}, records).out]
    zscore = [r.fields["x_z"] for r in run_op("zscore", {"field": "x"}, records).out]
    assert max(ewma[50:]) < 3
    assert zscore[-1] > ewma[-1]


def test_constant_signal_scores_zero():
    run = run_op("ewma", {"field": "x", "warmup": 2}, [rec("m1", i, x=5.0) for i in range(10)])
    assert {r.fields["x_ewma_z"] for r in run.out} == {0.0}
    assert {r.fields["x_ewma"] for r in run.out} == {5.0}


CLIPPED = {"field": "t", "alpha": 0.3, "warmup": 1, "clip": 3, "min_std": 0.2}


def test_clip_keeps_spikes_from_pulling_the_mean():
    xs = [65.3, 65.4, 121.7, 65.6, 133.4, 65.2]  # two spikes two readings apart
    records = [rec("m1", i, t=x) for i, x in enumerate(xs)]
    plain = run_op("ewma", {**CLIPPED, "clip": None}, records)
    clipped = run_op("ewma", CLIPPED, records)
    assert max(r.fields["t_ewma"] for r in plain.out) > 93
    assert max(r.fields["t_ewma"] for r in clipped.out) < 66.5


def test_clip_follows_a_lasting_change_within_a_few_samples():
    xs = [60.0] * 10 + [90.0] * 20  # a step of 30 (150 of the floor's spreads)
    out = run_op("ewma", CLIPPED, [rec("m1", i, t=x) for i, x in enumerate(xs)]).out
    means = [r.fields["t_ewma"] for r in out]
    assert means[10] == pytest.approx(60.18)  # 0.3 x 3 x 0.2 at first
    assert means[17] > 70  # most of the way within 8 samples
    assert means[-1] > 89.5
    ramp = [rec("m1", i, t=60.0 + 0.9 * i) for i in range(60)]  # a degree a second, nearly
    plain = run_op("ewma", {**CLIPPED, "clip": None}, ramp).out
    clipped = run_op("ewma", CLIPPED, ramp).out
    assert clipped[-1].fields["t_ewma"] == pytest.approx(plain[-1].fields["t_ewma"])


def test_tau_is_a_lag_in_event_time_so_a_gap_forgets_the_past():
    """Every 10 s at tau 95 s, a step is followed as alpha 0.1 would; after 15 silent minutes
    the next sample is nearly the whole average, where alpha 0.1 takes a tenth of it."""
    xs = [(10.0 * i, 10.0) for i in range(30)] + [(290.0 + 900.0, 20.0)]
    records = [rec("m1", ts, x=x) for ts, x in xs]
    lag = [r.fields["x_ewma"] for r in run_op("ewma", {"field": "x", "tau": "95s"}, records).out]
    per_sample = [r.fields["x_ewma"] for r in run_op("ewma", {"field": "x"}, records).out]
    assert lag[-1] == pytest.approx(20.0, abs=0.01)
    assert per_sample[-1] == pytest.approx(11.0)
    steady = [rec("m1", 10.0 * i, x=0.0 if i < 5 else 1.0) for i in range(15)]
    means = [r.fields["x_ewma"] for r in run_op("ewma", {"field": "x", "tau": 95}, steady).out]
    assert means[5] == pytest.approx(1 - math.exp(-10 / 95))
    # A late sample (no later than the last one) teaches nothing.
    late = run_op("ewma", {"field": "x", "tau": 95}, [*steady, rec("m1", 50.0, x=100.0)]).out
    assert late[-1].fields["x_ewma"] == pytest.approx(means[-1])


def test_alpha_and_tau_together_are_refused():
    with pytest.raises(Exception, match="not both"):
        run_op("ewma", {"field": "x", "alpha": 0.2, "tau": "95s"}, [])


def test_learn_when_scores_every_sample_and_learns_only_where_it_holds():
    """A lag fed only by trusted samples: while a sensor repeats a stale value it holds what
    it knew, and the first fresh sample after it counts as one after a gap."""
    config = {"field": "x", "tau": "95s", "warmup": 1, "learn_when": "frozen < 3"}
    steady = [rec("m1", 10.0 * i, x=10.0, frozen=0) for i in range(10)]
    stale = [rec("m1", 100.0 + 10.0 * i, x=6.0, frozen=10 + i) for i in range(40)]
    fresh = [rec("m1", 500.0, x=14.0, frozen=0)]
    out = run_op("ewma", config, steady + stale + fresh).out
    assert [r.fields["x_ewma"] for r in out[10:50]] == [10.0] * 40
    assert out[20].fields["x_ewma_z"] > 0  # the stale samples are still scored
    assert out[-1].fields["x_ewma"] == pytest.approx(14.0 - 4.0 * math.exp(-410 / 95))
    plain = run_op("ewma", {**config, "learn_when": None}, steady + stale + fresh).out
    assert plain[-1].fields["x_ewma"] < 9.5  # the stale value had been learnt
    starts_frozen = [rec("m1", 0, x=6.0, frozen=9), rec("m1", 10, x=6.0, frozen=10)]
    first = run_op("ewma", config, [*starts_frozen, rec("m1", 20, x=10.0, frozen=0)]).out
    assert [r.fields["x_ewma"] for r in first] == [None, None, 10.0]  # nothing learnt yet


def test_a_learn_when_that_fails_rejects_that_record_only():
    config = {"field": "x", "warmup": 1, "learn_when": "frozen < 3"}
    run = run_op("ewma", config, [rec("m1", 0, x=1.0, frozen=0), rec("m1", 1, x=2.0, frozen="?")])
    assert len(run.out) == 1
    assert "learn_when" in run.rejects[0][2]


def test_a_relative_floor_lets_a_baseline_leave_a_quiet_start():
    """Six quiet windows at 0.99, then the machine's own level, 13 % higher: with
    `exclude_above` alone the tiny spread of the start keeps every later value out and the
    baseline stays at the start for good; 5 % of the level as the least spread lets it
    follow, while a value three times the level is still kept out."""
    xs = [0.99, 0.985, 0.995, 0.99, 0.99, 0.985] + [1.12 + 0.02 * (i % 3) for i in range(300)]
    base = {"field": "x", "alpha": 0.025, "warmup": 6, "exclude_above": 4}
    records = [rec("m1", i, x=x) for i, x in enumerate(xs)]
    stuck = run_op("ewma", base, records).out[-1].fields["x_ewma"]
    follows = run_op("ewma", {**base, "min_rel_std": 0.05}, records).out[-1].fields["x_ewma"]
    assert stuck == pytest.approx(0.989, abs=0.005)
    assert follows == pytest.approx(1.14, abs=0.01)
    fault = [*records, *(rec("m1", 306 + i, x=3.4) for i in range(50))]
    kept_out = run_op("ewma", {**base, "min_rel_std": 0.05}, fault).out[-1].fields["x_ewma"]
    assert kept_out == pytest.approx(follows)
