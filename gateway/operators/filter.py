"""`filter`: keep the records for which an expression is true.

```yaml
- filter: {when: "status != 'maintenance' and rpm > 100"}
```
"""

from __future__ import annotations

from pydantic import Field

from gateway.expr import compile_expr, reject_reason
from gateway.operators.base import Expression, OpConfig, Operator, RelPath, StepContext
from gateway.record import Record


class FilterConfig(OpConfig):
    when: Expression = Field(description="Keep a record when this is true.")

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        return [(("when",), compile_expr(self.when).fields)]


class Filter(Operator):
    name = "filter"
    Config = FilterConfig

    def __init__(self, config: FilterConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._when = compile_expr(config.when).fn

    def process(self, batch: list[Record]) -> list[Record]:
        when = self._when
        out: list[Record] = []
        for record in batch:
            try:
                if when(record.fields):
                    out.append(record)
            except Exception as exc:
                self.ctx.reject(record, reject_reason(exc), f"when: {type(exc).__name__}: {exc}")
        return out
