"""Tests for gateway.aggregates: every aggregate against a per-segment numpy reference."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.aggregates import AGGREGATES, segment_aggregates

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

Segments = list[list[float]]


def _by_time(pick: Callable[[np.ndarray], int]) -> Callable[[np.ndarray, np.ndarray], float]:
    def ref(v: np.ndarray, t: np.ndarray) -> float:
        return float(v[pick(t)])  # np.argmin/argmax return the first occurrence on ties

    return ref


def _exact(v: np.ndarray) -> tuple[list[int], int]:
    """Floats as integers over one power of two, exactly: sums of these never round."""
    ratios = [float(x).as_integer_ratio() for x in v]
    shift = max(d.bit_length() - 1 for _, d in ratios)
    return [n << (shift - d.bit_length() + 1) for n, d in ratios], shift


def _deviations(v: np.ndarray) -> tuple[list[int], int]:
    """n * (v - mean(v)) as exact integers over 2**shift."""
    xs, shift = _exact(v)
    total = sum(xs)
    return [len(xs) * x - total for x in xs], shift


def _slope(v: np.ndarray, t: np.ndarray) -> float:
    """Least squares in exact arithmetic: no cancellation to hide a rounding error."""
    if np.ptp(t) == 0:
        return 0.0
    (dv, v_shift), (dt, t_shift) = _deviations(v), _deviations(t)
    sxy = sum(a * b for a, b in zip(dt, dv, strict=True))
    return float(Fraction(sxy << t_shift, sum(a * a for a in dt) << v_shift))


def _crest(v: np.ndarray, _t: np.ndarray) -> float:
    if not v.any():
        return 0.0
    xs, _ = _exact(v)
    peak = max(abs(x) for x in xs)
    return math.sqrt(Fraction(peak * peak * len(xs), sum(x * x for x in xs)))


def _kurtosis(v: np.ndarray, _t: np.ndarray) -> float:
    if np.ptp(v) == 0:
        return 0.0
    d, _ = _deviations(v)  # scale-free: the factor n and the power of two cancel
    d2 = [x * x for x in d]
    return float(Fraction(len(d) * sum(x * x for x in d2), sum(d2) ** 2))


REFERENCE: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "count": lambda v, _t: float(len(v)),
    "sum": lambda v, _t: float(np.sum(v)),
    "mean": lambda v, _t: float(np.mean(v)),
    "min": lambda v, _t: float(np.min(v)),
    "max": lambda v, _t: float(np.max(v)),
    "std": lambda v, _t: float(np.std(v)),
    "rms": lambda v, _t: float(np.sqrt(np.mean(v**2))),
    "p50": lambda v, _t: float(np.percentile(v, 50)),
    "p95": lambda v, _t: float(np.percentile(v, 95)),
    "first": _by_time(lambda t: int(np.argmin(t))),
    "last": _by_time(lambda t: int(np.argmax(t))),
    "range": lambda v, _t: float(np.max(v) - np.min(v)),
    "delta": lambda v, t: float(v[np.argmax(t)] - v[np.argmin(t)]),
    "slope": _slope,
    "crest": _crest,
    "kurtosis": _kurtosis,
}
UNTIMED = tuple(a for a in AGGREGATES if a != "slope")  # slope refuses positions for times


def _atol(name: str, v: np.ndarray, t: np.ndarray) -> float:
    """Absolute tolerance: rounding grows with the values, their count and (slope) 1 / span."""
    scale = max(1.0, float(np.max(np.abs(v))))
    if name in {"sum", "std"}:
        return 1e-9 * scale * len(v)
    if name == "slope" and np.ptp(t) > 0:
        return 1e-9 * scale * len(v) / float(np.ptp(t))
    return 1e-9 * scale


def _check_against_reference(values: Segments, times: Segments | None) -> None:
    names = AGGREGATES if times is not None else UNTIMED
    got = segment_aggregates(values, names, times)
    assert list(got) == list(names)
    for i, seg in enumerate(values):
        v = np.asarray(seg, dtype=np.float64)
        t = np.asarray(times[i] if times is not None else range(len(seg)), dtype=np.float64)
        for name in names:
            assert got[name].dtype == np.float64
            assert got[name].shape == (len(values),)
            want = REFERENCE[name](v, t)
            atol = _atol(name, v, t)
            assert got[name][i] == pytest.approx(want, rel=1e-9, abs=atol), (name, i, seg)


FIXED_VALUES: Segments = [
    [3.0],
    [1.0, 2.0, 3.0, 4.0],
    [-5.5, 10.25, 0.0, -5.5, 7.0, 2.5, 100.0],
    [2.5, 2.5, 2.5, 2.5, 2.5],
    [-1e6, 1e6, 0.1],
    [0.1, 0.1, 0.1],
]
FIXED_TIMES: Segments = [
    [10.0],
    [4.0, 3.0, 2.0, 1.0],
    [5.0, 1.0, 1.0, 9.0, 9.0, 2.0, 3.0],
    [1.0, 1.0, 1.0, 1.0, 1.0],
    [0.0, 2.0, 1.0],
    [7.0, 8.0, 9.0],
]


@pytest.mark.parametrize("with_times", [False, True])
def test_fixed_segments_match_numpy(with_times: bool) -> None:
    _check_against_reference(FIXED_VALUES, FIXED_TIMES if with_times else None)


def test_fixed_expected_values() -> None:
    got = segment_aggregates(
        FIXED_VALUES[:3], ["count", "p50", "p95", "first", "last"], FIXED_TIMES[:3]
    )
    np.testing.assert_array_equal(got["count"], [1.0, 4.0, 7.0])
    np.testing.assert_allclose(got["p50"], [3.0, 2.5, 2.5])
    np.testing.assert_allclose(got["p95"], [3.0, 3.85, 73.075])
    # Ties in time resolve to the earliest position.
    np.testing.assert_array_equal(got["first"], [3.0, 4.0, 10.25])
    np.testing.assert_array_equal(got["last"], [3.0, 1.0, -5.5])


def test_first_last_positional_without_times() -> None:
    got = segment_aggregates([[1.0, 2.0, 3.0], [9.0]], ["last", "first"])
    assert list(got) == ["last", "first"]
    np.testing.assert_array_equal(got["first"], [1.0, 9.0])
    np.testing.assert_array_equal(got["last"], [3.0, 9.0])


def test_range_delta_slope_expected_values() -> None:
    t0 = 1_700_000_000.0  # epoch seconds: the slope must not lose the quarter seconds
    times = [[t0 + 0.75, t0, t0 + 0.25, t0 + 0.5], [t0 + 3.0, t0 + 1.0]]
    values = [[1.5, 0.0, 0.5, 1.0], [9.0, 5.0]]  # 2 units per second, arriving out of order
    got = segment_aggregates(values, ["range", "delta", "slope"], times)
    np.testing.assert_array_equal(got["range"], [1.5, 4.0])
    np.testing.assert_array_equal(got["delta"], [1.5, 4.0])
    np.testing.assert_allclose(got["slope"], [2.0, 2.0], rtol=1e-12)


def test_slope_is_least_squares_through_noise() -> None:
    rng = np.random.default_rng(5)
    t = 1_700_000_000.0 + np.sort(rng.uniform(0.0, 60.0, size=500))
    v = 20.0 - 0.125 * (t - t[0]) + rng.normal(0.0, 0.5, size=t.size)
    [slope] = segment_aggregates([v.tolist()], ["slope"], [t.tolist()])["slope"]
    assert slope == pytest.approx(np.polyfit(t - t[0], v, 1)[0], rel=1e-9)
    assert slope == pytest.approx(-0.125, abs=0.01)


def test_delta_positional_without_times() -> None:
    got = segment_aggregates([[1.0, 5.0, 3.0], [9.0]], ["delta"])
    np.testing.assert_array_equal(got["delta"], [2.0, 0.0])


def test_slope_without_times_rejected() -> None:
    with pytest.raises(ValueError, match="slope aggregate needs times"):
        segment_aggregates([[1.0, 2.0]], ["mean", "slope"])


def test_single_point_and_constant_segments() -> None:
    """No spread, no trend, no shape: 0, not a NaN from 0 / 0 or rounding noise."""
    names = ["range", "delta", "slope", "crest", "kurtosis"]
    values = [[4.0], [0.1] * 7, [-7.25] * 40, [0.0] * 5, [3.0, 1.0]]
    times = [[1.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [2.5] * 40, [1.0] * 5, [5.0, 5.0]]
    got = segment_aggregates(values, names, times)
    np.testing.assert_array_equal(got["range"], [0.0, 0.0, 0.0, 0.0, 2.0])
    np.testing.assert_array_equal(got["delta"], [0.0, 0.0, 0.0, 0.0, 0.0])  # tie: position 0
    np.testing.assert_array_equal(got["slope"], [0.0, 0.0, 0.0, 0.0, 0.0])  # all times equal
    np.testing.assert_array_equal(got["kurtosis"], [0.0, 0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(got["crest"], [1.0, 1.0, 1.0, 0.0, 3.0 / math.sqrt(5.0)])


def test_crest_and_kurtosis_of_known_shapes() -> None:
    rng = np.random.default_rng(9)
    phase = np.arange(2000) * (2 * np.pi / 2000)
    segments = [
        rng.normal(3.0, 2.0, size=200_000),  # Gaussian: kurtosis 3, about the mean
        10.0 * np.sin(phase),  # sine: crest sqrt(2), kurtosis 3/2
        rng.uniform(-1.0, 1.0, size=200_000),  # uniform: kurtosis 9/5
        np.array([1e-200, -1e-200, 3e-200]),  # tiny values: no underflow in the powers
    ]
    got = segment_aggregates([s.tolist() for s in segments], ["crest", "kurtosis"])
    assert got["kurtosis"][0] == pytest.approx(3.0, abs=0.05)
    assert got["crest"][1] == pytest.approx(math.sqrt(2.0), rel=1e-9)
    assert got["kurtosis"][1] == pytest.approx(1.5, rel=1e-9)
    assert got["kurtosis"][2] == pytest.approx(1.8, abs=0.02)
    assert got["crest"][3] == pytest.approx(_crest(segments[3], segments[3]), rel=1e-12)
    assert got["kurtosis"][3] == pytest.approx(_kurtosis(segments[3], segments[3]), rel=1e-12)


def test_constant_segment_has_zero_spread() -> None:
    got = segment_aggregates([[-7.25] * 40], ["std", "min", "max", "p50", "p95", "mean"])
    assert got["std"][0] == pytest.approx(0.0, abs=1e-12)
    for name in ("min", "max", "p50", "p95", "mean"):
        assert got[name][0] == -7.25


def test_large_segment_and_many_segments() -> None:
    rng = np.random.default_rng(7)
    big = rng.normal(50.0, 20.0, size=200_000)
    small = [list(rng.uniform(-1e3, 1e3, size=int(n))) for n in rng.integers(1, 30, size=500)]
    _check_against_reference([big.tolist(), *small], None)


def test_equal_length_segments_match_numpy() -> None:
    rng = np.random.default_rng(11)
    _check_against_reference(rng.uniform(-50.0, 50.0, size=(300, 17)).tolist(), None)


def test_more_segments_than_uint16_ids() -> None:
    # Beyond 65535 segments the regrouping sort cannot use uint16 ids.
    rng = np.random.default_rng(3)
    segments = [[float(a), float(b)] for a, b in rng.normal(size=(70_000, 2))]
    segments[0] = [5.0, 1.0, 3.0]  # unequal lengths force the general sort path
    got = segment_aggregates(segments, ["p50", "min", "max"])
    np.testing.assert_allclose(got["p50"][1:], (got["min"][1:] + got["max"][1:]) / 2, atol=1e-12)
    assert got["p50"][0] == 3.0


def test_only_requested_aggregates_returned() -> None:
    got = segment_aggregates([[1.0, 2.0]], ["max"])
    assert list(got) == ["max"]


def test_no_segments_gives_empty_arrays() -> None:
    got = segment_aggregates([], ["mean", "p95"])
    assert {k: v.shape for k, v in got.items()} == {"mean": (0,), "p95": (0,)}


def test_unknown_aggregate_is_named() -> None:
    with pytest.raises(ValueError, match="'median'") as info:
        segment_aggregates([[1.0]], ["mean", "median"])
    assert all(name in str(info.value) for name in AGGREGATES)


def test_string_instead_of_sequence_rejected() -> None:
    with pytest.raises(TypeError):
        segment_aggregates([[1.0]], "mean")


def test_empty_segment_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        segment_aggregates([[1.0], []], ["mean"])


def test_times_shape_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="same shape"):
        segment_aggregates([[1.0, 2.0]], ["first"], [[1.0]])


def test_nan_times_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        segment_aggregates([[1.0, 2.0]], ["last"], [[1.0, float("nan")]])


_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
# Event times to the microsecond: a slope over a span of 1e-300 s is no number anyone needs.
_time = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False).map(
    lambda t: round(t, 6)
)


@st.composite
def _segments_with_times(draw: st.DrawFn) -> tuple[Segments, Segments]:
    n_segments = draw(st.integers(1, 20))
    if draw(st.booleans()):  # equal lengths take the row-wise sort path
        lengths = [draw(st.integers(1, 50))] * n_segments
    else:
        lengths = draw(st.lists(st.integers(1, 50), min_size=n_segments, max_size=n_segments))
    values = [draw(st.lists(_finite, min_size=n, max_size=n)) for n in lengths]
    # A small time alphabet makes ties common, exercising the tie-break rule.
    time_values = st.one_of(_time, st.sampled_from([0.0, 1.0, 2.0]))
    times = [draw(st.lists(time_values, min_size=n, max_size=n)) for n in lengths]
    return values, times


@settings(max_examples=200, deadline=None)
@given(_segments_with_times())
def test_property_matches_numpy_reference(data: tuple[Segments, Segments]) -> None:
    values, times = data
    _check_against_reference(values, times)
    _check_against_reference(values, None)


def _distinct(times: Sequence[Sequence[float]]) -> bool:
    return all(len(set(t)) == len(t) for t in times)


@settings(max_examples=200, deadline=None)
@given(_segments_with_times(), st.randoms(use_true_random=False))
def test_property_permutation_invariant(
    data: tuple[Segments, Segments], rnd: random.Random
) -> None:
    values, times = data
    shuffled_v: Segments = []
    shuffled_t: Segments = []
    for seg, tseg in zip(values, times, strict=True):
        pairs = list(zip(seg, tseg, strict=True))
        rnd.shuffle(pairs)
        shuffled_v.append([p[0] for p in pairs])
        shuffled_t.append([p[1] for p in pairs])
    # With tied times first/last/delta depend on position by design: compare them only when distinct.
    names = (
        AGGREGATES
        if _distinct(times)
        else tuple(a for a in AGGREGATES if a not in {"first", "last", "delta"})
    )
    before = segment_aggregates(values, names, times)
    after = segment_aggregates(shuffled_v, names, shuffled_t)
    scale = max(1.0, *(max(abs(x) for x in seg) for seg in values))
    # A slope's rounding grows with 1 / (its segment's time span).
    span = np.array([max(np.ptp(t), 1e-6) for t in times])
    for name in names:
        atol = 1e-9 * scale * 50 / (span if name == "slope" else 1.0)
        assert np.isclose(before[name], after[name], rtol=1e-9, atol=atol).all(), name
