"""`absence`: a key that falls silent, measured against its own usual interval.

```yaml
- absence:
    id: liveness
    from: readings
    after: 3          # silent for 3 of the key's usual intervals between readings
    min_silence: 3s   # and never less than this
```

Windows exist only for readings that arrived, so silence cannot be seen in them reliably
(a silence that begins on a window boundary leaves no window at all), and a fixed gap
assumes one sampling rate: `sensor_gap > 1.5` was right at 1 Hz and fired on every window
at 0.5 Hz. This step learns, per key, the median of its last `learn` intervals between readings in
event time (their `ts`: a backlog delivered in a burst after an outage keeps its real
spacing; a duplicate or a late reading, not newer than the newest, is not learnt, nor an
interval longer than the silence threshold; the median shrugs off jitter), and checks at
every timer tick whether `after` of those intervals (at least `min_silence`) have passed,
in processing time, since the key's last reading arrived. It emits one record when a key
falls silent and one when it is heard again, with `silent` (true/false), `silent_for` (s),
`usual_interval` (s) and `last_ts` (event time of the newest reading), for an `alert`:
`raise: silent`, `clear: not silent`. A key is judged once it has `warmup` intervals:
8, since the median of 3 timestamps' intervals jittered by 0.3 s came out near 0.6 s for a
1 Hz machine, and one reading delivered a second late then read as a silence (3 false
`sensor_gap` raises in a machine's first 10 s, on two seeds of a site with 15 % of its
readings late or twice).

Per tick, only keys quiet for at least `min_silence` are looked at (state is kept in
least-recently-heard order). State per key: `Heard` (last arrival, newest event time,
silent or not, the learnt intervals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

import orjson
from pydantic import Field

from fogline.units import Duration
from gateway.keyed import KeyedState
from gateway.operators.base import Fields, KeyedConfig, Operator, StepContext
from gateway.record import Record
from gateway.state import StateDelta, keyed_delta, restored_keys

OUTPUTS = ("silent", "silent_for", "usual_interval", "last_ts")


class AbsenceConfig(KeyedConfig):
    after: float = Field(
        3.0, gt=1, description="Silent after this many of the key's usual intervals."
    )
    min_silence: Duration = Field(
        1.0, gt=0, description="Never silent before this long, whatever the usual interval."
    )
    learn: int = Field(
        16, ge=1, le=1000, description="Arrival intervals the usual one is the median of."
    )
    warmup: int = Field(8, ge=1, description="Intervals a key needs before it can be silent.")

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return Fields(frozenset(key) | frozenset(OUTPUTS))


@dataclass(slots=True)
class Heard:
    """One key's state, plain values only (snapshot-friendly)."""

    last_arrival: float  # processing time of its newest arrival
    last_ts: float  # newest event time heard
    silent: bool = False
    gaps: list[float] = field(default_factory=list)  # the last `learn` intervals (event time)


class Absence(Operator):
    name = "absence"
    Config = AbsenceConfig

    def __init__(self, config: AbsenceConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._after = config.after
        self._min = float(config.min_silence)
        self._learn = config.learn
        self._warmup = config.warmup
        self._state: KeyedState[Heard] = KeyedState(
            config.max_keys, config.idle_expiry, ctx.evicted
        )

    def _threshold(self, gaps: list[float]) -> float | None:
        if len(gaps) < self._warmup:
            return None
        return max(self._after * median(gaps), self._min)

    def _event(self, key: tuple[str, ...], ts: float, quiet: float, heard: Heard) -> Record:
        fields: dict[str, object] = dict(zip(self.ctx.key_fields, key, strict=True))
        fields.update(
            silent=heard.silent,
            silent_for=quiet,
            usual_interval=median(heard.gaps) if heard.gaps else None,
            last_ts=heard.last_ts,
        )
        return Record(key, ts, fields)

    def process(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        now = self.ctx.clock.now()
        states = self._state
        for record in batch:
            heard = states.get(record.key, now)
            if heard is None:
                states.put(record.key, Heard(now, record.ts), now)
                continue
            if heard.silent:
                heard.silent = False
                quiet = now - heard.last_arrival
                out.append(self._event(record.key, record.ts, quiet, heard))
            gap = record.ts - heard.last_ts
            limit = self._threshold(heard.gaps)
            if gap > 1e-6 and (limit is None or gap <= limit):
                heard.gaps.append(gap)
                if len(heard.gaps) > self._learn:
                    del heard.gaps[0]
            heard.last_arrival = now
            heard.last_ts = max(heard.last_ts, record.ts)
        return out

    def on_timer(self, now: float) -> list[Record]:
        self._state.expire(now)
        out: list[Record] = []
        for key, heard in zip(self._state, self._state.values(), strict=True):
            quiet = now - heard.last_arrival
            if quiet < self._min:
                break  # every key after this one was heard more recently still
            limit = self._threshold(heard.gaps)
            if not heard.silent and limit is not None and quiet > limit:
                heard.silent = True
                self._state.changed(key)
                out.append(self._event(key, now, quiet, heard))
        return out

    def open_state(self) -> int:
        return len(self._state)

    def checkpoint(self) -> StateDelta:
        """Per key, with how long it had been quiet rather than when it was last heard: a
        restart's downtime makes no device look silent before the broker's backlog is in."""
        now = self.ctx.clock.now()

        def encode(heard: Heard) -> bytes:
            quiet = now - heard.last_arrival
            return orjson.dumps([quiet, heard.last_ts, heard.silent, heard.gaps])

        return keyed_delta(self._state, encode)

    def restore(self, parts: dict[str, bytes], now: float) -> None:
        for key, (quiet, last_ts, silent, gaps) in restored_keys(parts):
            self._state.restore(key, Heard(now - quiet, last_ts, silent, gaps), now)
