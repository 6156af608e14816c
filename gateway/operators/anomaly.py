"""What the anomaly-score operators share.

A detector keeps per-key state and has two verbs: `score_one(state, x)`, how unusual `x`
is against what was learnt so far (signed: below what was learnt is negative; the score
given is its size unless `signed`, and 0 during warm-up), and
`learn_one(state, x, ts)`. Scores are fields; turning a score into an alert is the `alert`
step's job.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from pydantic import Field

from gateway.keyed import KeyedState
from gateway.operators.base import (
    FieldName,
    Fields,
    KeyedOperator,
    LearningConfig,
    LearnWhen,
    RelPath,
    StepContext,
)
from gateway.record import Record


class DetectorConfig(LearningConfig):
    field: FieldName = Field(description="Numeric field to score.")
    out: FieldName | None = Field(None, description="Output field; defaults to `<field>_<suffix>`.")
    warmup: int = Field(10, ge=1, description="Samples per key before scores are given (0 before).")
    exclude_above: float | None = Field(
        None,
        gt=0,
        description="Do not learn from samples scoring above this, so a lasting fault "
        "never becomes the new normal.",
    )
    min_std: float = Field(
        1e-9,
        gt=0,
        description="Floor on the standard deviation, so a flat signal scores finitely "
        "(with `ewma`'s `clip`: the field's noise).",
    )
    min_rel_std: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Floor on the standard deviation as a share of the running mean's size: "
        "a value that moves by less than this share is noise, however quiet its history.",
    )
    signed: bool = Field(
        False,
        description="Keep the score's sign (below the normal is negative), so that a rule "
        "can ask for a rise only; `exclude_above` reads its size either way.",
    )

    suffix: ClassVar[str] = "score"

    def output_field(self) -> str:
        return self.out or f"{self.field}_{self.suffix}"

    def extra_outputs(self) -> list[str]:
        return []

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        return [(("field",), frozenset({self.field})), *super().references()]

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return fields_in.with_([self.output_field(), *self.extra_outputs()])


class AnomalyScore(KeyedOperator):
    """Adds a per-key score field; rejects records whose field is missing (`missing_input`,
    as `infer` does) or not numeric (`wrong_type`)."""

    config: DetectorConfig

    def __init__(self, config: DetectorConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._state: KeyedState[Any] = KeyedState(config.max_keys, config.idle_expiry, ctx.evicted)
        self._field = config.field
        self._out = config.output_field()
        self._warmup = config.warmup
        self._exclude = config.exclude_above
        self._signed = config.signed
        self._min_std = config.min_std
        self._min_rel = config.min_rel_std
        self._learns = LearnWhen.of(config.learn_when, ctx)

    @abstractmethod
    def new_state(self) -> Any:
        """Fresh per-key state (a small list of floats, for speed)."""

    @abstractmethod
    def score_one(self, state: Any, x: float) -> float:
        """How far `x` is from `state`, signed, before learning it."""

    @abstractmethod
    def learn_one(self, state: Any, x: float, ts: float) -> None:
        """Fold `x`, of event time `ts`, into `state`."""

    def spread(self, std: float, mean: float) -> float:
        """`std` floored: at `min_std`, and at `min_rel_std` of the mean's size."""
        return max(std, self._min_std, self._min_rel * abs(mean))

    def annotate(self, state: Any, fields: dict[str, Any]) -> None:
        """Add detector-specific fields besides the score (optional)."""

    def process(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        states = self._state
        now = self.ctx.clock.now()
        for record in batch:
            x = record.fields.get(self._field)
            if x is None:  # an optional input absent here (a window of readings without it)
                self.ctx.reject(record, "missing_input", f"no field '{self._field}' (or null)")
                continue
            if type(x) is not float and type(x) is not int:
                self.ctx.reject(
                    record, "wrong_type", f"field '{self._field}': expected a number, got {x!r}"
                )
                continue
            learn = True if self._learns is None else self._learns(record)
            if learn is None:
                continue
            state = states.get(record.key, now)
            if state is None:
                state = self.new_state()
                states.put(record.key, state, now)
            warm = state[0] >= self._warmup
            raw = self.score_one(state, x) if warm else 0.0
            if learn and (not warm or self._exclude is None or abs(raw) <= self._exclude):
                self.learn_one(state, x, record.ts)
            fields = dict(record.fields)
            fields[self._out] = raw if self._signed else abs(raw)
            self.annotate(state, fields)
            out.append(Record(record.key, record.ts, fields))
        return out
