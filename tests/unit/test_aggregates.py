"""Tests for gateway.aggregates: every aggregate against a per-segment numpy reference."""

from __future__ import annotations

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
}


def _check_against_reference(values: Segments, times: Segments | None) -> None:
    got = segment_aggregates(values, AGGREGATES, times)
    assert list(got) == list(AGGREGATES)
    for i, seg in enumerate(values):
        v = np.asarray(seg, dtype=np.float64)
        t = np.asarray(times[i] if times is not None else range(len(seg)), dtype=np.float64)
        scale = max(1.0, float(np.max(np.abs(v))))
        for name in AGGREGATES:
            assert got[name].dtype == np.float64
            assert got[name].shape == (len(values),)
            want = REFERENCE[name](v, t)
            atol = 1e-9 * scale * len(v) if name in {"sum", "std"} else 1e-9 * scale
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
_time = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)


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
    # With tied times first/last depend on position by design, so compare them only when distinct.
    names = (
        AGGREGATES
        if _distinct(times)
        else tuple(a for a in AGGREGATES if a not in {"first", "last"})
    )
    before = segment_aggregates(values, names, times)
    after = segment_aggregates(shuffled_v, names, shuffled_t)
    for name in names:
        scale = max(1.0, *(max(abs(x) for x in seg) for seg in values))
        assert np.isclose(before[name], after[name], rtol=1e-9, atol=1e-9 * scale * 50).all(), name
