# project has no copyright header yet; drop once CPY001 is ignored globally
"""Per-window aggregates computed for all closing windows in one numpy pass.

Hundreds of windows often close at the same boundary.  Reducing each one in
a Python loop would make flush latency grow with the number of keys, so the
buffered segments are concatenated once and every aggregate is a segmented
(``reduceat``) or sort-based vector operation across all windows at once.
"""

from __future__ import annotations

import itertools
from array import array
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.intp]

AGGREGATES: tuple[str, ...] = (
    "count", "sum", "mean", "min", "max", "std", "rms", "p50", "p95", "first", "last",
    "range", "delta", "slope", "crest", "kurtosis",
)  # fmt: skip
TIME_ORDERED: frozenset[str] = frozenset({"first", "last", "delta", "slope"})
"""Aggregates that follow event time: a window keeps each value's time for these."""
_PERCENTILES: dict[str, float] = {"p50": 50.0, "p95": 95.0}


def _flatten(segments: Sequence[Sequence[float]], what: str) -> tuple[FloatArray, IntArray]:
    lengths = np.fromiter((len(s) for s in segments), dtype=np.intp, count=len(segments))
    if lengths.size and int(lengths.min()) == 0:
        msg = f"every {what} segment must be non-empty (segment {int(np.argmin(lengths))} is empty)"
        raise ValueError(msg)
    total = int(lengths.sum())
    buffers = [s for s in segments if isinstance(s, array) and s.typecode == "d"]
    if segments and len(buffers) == len(segments):
        # The window's own buffers: each is already a C double array; no Python floats made.
        flat = np.concatenate([np.frombuffer(b, np.float64) for b in buffers])
    else:
        flat = np.fromiter(itertools.chain.from_iterable(segments), np.float64, count=total)
    return flat, lengths


def _sorted_within_segments(flat: FloatArray, lengths: IntArray) -> FloatArray:
    """Values sorted inside each segment, segments kept in place (one sort for all)."""
    if (lengths == lengths[0]).all():  # fixed-rate sensors: a cheap row-wise sort
        return np.sort(flat.reshape(lengths.size, -1), axis=1).ravel()
    widest = int(lengths.max())
    if widest * lengths.size <= 2 * flat.size:
        # Similar lengths: pad rows with +inf (sorts last), sort row-wise, drop the padding.
        inside = np.arange(widest) < lengths[:, None]
        padded = np.full((lengths.size, widest), np.inf)
        padded[inside] = flat
        padded.sort(axis=1)
        return padded[inside]
    # Same result as flat[np.lexsort((flat, seg_ids))] but ~4x faster: sort the values,
    # then regroup by segment with a stable (radix, for uint16 ids) sort.
    by_value = np.argsort(flat)
    seg_ids = np.repeat(np.arange(lengths.size, dtype=np.intp), lengths)[by_value]
    if lengths.size <= np.iinfo(np.uint16).max:
        seg_ids = seg_ids.astype(np.uint16)
    return flat[by_value[np.argsort(seg_ids, kind="stable")]]


def _percentiles(
    flat: FloatArray, lengths: IntArray, starts: IntArray, qs: dict[str, float]
) -> dict[str, FloatArray]:
    """Linear-method percentiles per segment, matching ``np.percentile``'s arithmetic."""
    ordered = _sorted_within_segments(flat, lengths)
    last_idx = lengths - 1
    out: dict[str, FloatArray] = {}
    for name, q in qs.items():  # loop over requested percentiles, not segments
        frac = q / 100.0
        # Same virtual-index formula as numpy's 'linear' method (alpha = beta = 1).
        virtual = lengths * frac + (1.0 + frac * -1.0) - 1.0
        below = np.clip(np.floor(virtual), 0, last_idx).astype(np.intp)
        above = np.minimum(below + 1, last_idx)
        gamma = virtual - below
        lo, hi = ordered[starts + below], ordered[starts + above]
        diff = hi - lo
        # numpy's _lerp: interpolate from the nearer end for accuracy.
        out[name] = np.where(gamma >= 0.5, hi - diff * (1.0 - gamma), lo + diff * gamma)
    return out


def _extreme_positions(
    times: FloatArray, lengths: IntArray, starts: IntArray, *, latest: bool
) -> IntArray:
    """Flat index of each segment's min (or max) time; ties go to the earliest position."""
    reduce = np.maximum if latest else np.minimum
    extreme = reduce.reduceat(times, starts)
    hit = times == np.repeat(extreme, lengths)
    positions = np.where(hit, np.arange(times.size, dtype=np.intp), times.size)
    return np.minimum.reduceat(positions, starts)


def _validate(aggregates: Sequence[str]) -> None:
    if isinstance(aggregates, str):
        msg = f"aggregates must be a sequence of names, not the string {aggregates!r}"
        raise TypeError(msg)
    for name in aggregates:
        if name not in AGGREGATES:
            msg = f"unknown aggregate {name!r}; known aggregates: {', '.join(AGGREGATES)}"
            raise ValueError(msg)


def _moments(
    flat: FloatArray, lengths: IntArray, starts: IntArray, wanted: set[str]
) -> dict[str, FloatArray]:
    counts = lengths.astype(np.float64)
    out: dict[str, FloatArray] = {"count": counts}
    if wanted & {"sum", "mean", "std"}:
        out["sum"] = np.add.reduceat(flat, starts)
        out["mean"] = out["sum"] / counts
        if "std" in wanted:  # two-pass: centre on the segment mean before squaring
            dev = flat - np.repeat(out["mean"], lengths)
            out["std"] = np.sqrt(np.add.reduceat(dev * dev, starts) / counts)
    if "rms" in wanted:
        out["rms"] = np.sqrt(np.add.reduceat(flat * flat, starts) / counts)
    if wanted & {"min", "range"}:
        out["min"] = np.minimum.reduceat(flat, starts)
    if wanted & {"max", "range"}:
        out["max"] = np.maximum.reduceat(flat, starts)
    if "range" in wanted:
        out["range"] = out["max"] - out["min"]
    return out


def _centred(
    flat: FloatArray, lengths: IntArray, starts: IntArray, counts: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Deviations from each segment's mean, in units of the segment's spread, and that unit.

    Values are shifted by the segment's first value before anything else, so a constant
    segment gives exact zeros (unit 0) rather than rounding noise around its mean; scaling
    to the spread keeps the squares and fourth powers clear of underflow and overflow.
    """
    shifted = flat - np.repeat(flat[starts], lengths)
    unit = np.maximum.reduceat(np.abs(shifted), starts)
    scaled = shifted / np.repeat(np.where(unit > 0, unit, 1.0), lengths)
    return scaled - np.repeat(np.add.reduceat(scaled, starts) / counts, lengths), unit


def _shape(
    flat: FloatArray, lengths: IntArray, starts: IntArray, wanted: set[str]
) -> dict[str, FloatArray]:
    """Crest factor and kurtosis: scale-free, so computed on scaled values (no under/overflow)."""
    counts = lengths.astype(np.float64)
    out: dict[str, FloatArray] = {}
    if "crest" in wanted:  # max|x| / rms = sqrt(n / sum((x / max|x|)^2)); the sum is >= 1
        peak = np.maximum.reduceat(np.abs(flat), starts)
        nonzero = peak > 0
        z = flat / np.repeat(np.where(nonzero, peak, 1.0), lengths)
        squares = np.add.reduceat(z * z, starts)
        out["crest"] = np.where(nonzero, np.sqrt(counts / np.where(nonzero, squares, 1.0)), 0.0)
    if "kurtosis" in wanted:  # Pearson: m4 / m2^2 = n * sum(d^4) / sum(d^2)^2
        dev, unit = _centred(flat, lengths, starts, counts)
        varying = unit > 0
        d2 = dev * dev
        s2 = np.add.reduceat(d2, starts)
        s4 = np.add.reduceat(d2 * d2, starts)
        out["kurtosis"] = np.where(varying, counts * s4 / np.where(varying, s2 * s2, 1.0), 0.0)
    return out


def _slope(flat: FloatArray, lengths: IntArray, starts: IntArray, times: FloatArray) -> FloatArray:
    """Least-squares slope of value against time, per second; 0 where all times are equal.

    Times are shifted to start at 0 and scaled to [0, 1] first: epoch seconds squared would
    lose the sub-second spacing, and the scaled sum of squares is at least 1/2.
    """
    counts = lengths.astype(np.float64)
    since = times - np.repeat(np.minimum.reduceat(times, starts), lengths)
    span = np.maximum.reduceat(since, starts)
    spread = span > 0
    safe_span = np.where(spread, span, 1.0)
    u = since / np.repeat(safe_span, lengths)
    du = u - np.repeat(np.add.reduceat(u, starts) / counts, lengths)
    dev, unit = _centred(flat, lengths, starts, counts)
    sxx = np.add.reduceat(du * du, starts)
    sxy = np.add.reduceat(du * dev, starts)
    return np.where(spread, sxy / np.where(spread, sxx, 1.0) * unit / safe_span, 0.0)


def _flat_times(times: Sequence[Sequence[float]], lengths: IntArray) -> FloatArray:
    tflat, tlengths = _flatten(times, "times")
    if not np.array_equal(tlengths, lengths):
        msg = "times must have the same shape as values"
        raise ValueError(msg)
    if np.isnan(tflat).any():
        msg = "times must not contain NaN"
        raise ValueError(msg)
    return tflat


def _first_last(
    flat: FloatArray, lengths: IntArray, starts: IntArray, times: FloatArray | None
) -> dict[str, FloatArray]:
    if times is None:
        first, last = flat[starts], flat[starts + lengths - 1]
    else:
        first = flat[_extreme_positions(times, lengths, starts, latest=False)]
        last = flat[_extreme_positions(times, lengths, starts, latest=True)]
    return {"first": first, "last": last, "delta": last - first}


def segment_aggregates(
    values: Sequence[Sequence[float]],
    aggregates: Sequence[str],
    times: Sequence[Sequence[float]] | None = None,
) -> dict[str, np.ndarray]:
    """Compute ``aggregates`` for every segment (window) in ``values`` at once.

    Returns aggregate name -> float64 array with one entry per segment.  ``first``
    and ``last`` pick the value with the smallest / largest event time (ties: the
    earliest position) and ``delta`` is last minus first; without ``times`` these three
    are positional.  ``slope`` (units per second, least squares against event time) needs
    ``times``: an index is no time.  ``slope`` is 0 for a segment whose times are all
    equal, ``crest`` (max|x| / rms) and ``kurtosis`` (Pearson, m4 / m2^2: 3 for a
    Gaussian) are 0 for a segment of zeros / a constant segment.  Values and times are
    expected to be finite.
    """
    _validate(aggregates)
    wanted = set(aggregates)
    if "slope" in wanted and times is None:
        msg = "the slope aggregate needs times: a positional index is no time"
        raise ValueError(msg)
    flat, lengths = _flatten(values, "values")
    if lengths.size == 0:
        return {name: np.empty(0, dtype=np.float64) for name in aggregates}
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.intp)
    tflat = _flat_times(times, lengths) if times is not None and wanted & TIME_ORDERED else None

    result = _moments(flat, lengths, starts, wanted)
    qs = {name: q for name, q in _PERCENTILES.items() if name in wanted}
    if qs:  # the only sort, and only when a percentile is requested
        result.update(_percentiles(flat, lengths, starts, qs))
    if wanted & {"first", "last", "delta"}:
        result.update(_first_last(flat, lengths, starts, tflat))
    if tflat is not None and "slope" in wanted:
        result["slope"] = _slope(flat, lengths, starts, tflat)
    result.update(_shape(flat, lengths, starts, wanted))
    return {name: result[name] for name in aggregates}
