"""`derive`: add fields computed from expressions, in order (later ones may use earlier).

```yaml
- derive:
    fields:
      power_kw: voltage * current / 1000
      overheating: temperature > 85
```
"""

from __future__ import annotations

from pydantic import Field

from gateway.expr import compile_expr, reject_reason
from gateway.operators.base import (
    Expression,
    FieldName,
    Fields,
    OpConfig,
    Operator,
    RelPath,
    StepContext,
)
from gateway.record import Record


class DeriveConfig(OpConfig):
    fields: dict[FieldName, Expression] = Field(
        description="New field name -> expression, evaluated top to bottom.", min_length=1
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        # A derived field may use the ones derived above it, never the ones below.
        refs: list[tuple[RelPath, frozenset[str]]] = []
        earlier: set[str] = set()
        for name, source in self.fields.items():
            refs.append((("fields", name), compile_expr(source).fields - earlier))
            earlier.add(name)
        return refs

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return fields_in.with_(self.fields)


class Derive(Operator):
    name = "derive"
    Config = DeriveConfig

    def __init__(self, config: DeriveConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._exprs = [(name, compile_expr(src).fn) for name, src in config.fields.items()]

    def process(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        for record in batch:
            # A copy, so that a branch reading the same upstream stream never sees our fields.
            fields = dict(record.fields)
            try:
                for name, fn in self._exprs:
                    fields[name] = fn(fields)
            except Exception as exc:
                self.ctx.reject(record, reject_reason(exc), f"{name}: {type(exc).__name__}: {exc}")
                continue
            out.append(Record(record.key, record.ts, fields))
        return out
