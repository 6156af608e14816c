"""`deadband`: report by exception — pass a reading only when a field moved enough.

```yaml
- deadband:
    fields: {temperature: 0.5, moisture: 1.0}   # absolute change since the last passed value
    heartbeat: 5m                                # and at least once every 5 minutes per key
```

Per key, a record passes when any listed field differs from its last *passed* value by at
least its threshold (so slow drifts are caught too), or when `heartbeat` has elapsed in
event time. The first record of a key always passes.
"""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import Field, PositiveFloat

from fogline.units import Duration
from gateway.keyed import KeyedState
from gateway.operators.base import FieldName, KeyedConfig, Operator, RelPath, StepContext
from gateway.record import Record
from gateway.state import StateDelta, keyed_delta, restored_keys


class DeadbandConfig(KeyedConfig):
    fields: dict[FieldName, PositiveFloat] = Field(
        description="Field -> smallest change that passes (absolute, or % of the last value).",
        min_length=1,
    )
    mode: Literal["absolute", "percent"] = Field(
        "absolute", description="Thresholds are absolute changes or percentages."
    )
    heartbeat: Duration | None = Field(
        None, description="Pass a record at least this often per key, even without change."
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        return [(("fields",), frozenset(self.fields))]


class Deadband(Operator):
    name = "deadband"
    Config = DeadbandConfig

    def __init__(self, config: DeadbandConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._thresholds = list(config.fields.items())
        self._percent = config.mode == "percent"
        self._heartbeat = config.heartbeat
        self._last: KeyedState[tuple[float, dict[str, float]]] = KeyedState(
            config.max_keys, config.idle_expiry, ctx.evicted
        )

    def process(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        last = self._last
        now = self.ctx.clock.now()
        for record in batch:
            seen = last.get(record.key, now)
            fields = record.fields
            try:
                passes = (
                    seen is None or self._moved(seen[1], fields) or self._due(seen[0], record.ts)
                )
            except TypeError:
                self.ctx.reject(record, "wrong_type", "a deadband field is not a number")
                continue
            if passes:
                try:
                    passed = (record.ts, {f: fields[f] for f, _ in self._thresholds})
                except KeyError as exc:
                    self.ctx.reject(record, "missing_field", f"field {exc} is missing")
                    continue
                last.put(record.key, passed, now)
                out.append(record)
        return out

    def _moved(self, previous: dict[str, float], fields: dict[str, float]) -> bool:
        for name, threshold in self._thresholds:
            value = fields.get(name)
            if value is None:
                continue
            limit = abs(previous[name]) * threshold / 100 if self._percent else threshold
            change = abs(value - previous[name])
            if change >= limit and change > 0:  # from zero, percent mode passes any real change
                return True
        return False

    def _due(self, last_ts: float, ts: float) -> bool:
        return self._heartbeat is not None and ts - last_ts >= self._heartbeat

    def on_timer(self, now: float) -> list[Record]:
        self._last.expire(now)
        return []

    def open_state(self) -> int:
        return len(self._last)

    def checkpoint(self) -> StateDelta:
        return keyed_delta(self._last, orjson.dumps)

    def restore(self, parts: dict[str, bytes], now: float) -> None:
        for key, (ts, values) in restored_keys(parts):
            self._last.restore(key, (ts, values), now)
