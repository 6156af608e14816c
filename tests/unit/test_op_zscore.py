"""`zscore`: |x - mean| / std over the key's previously learnt samples (numpy as reference)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from oplab import rec, run_op


def reference(xs, warmup, min_std=1e-9, exclude_above=None):
    """Scores by numpy over the samples learnt so far; None when a score ties the cut-off.

    At a tie (within rounding) the operator's Welford estimate and numpy may fall on
    different sides of `exclude_above`, so such inputs say nothing and are skipped.
    """
    learnt, out = [], []
    for x in xs:
        if len(learnt) < warmup:
            out.append(0.0)
            learnt.append(x)
            continue
        v = np.array(learnt)
        score = abs(x - v.mean()) / max(float(np.std(v)), min_std)
        out.append(float(score))
        if exclude_above is not None and abs(score - exclude_above) < 1e-9:
            return None
        if exclude_above is None or score <= exclude_above:
            learnt.append(x)
    return out


@settings(max_examples=150, deadline=None)
@given(
    eighths=st.lists(st.integers(-8000, 8000), min_size=1, max_size=60),
    warmup=st.integers(1, 12),
)
def test_score_is_distance_from_the_mean_of_previous_samples_in_std(eighths, warmup):
    xs = [i / 8 for i in eighths]
    run = run_op(
        "zscore", {"field": "x", "warmup": warmup}, [rec("m1", i, x=x) for i, x in enumerate(xs)]
    )
    got = [r.fields["x_z"] for r in run.out]
    assert got == pytest.approx(reference(xs, warmup), rel=1e-7, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(
    eighths=st.lists(st.integers(-800, 800), min_size=1, max_size=60),
    exclude_above=st.sampled_from([1.0, 2.0, 3.0]),
)
@example(eighths=[0, 8, 0, 800, 8, 0, 4], exclude_above=3.0)
def test_excluded_samples_are_left_out_of_mean_and_std(eighths, exclude_above):
    xs = [i / 8 for i in eighths]
    config = {"field": "x", "warmup": 3, "exclude_above": exclude_above, "min_std": 0.01}
    run = run_op("zscore", config, [rec("m1", i, x=x) for i, x in enumerate(xs)])
    expected = reference(xs, 3, min_std=0.01, exclude_above=exclude_above)
    assume(expected is not None)
    assert [r.fields["x_z"] for r in run.out] == pytest.approx(expected, rel=1e-7, abs=1e-6)


def test_worked_example():
    xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, 13.0]  # the first 8: mean 5, std 2
    run = run_op(
        "zscore", {"field": "x", "warmup": 8}, [rec("m1", i, x=x) for i, x in enumerate(xs)]
    )
    assert [r.fields["x_z"] for r in run.out] == [0.0] * 8 + [4.0]


def test_flat_signal_scores_finitely_with_min_std():
    xs = [3.0] * 5 + [3.0, 3.5]
    run = run_op(
        "zscore",
        {"field": "x", "warmup": 5, "min_std": 0.1},
        [rec("m1", i, x=x) for i, x in enumerate(xs)],
    )
    assert [r.fields["x_z"] for r in run.out][5:] == [0.0, pytest.approx(5.0)]


def test_a_relative_floor_scales_with_the_level():
    """A quiet history's std (0.01 here) would make a 4 % move 4 sigma; floored at 2.5 % of
    the mean's size it is 1.6 sigma, and a 15 % move still scores near 6."""
    records = [rec("m1", i, x=2.0 + (0.01 if i % 2 else -0.01)) for i in range(20)]
    records += [rec("m1", 20, x=2.08), rec("m1", 21, x=2.3)]
    config = {"field": "x", "warmup": 10, "signed": True}
    plain = [r.fields["x_z"] for r in run_op("zscore", config, records).out]
    floored = run_op("zscore", {**config, "min_rel_std": 0.025}, records).out
    assert plain[20] == pytest.approx(8.0)
    assert floored[20].fields["x_z"] == pytest.approx(1.6)
    assert 5.5 < floored[21].fields["x_z"] < 6.0  # 2.08 was learnt: the mean moved a little


def test_signed_keeps_the_direction_and_excludes_by_size():
    records = [rec("m1", i, x=10.0 + (0.1 if i % 2 else -0.1)) for i in range(20)]
    records += [rec("m1", 20, x=9.0), rec("m1", 21, x=11.0), rec("m1", 22, x=10.0)]
    config = {"field": "x", "warmup": 5, "exclude_above": 4}
    plain = [r.fields["x_z"] for r in run_op("zscore", config, records).out]
    signed = [r.fields["x_z"] for r in run_op("zscore", {**config, "signed": True}, records).out]
    assert signed[20] < -4 < 4 < plain[20]  # a drop: negative, and its size as before
    assert signed[21] == pytest.approx(plain[21])  # neither far value was learnt
    assert signed[21] > 4
