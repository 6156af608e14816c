"""What every operator shares: a frozen config model, a runtime object, a context.

An operator is registered under the name used in YAML (`- window: {...}`). Its `Config`
declares every field with type, default and description; that one declaration drives
parsing, `fogline pipeline check`, `pipelines/schema.json` and `docs/operators.md`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fogline.units import Duration
from gateway.clock import Clock
from gateway.expr import ExprError, compile_expr, reject_reason
from gateway.keyed import KeyedState, no_eviction_counter
from gateway.record import Record
from gateway.state import StateDelta, keyed_delta, restored_keys


@dataclass(frozen=True, slots=True)
class Fields:
    """The fields known to exist on a stream; `open` when others may exist too."""

    known: frozenset[str]
    open: bool = False

    def with_(self, names: Iterable[str]) -> Fields:
        return Fields(self.known | frozenset(names), self.open)

    def missing(self, names: Iterable[str]) -> list[str]:
        return [] if self.open else sorted(set(names) - self.known)


RelPath = tuple[str | int, ...]


def _valid_expression(source: str) -> str:
    try:
        compile_expr(source)
    except ExprError as exc:
        raise ValueError(
            f"expected a valid expression, got {source!r}: {exc.message} (column {exc.column + 1})"
        ) from exc
    return source


Expression = Annotated[str, AfterValidator(_valid_expression)]
"""A safe expression over the record's fields, e.g. `temperature > 85 and vibration_z >= 4`."""

FieldName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class OpConfig(BaseModel):
    """Fields every step accepts besides its own."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: FieldName | None = Field(
        None, description="Name of this step's output stream; defaults to the operator name."
    )
    from_: FieldName | None = Field(
        None,
        alias="from",
        description="Stream this step reads: a step id, or `source`. Defaults to the step above.",
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        """Fields this step reads, each with the config path that names them."""
        return []

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        """Fields on this step's output, given those on its input."""
        return fields_in

    def side_fields(self, stream: str, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        """Fields on the side stream `<id>.<stream>`; by default the records that came in."""
        return fields_in


DEFAULT_MAX_KEYS = 10_000
DEFAULT_IDLE_EXPIRY = 86_400.0


class KeyedConfig(OpConfig):
    """A step that keeps state per key: at most `max_keys` keys, dropped after `idle_expiry`."""

    max_keys: int = Field(
        DEFAULT_MAX_KEYS,
        ge=1,
        description="Most keys this step keeps state for; a new key beyond it evicts the "
        'least recently seen one (counted: `fogline_state_evicted_total{reason="max_keys"}`).',
    )
    idle_expiry: Duration | None = Field(
        DEFAULT_IDLE_EXPIRY,
        gt=0,
        description="State of a key not seen for this long is dropped (counted: "
        '`reason="idle"`); null keeps it until `max_keys` pushes it out.',
    )


class LearningConfig(KeyedConfig):
    """A step that learns each key's normal from its records: `learn_when` picks which."""

    learn_when: Expression | None = Field(
        None,
        description="Learn only from records for which this is true (every record is scored).",
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        if self.learn_when is None:
            return []
        return [(("learn_when",), compile_expr(self.learn_when).fields)]


@dataclass(slots=True)
class StepContext:
    """What the engine hands a step: where it is, the clock, and where rejects go."""

    path: str
    step_id: str
    key_fields: tuple[str, ...]
    clock: Clock
    reject: Callable[[Record, str, str], None]
    """reject(record, reason, detail): count, log at a bounded rate, dead-letter."""
    side: Callable[[str, Record], None]
    """side(stream, record): emit on the side stream `<step-id>.<stream>` (e.g. `late`)."""
    evicted: Callable[[str, int], None] = no_eviction_counter
    """evicted(reason, n): n keys' state dropped (`max_keys`, `idle`), for the step's count."""


def rejected_as_not_a_number(ctx: StepContext, record: Record, names: Iterable[str]) -> bool:
    """Reject `record` (`wrong_type`) if one of `names` holds something other than a number
    (absent or null is fine: the step skips it); True if it did."""
    fields = record.fields
    for name in names:
        value = fields.get(name)
        if value is not None and type(value) is not float and type(value) is not int:
            ctx.reject(record, "wrong_type", f"field '{name}': expected a number, got {value!r}")
            return True
    return False


class LearnWhen:
    """A step's `learn_when`, evaluated on one record: True or False, or None after
    rejecting the record when the expression fails on it (a field of the wrong type).
    A step without one keeps None in its place and asks nothing per record."""

    __slots__ = ("_ctx", "_fn")

    def __init__(self, expression: str, ctx: StepContext) -> None:
        self._fn = compile_expr(expression).fn
        self._ctx = ctx

    @classmethod
    def of(cls, expression: str | None, ctx: StepContext) -> LearnWhen | None:
        return None if expression is None else cls(expression, ctx)

    def __call__(self, record: Record) -> bool | None:
        try:
            return bool(self._fn(record.fields))
        except Exception as exc:
            self._ctx.reject(record, reject_reason(exc), f"learn_when: {type(exc).__name__}: {exc}")
            return None


class Operator(ABC):
    """The runtime half of a step: O(1) per record in `process`, heavy work at timers."""

    name: ClassVar[str]
    Config: ClassVar[type[OpConfig]]
    side_streams: ClassVar[tuple[str, ...]] = ()
    ordinary_rejects: ClassVar[frozenset[str]] = frozenset()
    """Reject reasons that ordinary operation produces (a device's first, short window):
    counted like any reject, logged once at INFO, not as a warning."""

    def __init__(self, config: Any, ctx: StepContext) -> None:
        self.config = config
        self.ctx = ctx

    @abstractmethod
    def process(self, batch: list[Record]) -> list[Record]:
        """Records out for a micro-batch of records in."""

    def on_timer(self, now: float) -> list[Record]:
        """Records due at processing time `now` (closing windows and the like)."""
        return []

    def pending(self) -> bool:
        """Records are due already but held for a later pass (`Window.emit_limit`)."""
        return False

    def flush(self) -> list[Record]:
        """Everything still held, for runs that end (simulations, tests). A gateway's stop
        commits the state instead (`checkpoint`), so that its next start goes on with it."""
        return []

    def open_state(self) -> int:
        """How many units of state are open (windows, keys), for metrics."""
        return 0

    def checkpoint(self) -> StateDelta | None:
        """What changed in this step's state since the last checkpoint (gateway/state.py).

        None for a step without state. Called inside the outbox's transaction, between two
        batches, so what it returns matches the records the step has produced.
        """
        return None

    def restore(self, parts: dict[str, bytes], now: float) -> None:
        """Take back what checkpoints stored: part -> its bytes, in part order.

        `now` is the restart's processing time: idle clocks start from it.
        """
        return


class KeyedOperator(Operator):
    """An operator whose whole state is one `KeyedState` of plain JSON values per key:
    idle keys expire on timers, and changed keys are checkpointed and restored as JSON."""

    _state: KeyedState[Any]

    def on_timer(self, now: float) -> list[Record]:
        self._state.expire(now)
        return []

    def open_state(self) -> int:
        return len(self._state)

    def checkpoint(self) -> StateDelta:
        return keyed_delta(self._state, orjson.dumps)

    def restore(self, parts: dict[str, bytes], now: float) -> None:
        for key, value in restored_keys(parts):
            self._state.restore(key, value, now)
