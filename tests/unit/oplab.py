"""A list-in, list-out harness for operators (the Bytewax testing style).

`run_op("window", {...}, [rec("m1", 0.0, vibration=1.0)], timers=[20.0])` builds the
registered operator from its config dict, feeds it one micro-batch, fires the timers and
returns what came out, what was rejected and what went to side streams.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import FakeClock
from gateway.operators import REGISTRY
from gateway.operators.base import Operator, StepContext
from gateway.record import Record

KEY_FIELDS = ("machine",)


def rec(machine: str, ts: float, **fields: Any) -> Record:
    """A reading for `machine` at event time `ts`; the key field is among the fields."""
    return Record((machine,), float(ts), {"machine": machine, **fields})


@dataclass
class Run:
    op: Operator
    out: list[Record] = field(default_factory=list)
    rejects: list[tuple[Record, str, str]] = field(default_factory=list)
    side: list[tuple[str, Record]] = field(default_factory=list)
    evicted: list[tuple[str, int]] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.rejects]

    def feed(self, records: Iterable[Record]) -> list[Record]:
        """Another micro-batch through the same operator; its output is also kept."""
        got = self.op.process(list(records))
        self.out.extend(got)
        return got

    def timer(self, now: float) -> list[Record]:
        got = self.op.on_timer(now)
        self.out.extend(got)
        return got

    def flush(self) -> list[Record]:
        got = self.op.flush()
        self.out.extend(got)
        return got


def make_op(op_name: str, config_dict: dict[str, Any], clock: FakeClock | None = None) -> Run:
    """The operator with a collecting context, before any record went in."""
    cls = REGISTRY[op_name]
    config = cls.Config.model_validate(config_dict)
    rejects: list[tuple[Record, str, str]] = []
    side: list[tuple[str, Record]] = []
    evicted: list[tuple[str, int]] = []
    ctx = StepContext(
        path=f"steps[0].{op_name}",
        step_id=op_name,
        key_fields=KEY_FIELDS,
        clock=clock if clock is not None else FakeClock(),
        reject=lambda record, reason, detail: rejects.append((record, reason, detail)),
        side=lambda stream, record: side.append((stream, record)),
        evicted=lambda reason, n: evicted.append((reason, n)),
    )
    return Run(cls(config, ctx), rejects=rejects, side=side, evicted=evicted)


def run_op(
    op_name: str,
    config_dict: dict[str, Any],
    records: Iterable[Record],
    clock: FakeClock | None = None,
    timers: Iterable[float] = (),
    *,
    flush: bool = False,
) -> Run:
    """Build the operator, process `records` as one batch, then `on_timer(now)` per timer."""
    run = make_op(op_name, config_dict, clock)
    run.feed(records)
    for now in timers:
        run.timer(now)
    if flush:
        run.flush()
    return run
