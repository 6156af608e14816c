"""`window`: per-key tumbling or hopping windows with aggregates computed at the boundary.

```yaml
- window:
    size: 10s            # window length
    hop: 5s              # omit for tumbling windows
    time: event          # event time (the reading's timestamp) or processing
    lateness: 2s         # event time: how long to wait for out-of-order readings
    aggregates:
      vibration: [rms, p95, mean, max]
      temperature: [mean, max, slope]   # slope: per second of event time
```

Each closed window emits one record per key with the key fields, `window_start`,
`window_end`, `count`, `first_ts` and `last_ts` (the times of its earliest and latest
reading: a device that fell silent shows as `window_end - last_ts`) and
`<field>_<aggregate>` (e.g. `vibration_rms`). Aggregates: `count`, `sum`, `mean`, `min`,
`max`, `std`, `rms`, `p50`, `p95`, `first` and `last` (by event time), `range` (max - min),
`delta` (last - first), `slope` (least squares, per second of event time), `crest`
(max |x| / rms) and `kurtosis` (3 for Gaussian noise, higher for impacts).

Per reading the work is an append to a list. At a boundary, every closing window of every
key is reduced in one vectorized numpy pass per field. Event time follows a watermark: the
largest timestamp seen, advanced by wall-clock time while no newer reading arrives (so
windows close when devices fall silent). A window closes once the watermark passes its end
plus `lateness`; a reading that arrives for windows already closed is late: it is counted
and emitted on the side stream `<id>.late`, never silently dropped.
"""

from __future__ import annotations

import math
import struct
from array import array
from typing import Any, Literal

import orjson
from pydantic import Field, model_validator

from fogline.units import Duration
from gateway.aggregates import AGGREGATES, TIME_ORDERED, segment_aggregates
from gateway.operators.base import (
    DEFAULT_MAX_KEYS,
    FieldName,
    Fields,
    OpConfig,
    Operator,
    RelPath,
    StepContext,
)
from gateway.record import Record
from gateway.state import StateDelta

Aggregate = Literal[
    "count", "sum", "mean", "min", "max", "std", "rms", "p50", "p95", "first", "last",
    "range", "delta", "slope", "crest", "kurtosis",
]  # fmt: skip
assert set(AGGREGATES) == set(Aggregate.__args__)  # type: ignore[attr-defined]  # noqa: S101

MAX_WINDOWS_PER_RECORD = 100


class WindowConfig(OpConfig):
    size: Duration = Field(description="Window length, e.g. `10s`.", gt=0)
    hop: Duration | None = Field(
        None, description="Distance between window starts (hopping); omit for tumbling.", gt=0
    )
    time: Literal["event", "processing"] = Field(
        "event", description="Event time (the reading's timestamp) or arrival time."
    )
    lateness: Duration = Field(
        0.0, description="Event time: how long a window waits for out-of-order readings."
    )
    aggregates: dict[FieldName, list[Aggregate]] = Field(
        default_factory=dict,
        description="Field -> aggregates to compute over the window; none for a window that "
        "only counts readings and notes their first and last time (liveness).",
    )
    max_keys: int = Field(
        DEFAULT_MAX_KEYS,
        ge=1,
        description="Most keys in one window; a reading of a new key beyond it is rejected "
        "(`too_many_keys`). A window's state is freed when it closes, so no idle expiry.",
    )

    @model_validator(mode="after")
    def _hop_fits(self) -> WindowConfig:
        hop = self.hop or self.size
        if hop > self.size:
            raise ValueError(f"expected hop <= size ({self.size}s), got {hop}s")
        if self.size / hop > MAX_WINDOWS_PER_RECORD:
            raise ValueError(
                f"expected at most {MAX_WINDOWS_PER_RECORD} overlapping windows (size/hop), "
                f"got {self.size / hop:g}"
            )
        return self

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        return [(("aggregates",), frozenset(self.aggregates))]

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        out = {"window_start", "window_end", "count", "first_ts", "last_ts", *key}
        out |= {f"{name}_{agg}" for name, aggs in self.aggregates.items() for agg in aggs}
        return Fields(frozenset(out))


class WindowBuffer:
    """One window of one key: C double arrays (8 bytes a value, invisible to the GC)."""

    __slots__ = ("count", "extra", "first_ts", "last_ts", "saved", "saved_count", "times", "values")

    def __init__(self, n_fields: int) -> None:
        self.saved: list[int] = []  # length of each array at the last checkpoint
        self.saved_count = 0
        self.count = 0
        self.first_ts = math.inf
        self.last_ts = -math.inf
        self.values = [array("d") for _ in range(n_fields)]
        self.times = [array("d") for _ in range(n_fields)]
        self.extra: Any = None  # what a subclass keeps per window (see Window.admit)


ClosingWindow = tuple[float, tuple[str, ...], WindowBuffer]
"""(window start, key, buffer) of a window being emitted."""


class WrongTypeError(Exception):
    """Raised by `Window.admit` to reject a record uncounted (`wrong_type`, with this detail)."""


class Window(Operator):
    name = "window"
    Config = WindowConfig
    side_streams = ("late",)

    def __init__(self, config: WindowConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._size = config.size
        self._hop = config.hop or config.size
        self._lateness = config.lateness if config.time == "event" else 0.0
        self._event_time = config.time == "event"
        self._fields = list(config.aggregates)
        self._aggs = [list(dict.fromkeys(aggs)) for aggs in config.aggregates.values()]
        self._keep_times = any(a in TIME_ORDERED for aggs in self._aggs for a in aggs)
        # start -> key -> buffer; windows of one start close together, across all keys.
        self._open: dict[float, dict[tuple[str, ...], WindowBuffer]] = {}
        self._max_ts = -math.inf
        self._max_ts_wall = ctx.clock.now()
        self._frontier = -math.inf  # every window starting before this has been emitted
        self.late = 0
        self._closed: list[str] = []  # parts of windows emitted since the last checkpoint

    # -- per record: O(1) appends -------------------------------------------------------

    def process(self, batch: list[Record]) -> list[Record]:  # noqa: PLR0915 - one hot loop, inlined
        if not batch:
            return []
        now = self.ctx.clock.now()
        hop, size, fields = self._hop, self._size, self._fields
        n_fields = len(fields)
        keep_times = self._keep_times
        max_keys = self.config.max_keys
        # A plain window reads nothing more: skip the call per record.
        admit, keep = (None if type(self).admit is Window.admit else self.admit), self.keep
        for record in batch:
            values = record.fields
            row = [values.get(name) for name in fields]
            bad = _not_a_number(fields, row)
            if bad is not None:
                self.ctx.reject(
                    record, "wrong_type", f"field '{bad}': expected a number, got {values[bad]!r}"
                )
                continue
            try:
                extra = admit(record) if admit is not None else None
            except WrongTypeError as exc:
                self.ctx.reject(record, "wrong_type", str(exc))
                continue
            ts = record.ts if self._event_time else now
            if ts > self._max_ts:
                self._max_ts = ts
                self._max_ts_wall = now
            last_start = math.floor(ts / hop) * hop
            start = last_start
            accepted = full = False
            while start > ts - size:
                if start >= self._frontier:
                    by_key = self._open.get(start)
                    if by_key is None:
                        by_key = self._open[start] = {}
                    buf = by_key.get(record.key)
                    if buf is None:
                        if len(by_key) >= max_keys:
                            full = True
                            start -= hop
                            continue
                        buf = by_key[record.key] = WindowBuffer(n_fields)
                    accepted = True
                    buf.count += 1
                    if ts > buf.last_ts:
                        buf.last_ts = ts
                    if ts < buf.first_ts:
                        buf.first_ts = ts
                    for i in range(n_fields):
                        value = row[i]
                        if value is not None:
                            buf.values[i].append(value)
                            if keep_times:
                                buf.times[i].append(ts)
                    if extra is not None:
                        keep(buf, extra)
                start -= hop
            if full:
                self.ctx.reject(
                    record, "too_many_keys", f"a window holds max_keys {max_keys} keys already"
                )
            elif not accepted:
                self.late += 1
                self.ctx.side("late", record)
        return []

    def admit(self, record: Record) -> Any:
        """What `record` adds to each of its windows besides the aggregated fields.

        None here. A subclass reading more of the record (`features`: sample blocks)
        checks and converts it once per record, raising `WrongTypeError(detail)` for a record
        that must not be counted, and `keep` stores the result in each window it lands in.
        """
        return None

    def keep(self, buf: WindowBuffer, extra: Any) -> None:
        """Store what `admit` returned in one window's buffer (`buf.extra`)."""

    # -- at boundaries: vectorized --------------------------------------------------------

    def watermark(self, now: float) -> float:
        if not self._event_time:
            return now
        return self._max_ts + max(0.0, now - self._max_ts_wall)

    def on_timer(self, now: float) -> list[Record]:
        if not self._open:
            return []
        limit = self.watermark(now) - self._size - self._lateness
        if limit < self._frontier:
            return []
        # Every window starting at or before `limit` is complete, with data or without.
        self._frontier = math.floor(limit / self._hop) * self._hop + self._hop
        due = sorted(start for start in self._open if start < self._frontier)
        return self._emit(due) if due else []

    def flush(self) -> list[Record]:
        due = sorted(self._open)
        if due:
            self._frontier = max(self._frontier, due[-1] + self._hop)
        return self._emit(due)

    def open_state(self) -> int:
        return sum(len(by_key) for by_key in self._open.values())

    def _emit(self, starts: list[float]) -> list[Record]:
        windows: list[ClosingWindow] = [
            (start, key, buf) for start in starts for key, buf in self._open.pop(start).items()
        ]
        self._closed += [_part(start, key) for start, key, buf in windows if buf.saved_count]
        key_fields = self.ctx.key_fields
        out = [
            Record(
                key,
                start + self._size,
                {
                    **dict(zip(key_fields, key, strict=True)),
                    "window_start": start,
                    "window_end": start + self._size,
                    "count": buf.count,
                    "first_ts": buf.first_ts,
                    "last_ts": buf.last_ts,
                },
            )
            for start, key, buf in windows
        ]
        self.window_fields(windows, out)
        return out

    # -- checkpoints (gateway/state.py) ----------------------------------------------------

    def arrays(self, buf: WindowBuffer, create: bool = False) -> list[array[Any]]:
        """Every array a buffer holds, in a fixed order; a subclass adds what `keep` stores
        (`create`: make that room first, for a restore)."""
        return [*buf.values, *buf.times]

    def checkpoint(self) -> StateDelta:
        """Per open window and key, the values appended since the last checkpoint: each
        reading is written once, however long its window stays open."""
        delta = StateDelta(drop=self._closed)
        self._closed = []
        taken: list[tuple[WindowBuffer, list[int], int]] = []
        for start, by_key in self._open.items():
            for key, buf in by_key.items():
                if buf.count == buf.saved_count:
                    continue
                arrays = self.arrays(buf)
                saved = buf.saved + [0] * (len(arrays) - len(buf.saved))
                header = orjson.dumps(
                    {
                        "c": buf.count,
                        "f": buf.first_ts,
                        "l": buf.last_ts,
                        "n": [len(a) - s for a, s in zip(arrays, saved, strict=True)],
                    }
                )
                body = b"".join(
                    memoryview(a)[s:].tobytes() for a, s in zip(arrays, saved, strict=True)
                )
                delta.append.append((_part(start, key), _HEADER.pack(len(header)) + header + body))
                taken.append((buf, buf.saved, buf.saved_count))
                buf.saved, buf.saved_count = [len(a) for a in arrays], buf.count
        # Event time, and how long no newer reading has come (processing time), so that the
        # watermark goes on from where it was: the downtime does not close windows before
        # the readings the broker delivers again have come back in.
        idle_for = self.ctx.clock.now() - self._max_ts_wall
        delta.put.append(
            ("", orjson.dumps([_finite(self._max_ts), _finite(self._frontier), idle_for]))
        )
        closed = delta.drop

        def undo() -> None:
            for buf, saved, count in taken:
                buf.saved, buf.saved_count = saved, count
            self._closed = closed + self._closed

        delta.undo = undo
        return delta

    def restore(self, parts: dict[str, list[bytes]], now: float) -> None:
        n_fields = len(self._fields)
        for part, segments in parts.items():
            if not part:
                max_ts, frontier, idle_for = orjson.loads(segments[-1])
                self._max_ts = -math.inf if max_ts is None else max_ts
                self._frontier = -math.inf if frontier is None else frontier
                self._max_ts_wall = now - idle_for
                continue
            start, *key = orjson.loads(part)
            buf = WindowBuffer(n_fields)
            for data in segments:
                (size,) = _HEADER.unpack_from(data)
                header = orjson.loads(data[_HEADER.size : _HEADER.size + size])
                at = _HEADER.size + size
                arrays = self.arrays(buf, create=True)
                for a, n in zip(arrays, header["n"], strict=False):
                    a.frombytes(data[at : at + n * a.itemsize])
                    at += n * a.itemsize
                buf.count, buf.first_ts, buf.last_ts = header["c"], header["f"], header["l"]
            buf.saved, buf.saved_count = [len(a) for a in self.arrays(buf)], buf.count
            self._open.setdefault(float(start), {})[tuple(key)] = buf

    def window_fields(self, windows: list[ClosingWindow], out: list[Record]) -> None:
        """Add the computed fields to `out` (one record per window), each in one numpy pass."""
        for i, (name, aggs) in enumerate(zip(self._fields, self._aggs, strict=True)):
            present = [j for j, (_, _, buf) in enumerate(windows) if buf.values[i]]
            if not present:
                continue
            values = [windows[j][2].values[i] for j in present]
            times = [windows[j][2].times[i] for j in present] if self._keep_times else None
            results = segment_aggregates(values, aggs, times)
            for agg in aggs:
                column = results[agg].tolist()
                label = f"{name}_{agg}"
                for j, value in zip(present, column, strict=True):
                    out[j].fields[label] = value


_HEADER = struct.Struct("<I")


def _part(start: float, key: tuple[str, ...]) -> str:
    return orjson.dumps([start, *key]).decode()


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _not_a_number(names: list[str], row: list[object]) -> str | None:
    """The first field holding something other than a number (None: absent, allowed)."""
    for name, value in zip(names, row, strict=True):
        if value is not None and value.__class__ is not float and value.__class__ is not int:
            return name
    return None
