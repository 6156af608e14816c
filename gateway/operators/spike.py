"""`spike`: a reading unlike both of its neighbours, judged once the next one arrives.

```yaml
- spike:
    fields: {flow: 0.1, pressure: 0.02}   # field -> smallest spread, in its unit
    steady: [valve]                       # judged only while these hold still
    history: 30                           # reading-to-reading changes learnt per key
    warmup: 5                             # changes before scores are given (0 before)
```

A sensor spike is one reading that jumps away and back: a step (a valve opening, a leak
starting or ending) jumps and stays. Only the next reading tells the two apart, so each
reading is judged when its successor arrives, and the score rides on that successor as
`<field>_spike`: how far the previous reading stood beyond both of its neighbours, in the
same direction, in units of the key's own reading-to-reading spread (1.4826 x the median
absolute change over its last `history` changes, floored at the field's smallest spread),
and 0 unless the two neighbours agree with each other to within half of that distance. No
reading is held back (a window or a stop downstream sees each reading as it comes); a
spike is reported one reading late, so at any sampling rate its window, or the next, shows
it. A burst of two readings beyond both sides, the same way, counts too (interference
often lasts two samples; a drawn farm site's two-reading flow bursts went unreported for
five windows): it is judged when the reading after it arrives. Three readings are a
level, not a spike. Changes next to a spike are not learnt. A reading that arrives out
of order, between the key's two newest in event time, is judged at once against those two,
its neighbours, and scores on itself; nothing is learnt from it (a drawn site's first
spike arrived late, went unjudged, and the fault was seen 2.6 windows after it showed).
Older readings, and readings that come twice, are passed on unjudged.

Windowed rules were the earlier answer (the largest reading far from the window's median
and not its last one); at a third of the farm's rate a window holds three readings, a spike
in the last one could not be told from a step, and a fault's first spikes went unreported
for up to 20 windows (docs/benchmarks.md, "Detection quality"). Per key state: per field
the three latest readings and the learnt changes, and the `steady` fields of the two latest
readings, and the event times of the two newest readings (plain lists, snapshot-friendly).
"""

from __future__ import annotations

from statistics import median
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
from gateway.operators.baseline import MAD_TO_STD
from gateway.record import Record

AGREE = 0.5  # the neighbours may differ by at most this share of the spike's distance
# A score above what healthy noise reaches (~6) makes a reading a spike: no neighbour of
# the next, and the changes around it not learnt. Below it, a reading a little beyond both
# neighbours is noise, as any can be: when every such score broke the chain, a two-reading
# burst right after one went unjudged (a drawn farm plot's 40 % moisture burst at half the
# rate, reported 4 windows late).
CUT = 6.0
REFRESH = 8  # learnt changes between two recomputations of a spread (a median of `history`)

# Per field: [before, last, changes, spread (None: to compute), changes since it was,
# the reading before `before` once judged normal itself (for bursts), whether `before` was
# judged] (the last two are absent from slots checkpointed before bursts were judged)
Slot = list[Any]


class SpikeConfig(KeyedConfig):
    fields: dict[FieldName, PositiveFloat] = Field(
        min_length=1,
        description="Field -> its smallest reading-to-reading spread (in the field's unit): "
        "a sensor that never moves still scores finitely.",
    )
    history: int = Field(30, ge=3, le=10_000, description="Changes learnt per key and field.")
    warmup: int = Field(5, ge=1, description="Changes a field needs before it is scored.")
    steady: list[FieldName] = Field(
        default_factory=list,
        description="Fields that must hold still across a reading and both its neighbours "
        "for it to be judged (a valve that moved explains a jump in flow).",
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        return [(("fields",), frozenset(self.fields)), (("steady",), frozenset(self.steady))]

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return fields_in.with_(f"{f}_spike" for f in self.fields)


class Spike(KeyedOperator):
    name = "spike"
    Config = SpikeConfig

    def __init__(self, config: SpikeConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._fields = [(f, floor, f"{f}_spike") for f, floor in config.fields.items()]
        self._names = list(config.fields)
        self._history = config.history
        self._warmup = config.warmup
        self._steady = config.steady
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
            held = [fields.get(f) for f in self._steady]
            if state is None:
                state = [record.ts, {}, held, held, None]
                self._state.put(record.key, state, now)
            elif record.ts <= state[0]:  # late or twice: no neighbour of the next
                out.append(self._late(state, record, held))
                continue
            if len(state) < 5:  # checkpointed before late readings were judged
                state.append(None)
            state[4], state[0] = state[0], record.ts
            slots: dict[str, Slot] = state[1]
            still = state[2] == state[3] == held
            state[2], state[3] = state[3], held
            added: dict[str, float] = {}
            for name, floor, out_name in self._fields:
                x = fields.get(name)
                if x is None:
                    continue
                slot = slots.get(name)
                if slot is None:
                    slots[name] = [None, float(x), [], None, 0, None, False]
                    added[out_name] = 0.0
                elif still:
                    added[out_name] = self._judge(slot, float(x), floor)
                else:  # a steady field moved: nothing is judged or learnt across it
                    slot[0], slot[1] = None, float(x)
                    slot[5:] = [None, False]
                    added[out_name] = 0.0
            out.append(Record(record.key, record.ts, {**fields, **added}) if added else record)
        return out

    def _late(self, state: list[Any], record: Record, held: list[Any]) -> Record:
        """A reading older than the key's newest: scored on itself against the two newest
        readings if it came between them (its neighbours), else passed on as it is. Each
        field it holds gets a score, 0 where there is no pair to judge against (right
        after a spike), as on the main path: a rule can read them all."""
        before = state[4] if len(state) > 4 else None
        if before is None or not before < record.ts < state[0] or not state[2] == state[3] == held:
            return record
        added: dict[str, float] = {}
        for name, floor, out_name in self._fields:
            x, slot = record.fields.get(name), state[1].get(name)
            if x is None:
                continue
            if slot is None or slot[0] is None:
                added[out_name] = 0.0
                continue
            a, b, x = slot[0], slot[1], float(x)
            d = max(x - max(a, b), min(a, b) - x)  # beyond both, the same way (<= 0: not)
            warm = len(slot[2]) >= self._warmup
            spiking = warm and d > floor and abs(a - b) <= AGREE * d
            added[out_name] = d / self._spread(slot, floor) if spiking else 0.0
        return Record(record.key, record.ts, {**record.fields, **added}) if added else record

    def _judge(self, slot: Slot, c: float, floor: float) -> float:
        """Score the last reading `b` (or the last two, `a` and `b`) now that `c` follows,
        learn, and shift."""
        if len(slot) < 7:
            slot[5:] = [None, False]
        z, a, b, changes = slot[5], slot[0], slot[1], slot[2]
        score = 0.0
        if a is not None:
            # How far b stands beyond both neighbours, the same way (<= 0: between them).
            d = b - a if a > c else b - c
            if d <= 0:
                d = (c if c < a else a) - b  # noqa: FURB136 (a call costs more)
            warm = len(changes) >= self._warmup
            if warm and d > floor and abs(a - c) <= AGREE * d:
                score = d / self._spread(slot, floor)
            elif warm and z is not None and abs(a - b) < abs(b - c):
                # A burst: a and b both beyond z and c, the same way, z and c agreeing.
                d = max(min(a, b) - max(z, c), min(z, c) - max(a, b))
                if d > floor and abs(z - c) <= AGREE * d:
                    score = d / self._spread(slot, floor)
            if score <= CUT:
                changes.append(abs(b - a))
                slot[4] += 1
                if len(changes) > self._history:
                    del changes[0]
                if not warm:
                    slot[3] = None
        if score > CUT:
            slot[0], slot[5], slot[6] = None, None, False
        else:
            slot[0], slot[5], slot[6] = b, (a if slot[6] else None), a is not None
        slot[1] = c
        return score

    @staticmethod
    def _spread(slot: Slot, floor: float) -> float:
        """The key's reading-to-reading spread, recomputed every REFRESH learnt changes."""
        if slot[3] is None or slot[4] >= REFRESH:
            slot[3], slot[4] = max(MAD_TO_STD * median(slot[2]), floor), 0
        spread: float = slot[3]
        return spread
