"""`baseline`: per-key median and MAD, signed scores, faults not learnt, optional fields."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from oplab import make_op, rec

from gateway.operators.baseline import _median_mad


def test_each_key_is_judged_against_its_own_normal_with_a_signed_score() -> None:
    run = make_op("baseline", {"fields": {"t": 0.1}, "warmup": 5, "history": 20})
    rng = np.random.default_rng(1)
    for k in range(20):
        run.feed(
            [rec("cool", k, t=40 + rng.normal(0, 0.5)), rec("warm", k, t=70 + rng.normal(0, 0.5))]
        )
    [cool, warm] = run.feed([rec("cool", 20, t=44.0), rec("warm", 20, t=66.0)])
    assert cool.fields["t_base"] == pytest.approx(40, abs=0.5)
    assert warm.fields["t_base"] == pytest.approx(70, abs=0.5)
    assert cool.fields["t_dev"] > 4  # 4 °C above its own normal: far out
    assert warm.fields["t_dev"] < -4  # signed: below
    # A lasting fault never becomes normal: scoring above exclude_above, it is not learnt.
    for k in range(21, 60):
        [late] = run.feed([rec("cool", k, t=44.0)])
    assert late.fields["t_dev"] > 4
    assert late.fields["t_base"] == pytest.approx(40, abs=0.5)


@pytest.mark.parametrize(("side", "rise_learnt", "fall_learnt"), [
    ("both", False, False), ("below", True, False), ("above", False, True),
])  # fmt: skip
def test_exclude_side_learns_a_lasting_step_only_the_other_way(
    side: str, rise_learnt: bool, fall_learnt: bool
) -> None:
    """Soil wetted by irrigation is its new normal; a dry-out never is."""
    config = {"fields": {"m": 0.1}, "warmup": 5, "history": 20, "exclude_side": side}
    for step, learnt in ((5.0, rise_learnt), (-5.0, fall_learnt)):
        run = make_op("baseline", config)
        run.feed([rec("p", k, m=30 + 0.1 * (k % 3)) for k in range(20)])
        [late] = run.feed([rec("p", k, m=30 + step) for k in range(20, 60)])[-1:]
        assert (late.fields["m_base"] == pytest.approx(30 + step)) is learnt
        assert (abs(late.fields["m_dev"]) > 5) is not learnt


def test_warmup_scores_zero_and_a_spike_in_the_history_moves_nothing() -> None:
    run = make_op("baseline", {"fields": {"x": 0.01}, "warmup": 3, "exclude_above": None})
    outs = run.feed([rec("m", k, x=v) for k, v in enumerate([1.0, 1.1, 0.9, 50.0, 1.0, 1.05])])
    assert [o.fields["x_dev"] for o in outs[:3]] == [0.0, 0.0, 0.0]
    assert outs[5].fields["x_base"] == pytest.approx(1.0)  # median: the 50 did not drag it
    assert abs(outs[5].fields["x_dev"]) < 1


def test_the_floor_bounds_the_score_of_a_flat_signal() -> None:
    run = make_op("baseline", {"fields": {"x": 0.5}, "warmup": 3})
    outs = run.feed([rec("m", k, x=2.0) for k in range(5)] + [rec("m", 5, x=3.0)])
    assert outs[-1].fields["x_dev"] == pytest.approx(2.0)  # (3 - 2) / 0.5


def test_missing_fields_are_skipped_and_wrong_types_rejected() -> None:
    run = make_op("baseline", {"fields": {"x": 0.1, "battery": 0.01}})
    outs = run.feed([rec("m", 0, x=1.0), rec("m", 1, x="high"), rec("m", 2, x=None)])
    assert len(outs) == 2
    assert "x_dev" not in outs[1].fields  # null: not learnt, not scored
    assert "battery_dev" not in outs[0].fields
    assert "x_dev" in outs[0].fields
    assert run.rejects[0][1:] == ("wrong_type", "field 'x': expected a number, got 'high'")


def test_learn_when_scores_every_record_but_learns_only_where_it_holds() -> None:
    config = {"fields": {"p": 0.05}, "warmup": 3, "exclude_above": None, "learn_when": "v == 0"}
    run = make_op("baseline", config)
    closed = [rec("plot", k, p=2.6, v=0) for k in range(5)]
    blocked = [rec("plot", 5 + k, p=2.75, v=1) for k in range(30)]  # a long blocked cycle
    outs = run.feed(closed + blocked + [rec("plot", 35, p=2.6, v=0), rec("plot", 36, p=2.6)])
    assert outs[10].fields["p_dev"] == pytest.approx(3.0)  # open windows are scored...
    assert outs[35].fields["p_base"] == pytest.approx(2.6)  # ...but not learnt
    assert outs[35].fields["p_dev"] == pytest.approx(0.0)
    assert len(outs) == 36  # `v` missing: rejected with the reason, nothing else lost
    assert run.rejects[0][1] == "expression_error"
    assert "learn_when" in run.rejects[0][2]


def test_a_long_history_reuses_its_median_for_a_few_values_and_stays_close() -> None:
    """Per reading over 120 values, the median and spread are recomputed every third
    learnt value: base and score stay within a third of a spread of recomputing each time."""
    rng = np.random.default_rng(3)
    xs = 30 + 0.15 * rng.standard_normal(400) + np.linspace(0, 2, 400)
    run = make_op("baseline", {"fields": {"m": 0.01}, "history": 120, "warmup": 12})
    outs = run.feed([rec("p", k, m=float(x)) for k, x in enumerate(xs)])
    for k in range(200, 400):
        past = xs[k - 120 : k]
        base = float(np.median(past))
        spread = max(1.4826 * float(np.median(np.abs(past - base))), 0.01)
        assert outs[k].fields["m_base"] == pytest.approx(base, abs=0.05)
        assert outs[k].fields["m_dev"] == pytest.approx((xs[k] - base) / spread, abs=0.35)


def test_spread_steps_is_the_noise_alone_so_a_ramp_does_not_hide_a_fall() -> None:
    """Soil wetting under irrigation, 0.03 % a reading with noise 0.15, then 3 % lower."""
    rng = np.random.default_rng(7)
    ramp = [rec("p", k, m=30 + 0.03 * k + rng.normal(0, 0.15)) for k in range(120)]
    fall = rec("p", 120, m=30 + 0.03 * 120 - 3.0)  # 1.2 % below the median of the ramp
    scores = {}
    for spread in ("level", "steps"):
        config = {"fields": {"m": 0.05}, "history": 120, "exclude_side": "below"}
        run = make_op("baseline", {**config, "spread": spread})
        run.feed(ramp)
        [out] = run.feed([fall])
        scores[spread] = out.fields["m_dev"]
    assert scores["level"] > -2  # the ramp's 3.6 % widened the spread to ~1.1
    assert scores["steps"] == pytest.approx(-1.2 / 0.15, rel=0.25)  # the noise's spread


def test_spread_steps_of_a_flat_noisy_signal_is_its_noise() -> None:
    rng = np.random.default_rng(3)
    run = make_op("baseline", {"fields": {"m": 0.01}, "history": 200, "spread": "steps"})
    run.feed([rec("p", k, m=20 + rng.normal(0, 0.5)) for k in range(200)])
    [out] = run.feed([rec("p", 200, m=22.0)])
    assert out.fields["m_dev"] == pytest.approx(2 / 0.5, rel=0.2)


def test_explained_by_judges_a_key_against_its_own_line_in_the_covariate() -> None:
    """A machine's temperature follows its load: a rise the load explains is normal, the
    same rise at the same load is not."""
    config = {"fields": {"t": 0.2}, "warmup": 10, "history": 60, "explained_by": "load"}
    run = make_op("baseline", config)
    rng = np.random.default_rng(3)
    for k in range(60):  # 40 °C + 5 °C an ampere, the load cycling between 10 and 20 A
        load = 15 + 5 * math.sin(k / 5)
        run.feed([rec("m", k, t=40 + 5 * load + float(rng.normal(0, 0.3)), load=load)])
    [explained, unexplained] = run.feed(
        [rec("m", 60, t=40 + 5 * 22 + 0.2, load=22.0), rec("m", 61, t=40 + 5 * 12 + 10, load=12.0)]
    )
    assert explained.fields["t_base"] == pytest.approx(150, abs=1.5)  # its line at 22 A
    assert abs(explained.fields["t_dev"]) < 2
    assert unexplained.fields["t_dev"] > 10  # 10 °C over its line at 12 A
    # Against its level alone, the first is the outlier: 20 °C above the median.
    level = make_op("baseline", {k: v for k, v in config.items() if k != "explained_by"})
    rng = np.random.default_rng(3)
    for k in range(60):
        load = 15 + 5 * math.sin(k / 5)
        level.feed([rec("m", k, t=40 + 5 * load + float(rng.normal(0, 0.3)), load=load)])
    [alone] = level.feed([rec("m", 60, t=40 + 5 * 22 + 0.2, load=22.0)])
    assert alone.fields["t_dev"] > 1


def test_explained_by_a_covariate_that_never_moves_is_the_level() -> None:
    """No slope to fit (a machine with no current sensor reports 0): the plain median; a
    record without the covariate is judged at the key's median of it."""
    with_by = make_op("baseline", {"fields": {"t": 0.1}, "warmup": 5, "explained_by": "load"})
    plain = make_op("baseline", {"fields": {"t": 0.1}, "warmup": 5})
    values = [50 + 0.1 * (k % 4) for k in range(30)]
    a = with_by.feed([rec("m", k, t=v, load=0.0) for k, v in enumerate(values)])
    b = plain.feed([rec("m", k, t=v) for k, v in enumerate(values)])
    assert [r.fields["t_dev"] for r in a] == pytest.approx([r.fields["t_dev"] for r in b])
    [without] = with_by.feed([rec("m", 30, t=53.0)])
    assert without.fields["t_base"] == pytest.approx(50.15, abs=0.1)
    assert without.fields["t_dev"] > 5


def test_while_warming_skip_gives_no_outputs_until_the_key_is_known() -> None:
    run = make_op("baseline", {"fields": {"t": 0.1}, "warmup": 3, "while_warming": "skip"})
    outs = run.feed([rec("m", k, t=50.0 + k) for k in range(5)])
    assert ["t_base" in o.fields for o in outs] == [False, False, False, True, True]
    assert outs[3].fields["t_base"] == pytest.approx(51.0)  # learnt while warming


@pytest.mark.parametrize("n", [1, 2, 3, 12, 120, 300, 301])
def test_median_and_mad_from_one_sort_are_those_of_two_medians(n: int) -> None:
    rng = np.random.default_rng(n)
    draws = [
        lambda: rng.normal(60.0, 3.0, n),
        lambda: np.round(rng.normal(60.0, 0.3, n), 1),  # ties, as a sensor's last digit gives
        lambda: rng.exponential(1.0, n),  # skewed: more distances on one side
        lambda: rng.choice([1.0, 2.0, 3.0], n),
    ]
    for k in range(200):
        xs = [float(v) for v in draws[k % len(draws)]()]
        base = statistics.median(xs)
        assert _median_mad(xs) == (base, statistics.median([abs(v - base) for v in xs]))
