"""`validate`: declare the fields a reading must carry; reject the rest with a reason.

```yaml
- validate:
    fields:
      vibration: {type: number, min: 0, max: 50}
      temperature: {type: number, min: -40, max: 250}
      status: {type: string, required: false, one_of: [ok, degraded]}
```

Numbers must be finite. After `validate`, the declared fields are the ones expressions
downstream may name (plus the pipeline key and topic fields).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.operators.base import FieldName, Fields, OpConfig, Operator, StepContext
from gateway.record import Record

_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "integer": (int,),
    "string": (str,),
    "boolean": (bool,),
}


class FieldSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["number", "integer", "string", "boolean"] = Field(
        "number", description="Expected JSON type."
    )
    required: bool = Field(True, description="Reject a reading without this field.")
    min: float | None = Field(None, description="Smallest accepted value (numbers).")
    max: float | None = Field(None, description="Largest accepted value (numbers).")
    one_of: list[str | int | float | bool] | None = Field(
        None, description="Accepted values, when the field is an enumeration."
    )


class ValidateConfig(OpConfig):
    fields: dict[FieldName, FieldSpec] = Field(
        description="Each field a reading carries, with its type and range.", min_length=1
    )

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return Fields(fields_in.known | frozenset(self.fields) | frozenset(key), open=False)


class Validate(Operator):
    name = "validate"
    Config = ValidateConfig

    def __init__(self, config: ValidateConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._checks = [
            (
                name,
                _TYPES[spec.type],
                spec.type in {"number", "integer"},
                spec.required,
                spec.min,
                spec.max,
                frozenset(spec.one_of) if spec.one_of is not None else None,
            )
            for name, spec in config.fields.items()
        ]

    def process(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        reject = self.ctx.reject
        for record in batch:
            problem = self._problem(record.fields)
            if problem is None:
                out.append(record)
            else:
                reject(record, problem[0], problem[1])
        return out

    def _problem(self, fields: dict[str, Any]) -> tuple[str, str] | None:
        for name, types, numeric, required, lo, hi, allowed in self._checks:
            value = fields.get(name)
            if value is None:
                if required:
                    return "missing_field", f"field '{name}' is missing"
                continue
            if type(value) not in types:
                kind = "a number" if numeric else f"a {types[0].__name__}"
                return "wrong_type", f"field '{name}': expected {kind}, got {value!r}"
            if numeric:
                if not math.isfinite(value):
                    return "not_finite", f"field '{name}': expected a finite number, got {value}"
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    return "out_of_range", f"field '{name}': expected {lo}..{hi}, got {value}"
            if allowed is not None and value not in allowed:
                return (
                    "not_allowed",
                    f"field '{name}': expected one of {sorted(allowed, key=str)}, got {value!r}",
                )
        return None
