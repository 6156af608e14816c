"""`baseline`: each key's own normal, learnt per field, and a signed robust score against it.

```yaml
- baseline:
    fields: {temperature_p50: 0.5, battery_min: 0.01}   # field -> smallest spread, its unit
    history: 60        # windows of the key's past the median and MAD are taken over
    warmup: 12         # windows before scores are given (0 before)
    exclude_above: 5   # |score| above this is not learnt: a fault never becomes normal
    exclude_side: below   # optional: only scores below -5 are not learnt (default: both)
    learn_when: "valve_mean == 0"   # optional: learn only from such records, score every one
    spread: steps      # optional: the noise from one value to the next (default: level)
    explained_by: current_lag   # optional: the normal follows this field (a straight line)
    while_warming: skip  # optional: no outputs before `warmup` values (default: score 0)
```

Adds, per listed field present on the record, `<field>_base` (the median of the key's
last `history` learnt values) and `<field>_dev`, signed: `(x - base) / spread`, where
`spread` is 1.4826 x the median absolute deviation (the standard deviation of normal
data) floored at the field's smallest spread. Median and MAD, not mean and standard
deviation, so a spike or two in the history move nothing. A site whose probes read 5 %
high, whose machines run 8 °C warmer or whose batteries sit at 3.3 V is normal to itself:
rules read the deviation, not the absolute value (the absolute limits that are physical,
such as a machine's critical temperature, stay absolute).

`spread: steps` takes the spread from the differences between successive learnt values
instead (1.4826 x their MAD around their median, over the square root of 2): the noise
alone, whatever the trend. Soil wetting under irrigation rises by several of its noise's
spreads in ten minutes, so its level spread widens and a dry-out that starts mid-cycle
must fall that much further to be seen (2.5 windows late at half strength, on unseen
seeds 211/212); its steps' spread stays the probe's noise. It costs half as much again
(12.9 -> 19.4 µs a reading for two fields over 120 readings, 48 keys, in process).

A field missing from a record, or null, is skipped (no outputs for it: read it with
`has()`), so a `derive` can pick the windows a field is learnt from (`flow_p50 if
valve_min == 1 else null`: the flow of an open valve); one that is not a number rejects the
record (`wrong_type`). `learn_when` keeps a state the device is in only now and then out of
its normal: the farm learns a line's pressure with the valve closed, so an hour of a blocked
line (valve open, pressure high) does not become the plot's normal and make its next closed
hours look like a leak. Per key state: `field -> the last
history values` (plain lists, snapshot-friendly). Measured here: ~28 µs per field and window
with a full history of 60 (a median and a MAD of 60 floats; `python -m timeit`, shared
2-core machine). The farm runs it per reading too, over 120 readings: see `MEMO`.

`explained_by` makes the normal a straight line in another field, fitted per key over the
same history (least squares of the learnt pairs; median and MAD of what the line leaves):
`<field>_base` is then what the key's own line expects at the covariate's present value.
A machine's temperature follows its load: on a hot site with a load cycle, healthy
machines climbed 6 °C above their 10-minute median in four minutes as the load rose, and
`over_temperature` raised 31 times on four seeds of healthy machines (`python
bench/detection.py --site ...` with a hot hall); against the line in their lagged current,
a heat source the load does not explain is what scores. A line fitted where the covariate
barely moves has a slope near zero: the level alone. A record without the covariate is
judged at the key's median of it.
"""

from __future__ import annotations

import math
from itertools import pairwise
from statistics import median
from typing import Any, Literal

from pydantic import Field, PositiveFloat

from gateway.keyed import KeyedState
from gateway.operators.base import (
    FieldName,
    Fields,
    KeyedOperator,
    LearningConfig,
    LearnWhen,
    RelPath,
    StepContext,
    rejected_as_not_a_number,
)
from gateway.record import Record

MAD_TO_STD = 1.4826
SQRT2 = math.sqrt(2.0)
# The median and spread of a field are kept (under `<field>#`, beside its history) and
# recomputed once `history // 32` values were learnt since (after every one below 64 and
# only then: a record that teaches nothing reuses them). Per reading over 120 readings, the
# farm's two baselines cost 50 µs a reading recomputed every time (`bench/inference.py`);
# a median of 120 moves by a fraction of a spread in three values.
MEMO = "#"
# The covariate's values (`explained_by`), one beside each learnt value of the field.
COVARIATE = "~"


class BaselineConfig(LearningConfig):
    fields: dict[FieldName, PositiveFloat] = Field(
        min_length=1,
        description="Field -> its smallest spread (in the field's unit): a key that never "
        "moves still scores finitely, and a change below it is never an anomaly.",
    )
    history: int = Field(60, ge=3, le=10_000, description="Learnt values kept per key and field.")
    warmup: int = Field(12, ge=1, description="Learnt values a field needs before it is scored.")
    exclude_above: float | None = Field(
        5.0,
        gt=0,
        description="Do not learn a value whose |score| is above this (null: learn all).",
    )
    exclude_side: Literal["both", "below", "above"] = Field(
        "both",
        description="Which far values are not learnt: `below` learns a rise and never a fall "
        "(soil wetted by irrigation is its new normal; a dry-out never is).",
    )
    spread: Literal["level", "steps"] = Field(
        "level",
        description="`level`: the spread of the learnt values around their median; `steps`: "
        "of the differences between successive ones (the noise alone: a ramp does not widen it).",
    )

    while_warming: Literal["score", "skip"] = Field(
        "score",
        description="Before `warmup` values: `score` gives a score of 0 and the median so "
        "far; `skip` gives no outputs (a rule tells a key it does not know yet with `has()`).",
    )
    explained_by: FieldName | None = Field(
        None,
        description="A numeric field the normal follows: each key's base is a straight line "
        "in it (fitted over the history), so a change it explains is not an anomaly.",
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        refs: list[tuple[RelPath, frozenset[str]]] = [(("fields",), frozenset(self.fields))]
        if self.explained_by is not None:
            refs.append((("explained_by",), frozenset({self.explained_by})))
        return refs + super().references()

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return fields_in.with_(n for f in self.fields for n in (f"{f}_base", f"{f}_dev"))


class Baseline(KeyedOperator):
    name = "baseline"
    Config = BaselineConfig

    def __init__(self, config: BaselineConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._fields = [
            (f, floor, f"{f}_base", f"{f}_dev", f + MEMO) for f, floor in config.fields.items()
        ]
        self._names = list(config.fields)
        self._by = config.explained_by
        self._skip_warm = config.while_warming == "skip"
        self._checked = self._names if self._by is None else [*self._names, self._by]
        self._history = config.history
        self._warmup = config.warmup
        self._exclude = config.exclude_above
        self._side = {"both": 0, "below": -1, "above": 1}[config.exclude_side]
        self._refresh = max(1, config.history // 32)
        self._steps = config.spread == "steps"
        self._learns = LearnWhen.of(config.learn_when, ctx)
        self._state: KeyedState[dict[str, list[float]]] = KeyedState(
            config.max_keys, config.idle_expiry, ctx.evicted
        )

    def process(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        now = self.ctx.clock.now()
        by, warmup, history = self._by, self._warmup, self._history
        skip_warm, refresh = self._skip_warm, self._refresh
        for record in batch:
            fields = record.fields
            if rejected_as_not_a_number(self.ctx, record, self._checked):
                continue
            learn = True if self._learns is None else self._learns(record)
            if learn is None:
                continue
            state = self._state.get(record.key, now)
            if state is None:
                state = {}
                self._state.put(record.key, state, now)
            covariate = None if by is None else fields.get(by)
            added: dict[str, Any] = {}
            for name, floor, base_out, dev_out, memo_name in self._fields:
                x = fields.get(name)
                if x is None:
                    continue
                x = float(x)
                past = state.get(name)
                if past is None:
                    past = state[name] = []
                ys, y = (None, 0.0) if by is None else self._covariate(state, name, past, covariate)
                warm = len(past) >= warmup
                memo = state.get(memo_name)  # [intercept, spread, values learnt since, slope]
                if not warm:  # a score of 0 against the median so far, or nothing
                    score = 0.0
                    if not skip_warm:
                        added[base_out], added[dev_out] = median(past) if past else x, score
                else:
                    if memo is None or len(memo) < 4 or memo[2] >= refresh:
                        memo = state[memo_name] = self._fit(past, ys, floor)
                    base = memo[0] + memo[3] * y
                    score = (x - base) / memo[1]
                    added[base_out], added[dev_out] = base, score
                if not learn:
                    continue
                if not warm or not self._excludes(score):
                    past.append(x)
                    if ys is not None:
                        ys.append(y)
                    if len(past) > history:
                        del past[0]
                        if ys is not None:
                            del ys[0]
                    if memo is not None:
                        memo[2] += 1
            out.append(Record(record.key, record.ts, {**fields, **added}))
        return out

    def _covariate(
        self, state: dict[str, list[float]], name: str, past: list[float], value: Any
    ) -> tuple[list[float] | None, float]:
        """The covariate's history beside `name`'s, and its value for this record (the
        key's median of it when the record has none)."""
        if self._by is None:
            return None, 0.0
        ys = state.setdefault(name + COVARIATE, [])
        if len(ys) != len(past):  # a history from before `explained_by`
            ys[:] = [0.0] * len(past)
            state.pop(name + MEMO, None)
        if value is not None:
            return ys, float(value)
        return ys, median(ys) if ys else 0.0

    def _excludes(self, score: float) -> bool:
        """Whether a value this far from the base is kept out of the history."""
        if self._exclude is None or abs(score) <= self._exclude:
            return False
        return self._side == 0 or (score < 0) == (self._side < 0)

    def _fit(self, past: list[float], ys: list[float] | None, floor: float) -> list[float]:
        """[intercept, spread, values learnt since, slope] of `past` (on covariate `ys`),
        kept beside the history and refitted once `history // 32` values were learnt."""
        slope = 0.0 if ys is None else _slope(ys, past)
        left = past
        if ys is not None and slope != 0.0:
            left = [v - slope * c for v, c in zip(past, ys, strict=True)]
        if self._steps and len(left) > 2:
            base = median(left)
            mad = _median_mad([b - a for a, b in pairwise(left)])[1] / SQRT2
        else:
            base, mad = _median_mad(left)
        return [base, max(MAD_TO_STD * mad, floor), 0, slope]


def _median_mad(values: list[float]) -> tuple[float, float]:
    """The median of `values` and their median absolute deviation from it, from one sort:
    sorted, the distances below the median and those above it are two ascending runs, and
    the middle of two sorted runs is found by bisection, without building them. Over 300
    values (the factory's per-reading `usual`) 7 µs where merging the runs took 13 and two
    medians 25, with the same figures to the last bit."""
    s = sorted(values)
    n = len(s)
    half = n // 2
    base = _mid(s)
    if n % 2:
        return base, _nth_distance(s, base, half, half)
    return base, (_nth_distance(s, base, half, half - 1) + _nth_distance(s, base, half, half)) / 2


def _nth_distance(s: list[float], base: float, half: int, k: int) -> float:
    """The `k`-th smallest (from 0) of the distances from `base` of sorted `s`: the
    distances below the median are `base - s[half - 1 - i]`, those above `s[half + j] -
    base`, both ascending; the first k + 1 of all of them take some `i` from the first
    run and the rest from the second, and the right `i` is bisected."""
    n = len(s)
    take = k + 1
    lo, hi = max(0, take - (n - half)), min(take, half)
    while lo < hi:  # the smallest i whose next distance below is not before the last above
        i = (lo + hi) // 2
        if base - s[half - 1 - i] < s[half + take - i - 1] - base:
            lo = i + 1
        else:
            hi = i
    below = base - s[half - lo] if lo > 0 else -math.inf
    above = s[half + take - lo - 1] - base if take - lo > 0 else -math.inf
    return max(below, above)


def _mid(s: list[float]) -> float:
    """The median of sorted `s` (as `statistics.median`)."""
    n = len(s)
    half = n // 2
    return s[half] if n % 2 else (s[half - 1] + s[half]) / 2


def _slope(ys: list[float], xs: list[float]) -> float:
    """Least-squares slope of `xs` on `ys`; 0 where `ys` do not move."""
    n = len(ys)
    my = sum(ys) / n
    mx = sum(xs) / n
    var = sum((c - my) ** 2 for c in ys)
    if var <= 1e-12 * max(1.0, my * my) * n:
        return 0.0
    return sum((c - my) * (v - mx) for c, v in zip(ys, xs, strict=True)) / var
