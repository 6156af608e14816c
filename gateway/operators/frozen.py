"""`frozen`: how many readings in a row a sensor has held still, across window boundaries.

```yaml
- frozen:
    fields: {moisture: 0.025, pressure: 0.0025}   # field -> the widest band still "frozen"
```

Adds, per listed field present on the record, `<field>_frozen`: the number of consecutive
readings of the key, this one included, that all lie within a band of the field's width
(max - min; a stuck probe's last digit may still flicker). A reading outside the band
starts a new run of 1. A window's range cannot do this at any sampling rate: at
half the farm's rate a 30 s window holds three readings, and three healthy readings fall
within a digit of each other often enough to raise 3 false `sensor_stuck` in 8 simulated
hours of 48 plots (reference farm at half rate, seed 203; about what independent noise
predicts). A run carries on across windows, so a rule asks for as many readings as it needs
at any rate. Readings older than the key's newest, or repeated, are passed on with
the run as it stands, not counted again (a duplicated delivery is not a frozen sensor).

A field missing or null is skipped (no output, the run untouched); one that is not a number
rejects the record (`wrong_type`). Per key state: the newest timestamp and, per field, the
run's low, high and length (plain lists, snapshot-friendly).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PositiveFloat

from gateway.keyed import KeyedState
from gateway.operators.base import (
    FieldName,
    Fields,
    KeyedConfig,
    KeyedOperator,
    RelPath,
    StepContext,
    rejected_as_not_a_number,
)
from gateway.record import Record


class FrozenConfig(KeyedConfig):
    fields: dict[FieldName, PositiveFloat] = Field(
        min_length=1,
        description="Field -> the widest band (max - min, in the field's unit) a run of "
        "readings may span and still count as frozen.",
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        return [(("fields",), frozenset(self.fields))]

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return fields_in.with_(f"{f}_frozen" for f in self.fields)


class Frozen(KeyedOperator):
    name = "frozen"
    Config = FrozenConfig

    def __init__(self, config: FrozenConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._fields = [(f, band, f"{f}_frozen") for f, band in config.fields.items()]
        self._names = list(config.fields)
        # [newest ts, {field: [low, high, length]}]
        self._state: KeyedState[list[Any]] = KeyedState(
            config.max_keys, config.idle_expiry, ctx.evicted
        )

    def process(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        now = self.ctx.clock.now()
        for record in batch:
            fields = record.fields
            if rejected_as_not_a_number(self.ctx, record, self._names):
                continue
            state = self._state.get(record.key, now)
            if state is None:
                state = [record.ts, {}]
                self._state.put(record.key, state, now)
                fresh = True
            else:
                fresh = record.ts > state[0]
                if fresh:
                    state[0] = record.ts
            runs: dict[str, list[float]] = state[1]
            added: dict[str, int] = {}
            for name, band, out_name in self._fields:
                x = fields.get(name)
                if x is None:
                    continue
                run = runs.get(name)
                if run is None:
                    run = runs[name] = [float(x), float(x), 1]
                elif fresh:  # comparisons, not min()/max() calls: this runs per reading
                    x = float(x)
                    low, high = run[0], run[1]
                    if x < low:
                        low = x
                    elif x > high:
                        high = x
                    if high - low <= band:
                        run[0], run[1], run[2] = low, high, run[2] + 1
                    else:
                        run[0], run[1], run[2] = x, x, 1
                added[out_name] = int(run[2])
            out.append(Record(record.key, record.ts, {**fields, **added}) if added else record)
        return out
