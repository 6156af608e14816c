"""Cloud decisions on escalations: the larger model decides what the edge was unsure of.

A gateway's `infer` step uplinks its uncertain results as `escalation` records, with the
model's inputs and the edge's answer. The cloud runs its own model of the same name (a
file whose metadata says `kind: cloud`) on them as they are stored: one invoke per model
per drain, inside the drain's transaction, so the decision is on disk when the record is
acknowledged and a retransmission, never stored twice, is never decided twice.

The input vector is taken by the cloud model's own input names from the record's `inputs`,
so a cloud model may read fewer inputs, or others in another order, than the edge's. A
record the cloud cannot decide (no such model, an input missing) is stored undecided,
with the reason.

The first label of a model is its healthy class, by convention (`normal`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud.models import MAX_LABEL, MAX_MODEL, MAX_VERSION
from cloud.parse import is_number
from fogline.model import METADATA_NAME, Model, ModelError, parse_meta, read_metadata

log = logging.getLogger("fogline.cloud.escalations")

DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models"
"""The repository's `models/`, where the demo models are shipped."""

FLOAT32_MAX = float(np.finfo(np.float32).max)

UNDECIDED: dict[str, Any] = {
    "cloud_label": None,
    "cloud_confidence": None,
    "cloud_probabilities": None,
    "cloud_model_version": None,
    "agree": None,
    "decided_at": None,
}


def model_name(data: dict[str, Any]) -> str | None:
    """The edge model an escalation names, if it fits the column."""
    name = data.get("model")
    return name if isinstance(name, str) and 0 < len(name) <= MAX_MODEL else None


def models_dir(text: str, flag: str) -> Path:
    """An existing directory (of cloud models); the error names the flag."""
    path = Path(text)
    if not path.is_dir():
        raise ValueError(f"{flag}: expected a directory of .tflite models, got {text!r}")
    return path


@dataclass(slots=True)
class _Loaded:
    model: Model
    lock: threading.Lock  # an interpreter runs one invoke at a time; drains may overlap


class CloudModels:
    """The cloud models, by model name; `decide` fills the decision columns of escalations."""

    def __init__(self, models: dict[str, Model] | None = None) -> None:
        self._models = {name: _Loaded(m, threading.Lock()) for name, m in (models or {}).items()}

    @classmethod
    def load(cls, directory: Path) -> CloudModels:
        """Every loadable cloud model in `directory`; the others are logged and skipped."""
        models: dict[str, Model] = {}
        for path in sorted(directory.glob("*.tflite")) if directory.is_dir() else []:
            try:
                meta = parse_meta(read_metadata(path.read_bytes()).get(METADATA_NAME))
                if meta.get("kind") != "cloud":
                    continue
                model = Model.from_file(path)
                model.self_test()
            except (OSError, ModelError) as exc:
                log.warning("cloud models: skipped %s: %s", path, exc)
                continue
            kept = models.get(model.info.name)
            if kept is not None:
                log.warning(
                    "cloud models: %s and %s are both named %r; using %s",
                    kept.source,
                    path,
                    model.info.name,
                    kept.source,
                )
                continue
            models[model.info.name] = model
        if models:
            log.info(
                "cloud models from %s: %s",
                directory,
                ", ".join(f"{m.info.name} {m.info.version}" for m in models.values()),
            )
        else:
            log.info("no cloud model in %s: escalations are stored undecided", directory)
        return cls(models)

    def names(self) -> dict[str, str]:
        """Model name -> version of every model loaded."""
        return {name: m.model.info.version for name, m in self._models.items()}

    def decide(self, records: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """The decision columns for each record (escalation data), in order."""
        out: list[dict[str, Any]] = [{} for _ in records]
        rows: dict[str, list[tuple[int, list[float]]]] = {}
        for i, data in enumerate(records):
            name = model_name(data)
            loaded = self._models.get(name) if name is not None else None
            problem = None
            if loaded is None:
                problem = (
                    f"no cloud model named {name!r}"
                    if name is not None
                    else "the record names no model (field 'model')"
                )
            else:
                row, problem = _row(data, loaded.model.info.inputs)
                if row is not None:
                    rows.setdefault(loaded.model.info.name, []).append((i, row))
            if problem is not None:
                out[i] = {**UNDECIDED, "cloud_reason": problem}
        for name, batch in rows.items():
            loaded = self._models[name]
            with loaded.lock:
                probs = loaded.model.predict(np.asarray([r for _, r in batch], dtype=np.float32))
            info = loaded.model.info
            for (i, _), ps in zip(batch, probs.tolist(), strict=True):
                k = max(range(len(ps)), key=ps.__getitem__)
                edge = records[i].get("label")
                out[i] = {
                    "cloud_label": info.labels[k][:MAX_LABEL],
                    "cloud_confidence": round(ps[k], 4),
                    "cloud_probabilities": {
                        label: round(p, 4) for label, p in zip(info.labels, ps, strict=True)
                    },
                    "cloud_model_version": info.version[:MAX_VERSION],
                    "agree": edge == info.labels[k],
                    "decided_at": now,
                    "cloud_reason": None,
                }
        return out

    def healthy(self, name: str) -> str | None:
        """The first label of the cloud model `name`: the class that raises no alert."""
        loaded = self._models.get(name)
        return loaded.model.info.labels[0] if loaded is not None else None


def _row(data: dict[str, Any], names: tuple[str, ...]) -> tuple[list[float] | None, str | None]:
    """The input vector in the model's order, or why there is none."""
    inputs = data.get("inputs")
    if not isinstance(inputs, dict):
        return None, "the record has no 'inputs' object"
    missing = [n for n in names if n not in inputs]
    if missing:
        return None, f"inputs missing: {', '.join(missing)}"
    bad = next((n for n in names if not is_number(inputs[n])), None)
    if bad is not None:
        return None, f"input '{bad}': expected a number, got {inputs[bad]!r}"
    # Models take float32: beyond its range a value would turn into infinity.
    huge = next((n for n in names if abs(inputs[n]) > FLOAT32_MAX), None)
    if huge is not None:
        return None, f"input '{huge}': {inputs[huge]!r} is out of the model's float32 range"
    return [float(inputs[n]) for n in names], None
