"""Labelled feature windows for the demo models, from the demo fleets through the real pipeline.

A model must see what the gateway will feed it, so the training data is not computed on
the side: a fleet with scheduled faults runs in simulated time through the demo pipeline
(`devices.evaluate.simulate`), the pipeline's `features` step is tapped, and each window it
emits is labelled with the fault that covered most of it on its device (`normal` when
none did; sensor faults count as `normal`: the class is about the machine or the plot, and
a model that has never seen a stuck sensor would call it anything). A fault counts from
when it shows (its effect exceeds twice the device's normal spread, `devices.evaluate`),
as the evaluation matrix judges it: a window of a fault still too small to see is
`normal`, not a label the model can only learn as noise.

Each seed runs at a site of its own (`seed:N`, N = `SITE_SEED_BASE` + seed, a range the
evaluation never draws from) and at half, once or twice the demo's sampling rate, so a
model learns what a fault looks like against the device's own normal, not one site's
levels.

    rows, labels = dataset(TASKS["factory"], seed=11)   # (n, inputs) float32, (n,) int
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from devices.clock import SimClock
from devices.evaluate import DEMOS, START, Demo, Interval, Run, random_faults, simulate
from devices.faults import SENSOR_FAULTS
from devices.sites import Site, site
from gateway.record import Record
from gateway.spec import Pipeline, load_pipeline

LABEL_COLUMN = "label"
SITE_SEED_BASE = 3000  # training and card sites: seed:3000+seed (the matrix draws 1000+seed)
RATES = (1.0, 0.5, 2.0)  # x the demo's sampling rate, by seed


def conditions(seed: int) -> tuple[Site, float]:
    """The site and the rate factor a dataset seed runs at."""
    return site(f"seed:{SITE_SEED_BASE + seed}"), RATES[seed % len(RATES)]


@dataclass(frozen=True)
class Task:
    """One demo model: where its inputs come from and what it tells apart."""

    name: str  # the model's name, e.g. `factory-vibration`
    demo: Demo
    step: str  # the pipeline step whose windows are the model's rows
    inputs: tuple[str, ...]
    classes: dict[str, str]  # label -> the fault kind it stands for ("" for normal)
    hours: float
    devices: int = 48
    per_kind: int = 8  # faults of each class kind (and of each sensor fault) per run
    length: tuple[float, float] = (300.0, 900.0)
    strength: tuple[float, float] = (0.1, 1.0)  # incipient to full-grown

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.classes)


TASKS: dict[str, Task] = {
    "factory": Task(
        "factory-vibration",
        DEMOS["factory"],
        "model_inputs",
        (
            "vibration_1x_rel",
            "vibration_hf_rel",
            "vibration_hf_max_rel",
            "vibration_share_rel",
            "vibration_crest_rel",
            "vibration_cv",
        ),
        {"normal": "", "imbalance": "imbalance", "bearing": "bearing"},
        hours=1.0,
    ),
    "farm": Task(
        "farm-irrigation",
        DEMOS["farm"],
        "features_normal",
        (
            "moisture_mean_dev",
            "moisture_slope",
            "moisture_range",
            "flow_mean",
            "flow_max",
            "pressure_mean_dev",
            "pressure_slope",
            "valve_mean",
        ),
        {"normal": "", "leak": "leak", "dry_soil": "dryout"},
        hours=6.0,
        length=(900.0, 2400.0),
    ),
}


def without_models(pipeline: Pipeline) -> Pipeline:
    """The pipeline without its `infer` steps and what reads them: the rows a model is fed,
    computed without the model (which may not exist yet)."""
    dropped: set[str] = set()
    for step in pipeline.steps:
        if step.op == "infer" or step.from_.split(".")[0] in dropped:
            dropped.add(step.id)
    return replace(pipeline, steps=[s for s in pipeline.steps if s.id not in dropped])


def label_windows(
    records: Sequence[Record], intervals: Sequence[Interval], classes: dict[str, str]
) -> NDArray[np.int64]:
    """Per window, the index of the class whose fault covered most of it, from when it showed
    to when the device was itself again (0: normal)."""
    index = {kind: i for i, kind in enumerate(classes.values()) if kind}
    by_key: dict[tuple[str, ...], list[Interval]] = {}
    for interval in intervals:
        if interval.kind in index:
            by_key.setdefault(interval.key, []).append(interval)
    out = np.zeros(len(records), dtype=np.int64)
    for n, record in enumerate(records):
        start, end = record.fields["window_start"], record.fields["window_end"]
        best = 0.5 * (end - start)  # a fault must cover at least half the window
        for interval in by_key.get(record.key, ()):
            covered = min(end, interval.over) - max(start, interval.shows)
            if covered >= best:
                best, out[n] = covered, index[interval.kind]
    return out


def task_run(
    task: Task,
    seed: int,
    *,
    hours: float | None = None,
    devices: int | None = None,
    models: bool = False,
    taps: Sequence[str] = (),
) -> Run:
    """One simulated run of the task's fleet, faults of its classes (at random strengths)
    and sensor faults scheduled; `models`: with the pipeline's `infer` steps, or without."""
    seconds = 3600.0 * (hours or task.hours)
    count = devices or task.devices
    demo = task.demo
    pipeline = load_pipeline(demo.pipeline)
    if not models:
        pipeline = without_models(pipeline)
        # Scoring needs the model's own alert rules, which are cut: this run only taps.
        demo = replace(demo, detectors={})
    where, rate = conditions(seed)
    fleet = demo.fleet(count, seed, SimClock(START), (), where)
    kinds = sorted({k for k in task.classes.values() if k} | {f.name for f in SENSOR_FAULTS})
    per_kind = min(task.per_kind, count // len(kinds))
    faults = random_faults(
        kinds,
        fleet.devices,
        seed,
        duration=seconds,
        per_kind=per_kind,
        warmup=min(demo.warmup, seconds / 4),
        length=task.length,
        tail=min(demo.tail, seconds / 8),
        strength=task.strength,
    )
    return simulate(
        demo,
        seed,
        faults,
        seconds=seconds,
        devices=count,
        pipeline=pipeline,
        site=where,
        rate=demo.rate * rate,
        taps=taps,
    )


def dataset(
    task: Task, seed: int, *, hours: float | None = None, devices: int | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(rows, labels) of one simulated run; windows missing an input are left out."""
    run = task_run(task, seed, hours=hours, devices=devices, taps=[task.step])
    windows = [r for r in run.tapped[task.step] if all(f in r.fields for f in task.inputs)]
    rows = np.array([[r.fields[f] for f in task.inputs] for r in windows], dtype=np.float32)
    return rows.reshape(-1, len(task.inputs)), label_windows(windows, run.intervals, task.classes)


def write_csv(path: Path, task: Task, rows: NDArray[np.float32], labels: NDArray[np.int64]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*task.inputs, LABEL_COLUMN])
        names = task.labels
        for row, label in zip(rows.tolist(), labels.tolist(), strict=True):
            out.writerow([*(f"{v:.6g}" for v in row), names[label]])


def read_csv(
    path: Path, inputs: Sequence[str], labels: Sequence[str]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Rows in the order of `inputs` (columns may be in any order) and label indices."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in (*inputs, LABEL_COLUMN) if c not in header]
        if missing:
            raise ValueError(
                f"{path}: no column {', '.join(missing)} (columns: {', '.join(header)})"
            )
        index = {name: i for i, name in enumerate(labels)}
        rows, out = [], []
        for line, row in enumerate(reader, start=2):
            if row[LABEL_COLUMN] not in index:
                raise ValueError(
                    f"{path}:{line}: label {row[LABEL_COLUMN]!r} is not one of {', '.join(labels)}"
                )
            try:
                rows.append([float(row[c]) for c in inputs])
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from exc
            out.append(index[row[LABEL_COLUMN]])
    return np.array(rows, dtype=np.float32).reshape(-1, len(inputs)), np.array(out, dtype=np.int64)
