"""`fogline pipeline test`: a pipeline's own tests, input in and expected output out.

A test file sits beside its pipeline (`factory.yaml` -> `factory.test.yaml`) and lists
cases: messages arriving at simulated instants, and the records the outputs must emit.

```yaml
env: {SITE: line-1}                  # ${VAR} values for the pipeline (optional)
tests:
  - name: a hot machine is stopped at once
    input:
      - {at: 0s, topic: factory/line-1/m-01/telemetry, payload: {temperature: 104.0}}
      - at: 1s
        topic: factory/line-1/m-01/telemetry
        payload: {temperature: 106.0}
        repeat: {count: 3, every: 1s}   # the same message 3 times, 1 s apart (optional)
    expect:                           # in the order they are emitted; other records may
      - output: action factory/line-1/m-01/actions     # come between
        at: 1s                        # optional
        fields: {command: stop}       # these fields, with these values
    absent:                           # nothing emitted matches any of these (optional)
      - {output: uplink alert, fields: {state: cleared}}
    rejects: {readings/wrong_type: 0} # step/reason -> exact count (optional)
    until: 60s                        # run the clock this far (default: last input + 60 s),
    stop: true                        # then stop as the gateway does: open windows flush
```

Each case runs on a fresh engine (`gateway.simulate`): the real decoder, steps and outputs,
in simulated time, so a 10 s window takes no wall time and every run is the same. A
payload without a timestamp is stamped with its simulated arrival. Every difference is
reported with the file, line and column of the expectation it breaks.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fogline.units import Duration
from fogline.yamldoc import Document, Path, Problem, YamlDocumentError, load
from gateway.simulate import START, Emitted, Simulation
from gateway.spec import Pipeline, PipelineError, load_pipeline

SUFFIX = ".test.yaml"
RUN_ON = 60.0  # seconds the clock runs past the last input unless `until` says


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Repeat(_Model):
    count: int = Field(ge=1, le=100_000, description="How many times the message arrives.")
    every: Duration = Field(gt=0, description="Time between two arrivals.")


class Message(_Model):
    at: Duration = Field(description="Arrival, from the start of the case (`0s`, `1.5s`).")
    topic: str = Field(description="MQTT topic (or CoAP path) it arrives on.")
    payload: Any = Field(
        description="A mapping or list is sent as JSON; a string is sent as it is."
    )
    repeat: Repeat | None = Field(None, description="Send it again at a fixed interval.")

    def body(self) -> bytes:
        if isinstance(self.payload, str):
            return self.payload.encode()
        return orjson.dumps(self.payload)


class Match(_Model):
    output: str = Field(
        description="`uplink <kind>` or `action <topic>`, as the pipeline's outputs emit."
    )
    at: Duration | None = Field(
        None, description="When it is emitted, from the start (to the millisecond)."
    )
    fields: dict[str, Any] = Field(
        default_factory=dict, description="Fields it must carry, with these values."
    )

    def matches(self, emitted: Emitted, start: float) -> bool:
        if emitted.output != self.output:
            return False
        if self.at is not None and not math.isclose(emitted.at - start, self.at, abs_tol=1e-3):
            return False
        return all(
            name in emitted.data and _same(emitted.data[name], value)
            for name, value in self.fields.items()
        )

    def describe(self) -> str:
        at = f" at {self.at:g}s" if self.at is not None else ""
        fields = f" with {orjson.dumps(self.fields).decode()}" if self.fields else ""
        return f"{self.output}{at}{fields}"


class Case(_Model):
    name: str = Field(description="What the case shows.")
    input: list[Message] = Field(min_length=1, description="Messages, in arrival order.")
    expect: list[Match] = Field(default_factory=list, description="Emitted, in this order.")
    absent: list[Match] = Field(default_factory=list, description="Never emitted.")
    rejects: dict[str, int] = Field(
        default_factory=dict, description="`step/reason` -> exact count of rejects."
    )
    until: Duration | None = Field(None, description="Run the clock to here.")
    stop: bool = Field(True, description="Then stop as the gateway does (windows flush).")

    @field_validator("input")
    @classmethod
    def _in_order(cls, messages: list[Message]) -> list[Message]:
        for before, after in itertools.pairwise(messages):
            if after.at < before.at:
                raise ValueError(f"expected arrivals in time order, got {after.at:g}s after "
                                 f"{before.at:g}s")  # fmt: skip
        return messages


class CaseFile(_Model):
    pipeline: str | None = Field(
        None, description="The pipeline, relative to this file; default: `<name>.yaml`."
    )
    env: dict[str, str] = Field(default_factory=dict, description="${VAR} values.")
    tests: list[Case] = Field(min_length=1, description="The cases.")


def _same(got: Any, want: Any) -> bool:
    """Equal; numbers within a relative 1e-9 (a mean computed in another order)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, int | float) and isinstance(got, int | float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    return bool(got == want)


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    problems: list[Problem]


def cases_for(path: FsPath) -> FsPath:
    """`pipelines/factory.yaml` -> `pipelines/factory.test.yaml`; a test file is itself."""
    if path.name.endswith(SUFFIX):
        return path
    return path.with_name(path.name.removesuffix(".yaml").removesuffix(".yml") + SUFFIX)


class CaseFileError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_cases(path: FsPath) -> tuple[CaseFile, Document, Pipeline]:
    """A test file, checked, and the pipeline it tests; CaseFileError with every problem."""
    file = str(path)
    try:
        doc = load(path.read_text(encoding="utf-8"), file)
    except OSError as exc:
        raise CaseFileError(
            [Problem(file, 1, 1, "", f"cannot read the file: {exc.strerror}")]
        ) from exc
    except YamlDocumentError as exc:
        raise CaseFileError(exc.problems) from exc
    try:
        spec = CaseFile.model_validate(doc.data)
    except ValidationError as exc:
        raise CaseFileError(
            [
                doc.problem(tuple(err["loc"]), err["msg"].removeprefix("Value error, "))
                for err in exc.errors()
            ]
        ) from exc
    pipeline_file = (
        path.parent / spec.pipeline
        if spec.pipeline
        else path.with_name(path.name.removesuffix(SUFFIX) + ".yaml")
    )
    try:
        return spec, doc, load_pipeline(pipeline_file, spec.env)
    except PipelineError as exc:
        raise CaseFileError(exc.problems) from exc


def run_file(path: FsPath) -> tuple[list[Outcome], list[Problem]]:
    """Every case of one test file; or no outcome and the problems that stopped it."""
    try:
        spec, doc, pipeline = load_cases(path)
    except CaseFileError as exc:
        return [], exc.problems
    outcomes = []
    for i, case in enumerate(spec.tests):
        sim = Simulation(pipeline)
        for message in case.input:
            repeat = message.repeat or Repeat(count=1, every=1.0)
            for k in range(repeat.count):
                sim.send(message.topic, message.body(), START + message.at + k * repeat.every)
        last = max(m.at + ((m.repeat.count - 1) * m.repeat.every if m.repeat else 0.0)
                   for m in case.input)  # fmt: skip
        end = START + (case.until if case.until is not None else last + RUN_ON)
        if case.stop:
            sim.stop(end)
        else:
            sim.advance_to(end)
        outcomes.append(Outcome(case.name, _compare(case, sim, doc, ("tests", i))))
    return outcomes, []


def _compare(case: Case, sim: Simulation, doc: Document, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    emitted = sim.emitted
    cursor = 0
    for j, want in enumerate(case.expect):
        found = next(
            (k for k in range(cursor, len(emitted)) if want.matches(emitted[k], sim.start)), None
        )
        if found is None:
            seen = _seen(want, emitted[cursor:], sim.start)
            problems.append(
                doc.problem((*path, "expect", j), f"expected {want.describe()}, {seen}")
            )
            continue
        cursor = found + 1
    for j, never in enumerate(case.absent):
        hit = next((e for e in emitted if never.matches(e, sim.start)), None)
        if hit is not None:
            problems.append(
                doc.problem(
                    (*path, "absent", j),
                    f"expected no {never.describe()}, got {_show(hit, sim.start)}",
                )
            )
    rejects = {f"{step}/{reason}": n for (step, reason), n in sim.rejects().items()}
    for key, count in case.rejects.items():
        if rejects.get(key, 0) != count:
            others = ", ".join(f"{k}: {n}" for k, n in sorted(rejects.items())) or "none"
            problems.append(
                doc.problem(
                    (*path, "rejects", key),
                    f"expected {count} rejects {key}, got {rejects.get(key, 0)} (all: {others})",
                )
            )
    return problems


def _seen(want: Match, rest: list[Emitted], start: float) -> str:
    """What came instead: the records of that output, or that there were none."""
    same = [e for e in rest if e.output == want.output]
    if not same:
        outputs = sorted({e.output for e in rest})
        return f"got no {want.output} record (emitted: {', '.join(outputs) or 'nothing'})"
    shown = "; ".join(_show(e, start) for e in same[:3])
    more = f" and {len(same) - 3} more" if len(same) > 3 else ""
    return f"got {shown}{more}"


def _show(emitted: Emitted, start: float) -> str:
    data = orjson.dumps(emitted.data, option=orjson.OPT_SORT_KEYS).decode()
    if len(data) > 300:
        data = data[:297] + "..."
    return f"{emitted.output} at {emitted.at - start:g}s {data}"
