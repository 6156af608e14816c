"""`infer`: classify each record with a quantized LiteRT model; escalate the uncertain ones.

```yaml
- infer:
    id: diagnosis
    from: features
    model: ../models/factory-vibration.tflite   # relative to this pipeline file
    escalate_above: 0.45       # normalized entropy; default: the threshold the model carries
    escalation_budget: 60      # escalations a minute at most; the rest are decided here
    min_readings: 5            # a window of fewer readings (`count`) is not classified
```

The model names its inputs (fields of the incoming records, in its own order), its labels
and its standardization constants (`fogline model info MODEL`). A record gets `label`,
`confidence` (the top probability), `p_<label>` for every label, `entropy` (H(p)/log C:
0 certain, 1 uniform), `model`, `model_version` and `exit`:

- `edge`: confident (entropy at or below `escalate_above`): decided here, on the main
  stream, where alert rules and actions read it;
- `budget`: uncertain, but the escalation budget of the last minute is spent: decided
  here too, and counted;
- uncertain within budget: not on the main stream; on the side stream `<id>.escalate`
  with the model's inputs (not the raw signal) and the edge's answer, for
  `uplink: {from: <id>.escalate, kind: escalation}`. The cloud decides it with a larger
  model (early exit, as in BranchyNet and DDNN).

A window holding fewer than `min_readings` readings (its `count`: the first window of a
device that just started, a window cut short by a dropout) says too little about the
machine to classify: its features are those of one or two blocks, and the model, trained
on full windows, answers them with confidence all the same (a healthy machine's first
window of one reading was called a bearing fault, 93 % sure). Such windows are rejected
(`too_few_readings`), not classified. Every device's first window is one, so these are
counted and logged once (INFO), not warned about.

All records of a micro-batch (every key whose window closed at one boundary) go through
the model in one invoke. A record missing an input, or holding a non-number there, is
rejected (`missing_input`, `wrong_type`) and the rest of the batch goes on.

The model can be replaced while the gateway runs (`swap`, used by over-the-air updates):
between two micro-batches, so no record sees half a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import Field, PlainSerializer, PlainValidator, ValidationInfo, WithJsonSchema

from fogline.model import (
    METADATA_NAME,
    Model,
    ModelError,
    normalized_entropy,
    parse_meta,
    read_metadata,
)
from fogline.units import Duration
from gateway.operators.base import Fields, OpConfig, Operator, RelPath, StepContext
from gateway.record import Record
from gateway.state import StateDelta

OUTPUTS = ("label", "confidence", "entropy", "exit", "model", "model_version")


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A model file named in a pipeline, with what its metadata says (read at check time)."""

    name: str  # as written in the pipeline
    path: Path
    inputs: tuple[str, ...]
    labels: tuple[str, ...]


def _model_file(value: Any, info: ValidationInfo) -> ModelFile:
    if isinstance(value, ModelFile):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a model file name, got {value!r}")
    path = Path((info.context or {}).get("base", ".")) / value
    try:
        meta = parse_meta(read_metadata(path.read_bytes()).get(METADATA_NAME))
    except OSError as exc:
        raise ValueError(f"expected a readable model file, got {path}: {exc.strerror}") from exc
    except ModelError as exc:
        raise ValueError(f"expected a Fogline .tflite model, got {path}: {exc}") from exc
    return ModelFile(value, path, tuple(meta["inputs"]), tuple(meta["labels"]))


ModelPath = Annotated[
    ModelFile,
    PlainValidator(_model_file),
    PlainSerializer(lambda m: m.name),
    WithJsonSchema({"type": "string"}),
]


class InferConfig(OpConfig):
    model: ModelPath = Field(
        description="The .tflite model file (a Fogline model: `models/train.py`), relative to "
        "the pipeline file."
    )
    escalate_above: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Normalized entropy above which a result is escalated to the cloud "
        "(1: never); default: the threshold the model carries, or never.",
    )
    escalation_budget: int = Field(
        60,
        ge=0,
        description="Escalations per minute at most; beyond it results are decided at the "
        "edge (`exit: budget`).",
    )
    min_readings: int = Field(
        1,
        ge=1,
        description="Windows holding fewer readings than this (their `count`) are not "
        "classified (rejected as `too_few_readings`).",
    )
    model_budget: Duration = Field(
        0.02,
        gt=0,
        description="Longest a batch of 64 records may take in a model sent over the air, "
        "timed in a limited child process before it runs; a slower model is refused.",
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        refs: list[tuple[RelPath, frozenset[str]]] = [(("model",), frozenset(self.model.inputs))]
        if self.min_readings > 1:
            refs.append((("min_readings",), frozenset({"count"})))
        return refs

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return fields_in.with_((*OUTPUTS, *(f"p_{label}" for label in self.model.labels)))

    def side_fields(self, stream: str, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        window = fields_in.known & {"window_start", "window_end"}
        return Fields(frozenset({*key, *OUTPUTS, *window, "inputs", "probabilities"}))


class Infer(Operator):
    name = "infer"
    Config = InferConfig
    side_streams: ClassVar[tuple[str, ...]] = ("escalate",)
    ordinary_rejects: ClassVar[frozenset[str]] = frozenset({"too_few_readings"})

    def __init__(self, config: InferConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self.model = Model.from_file(config.model.path)
        self.model.self_test()
        self._budget = float(config.escalation_budget)
        self._tokens = self._budget
        self._refilled = ctx.clock.now()
        self.decided = {"edge": 0, "budget": 0, "escalated": 0}
        self._saved_tokens: tuple[float, float] | None = None

    @property
    def threshold(self) -> float:
        """The step's `escalate_above`, else the running model's, else never (1)."""
        if self.config.escalate_above is not None:
            return float(self.config.escalate_above)
        carried = self.model.info.escalate_above
        return 1.0 if carried is None else carried

    def check_compatible(self, model: Model) -> None:
        """Raise ModelError unless `model` can take this step's place of the current one."""
        current = self.model.info
        problem = model.info.replaces(current.labels, current.inputs)
        if problem is not None:
            raise ModelError(problem)

    def swap(self, model: Model) -> None:
        """Take `model` from the next micro-batch on (checked, test-invoked, or ModelError)."""
        self.check_compatible(model)
        model.self_test()
        self.model = model

    def process(self, batch: list[Record]) -> list[Record]:
        model = self.model
        info = model.info
        rows, kept, x = self._inputs(batch, info.inputs)
        if not kept:
            return []
        probs = model.predict(x)
        entropy = normalized_entropy(probs).tolist()
        top = probs.argmax(axis=1).tolist()
        labels = info.labels
        p_names = [f"p_{label}" for label in labels]
        threshold = self.threshold
        self._refill()
        out: list[Record] = []
        for record, row, k, h, ps in zip(kept, rows, top, entropy, probs.tolist(), strict=True):
            fields = record.fields
            decision = {
                "label": labels[k],
                "confidence": round(ps[k], 4),
                "entropy": round(h, 4),
                "model": info.name,
                "model_version": info.version,
            }
            if h > threshold and self._tokens >= 1.0:
                self._tokens -= 1.0
                self.decided["escalated"] += 1
                escalation = {name: fields[name] for name in self.ctx.key_fields if name in fields}
                for name in ("window_start", "window_end"):
                    if name in fields:
                        escalation[name] = fields[name]
                escalation.update(decision)
                escalation["exit"] = "cloud"
                escalation["inputs"] = dict(zip(info.inputs, row, strict=True))
                escalation["probabilities"] = {
                    label: round(q, 4) for label, q in zip(labels, ps, strict=True)
                }
                self.ctx.side("escalate", Record(record.key, record.ts, escalation))
                continue
            exit_ = "edge" if h <= threshold else "budget"
            self.decided[exit_] += 1
            new = {**fields, **decision, "exit": exit_}
            for name, q in zip(p_names, ps, strict=True):
                new[name] = round(q, 4)
            out.append(Record(record.key, record.ts, new))
        return out

    def _inputs(
        self, batch: list[Record], inputs: tuple[str, ...]
    ) -> tuple[list[list[float]], list[Record], NDArray[np.float32]]:
        """The model's input rows of the records that have them all, as numbers it can take;
        the others are rejected with the field that is missing or wrong."""
        rows: list[list[float]] = []
        kept: list[Record] = []
        least = self.config.min_readings
        for record in batch:
            fields = record.fields
            if least > 1:
                count = fields.get("count")
                if not isinstance(count, int | float) or count < least:
                    self.ctx.reject(
                        record,
                        "too_few_readings",
                        f"the window holds {count} reading(s); min_readings is {least}",
                    )
                    continue
            try:
                row = [fields[name] for name in inputs]
            except KeyError:
                absent = [name for name in inputs if name not in fields]
                self.ctx.reject(record, "missing_input", f"no field {', '.join(absent)}")
                continue
            bad = next(
                (n for n, v in zip(inputs, row, strict=True) if v.__class__ not in (float, int)),
                None,
            )
            if bad is not None:
                self.ctx.reject(
                    record, "wrong_type", f"field '{bad}': expected a number, got {fields[bad]!r}"
                )
                continue
            rows.append(row)
            kept.append(record)
        with np.errstate(over="ignore"):  # beyond float32: inf, rejected below
            x = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(inputs))
        dropped: dict[int, int] = {}  # row -> its first input beyond float32
        for i, at in np.argwhere(~np.isfinite(x)).tolist():
            dropped.setdefault(i, at)
        if not dropped:
            return rows, kept, x
        for i, at in dropped.items():
            self.ctx.reject(
                kept[i],
                "wrong_type",
                f"field '{inputs[at]}': {rows[i][at]!r} is beyond float32, the model's input type",
            )
        good = [i for i in range(len(kept)) if i not in dropped]
        return [rows[i] for i in good], [kept[i] for i in good], x[good]

    def _refill(self) -> None:
        now = self.ctx.clock.now()
        elapsed = max(0.0, now - self._refilled)
        self._refilled = now
        self._tokens = min(self._budget, self._tokens + elapsed * self._budget / 60.0)

    def checkpoint(self) -> StateDelta:
        """The escalation budget: a crash loop must not refill it."""
        tokens = (self._tokens, self._refilled)
        if tokens == self._saved_tokens:
            return StateDelta()
        saved, self._saved_tokens = self._saved_tokens, tokens

        def undo() -> None:
            self._saved_tokens = saved

        return StateDelta(put=[("", orjson.dumps(tokens))], undo=undo)

    def restore(self, parts: dict[str, bytes], now: float) -> None:
        if "" in parts:
            tokens, refilled = orjson.loads(parts[""])
            self._tokens, self._refilled = min(float(tokens), self._budget), float(refilled)
            self._saved_tokens = (self._tokens, self._refilled)

    def status(self) -> dict[str, Any]:
        """For the health record: which model runs here, and where decisions were taken."""
        info = self.model.info
        return {
            **info.summary(),
            # what a replacement must keep: the cloud refuses an upload that would not
            "labels": list(info.labels),
            "inputs": list(info.inputs),
            "threshold": self.threshold,
            **self.decided,
        }
