"""The evaluation matrix: detection per fault type over conditions the pipelines were not tuned on.

A condition changes one thing against `nominal` (the reference site, faults at full
strength, the demo's sampling rate), or, for `sites`, everything at once: each seed draws a
site of its own (`seed:N` with N = 1000 + seed; no such site was used for tuning), faults at
50-100 % strength, up to two per device (overlapping or not), 5 % of readings late or
twice. Conditions marked `judged` are held to the targets; `faint` (30 %) is reported.

Per fault kind: recall and precision with 95 % Wilson intervals, and time to detect
p50/p95 in windows, counted from when the fault showed (`devices.evaluate`), its p95 with
a 95 % bootstrap interval. Per model
class: per-window precision and recall of the edge model's answers (windows it decided;
uncertain ones escalate to the cloud) against the truth after the fault showed, beside
the majority-class baseline (always "normal").

Intervals treat faults and raises as independent draws (the TTD bootstrap resamples the
times to detect with replacement, 1000 times); seeds are not resampled, so the intervals
say how sure the pooled figure is, not how much sites differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from devices.dataset import TASKS, label_windows
from devices.evaluate import Demo, Run, Score, combine, evaluate
from devices.sites import REFERENCE, Site, overridden, site
from gateway.spec import Pipeline

GRACE_WINDOWS = 2.0
TARGETS = {"recall": 0.95, "precision": 0.90, "ttd_windows": 2.0, "class_precision": 0.85}
SITE_SEED_BASE = 1000
DRAWS = 1000


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    about: str
    strength: tuple[float, float] = (1.0, 1.0)
    rate: float = 1.0  # x the demo's sampling rate
    drawn: bool = False  # a site drawn from each seed, else the reference site
    per_device: int = 1
    disorder: float = 0.0
    judged: bool = True
    fixed: Site | None = None  # one site for every seed, its own disorder (`on_site`)

    def site(self, seed: int) -> Site:
        if self.fixed is not None:
            return self.fixed
        chosen = site(f"seed:{SITE_SEED_BASE + seed}") if self.drawn else REFERENCE
        return dataclasses.replace(chosen, disorder=self.disorder)


CONDITIONS = (
    Condition("nominal", "reference site, full-strength faults, the demo's rate"),
    Condition("weak", "faults at 50 % strength", strength=(0.5, 0.5)),
    Condition("faint", "faults at 30 % strength (reported)", strength=(0.3, 0.3), judged=False),
    Condition("half-rate", "half the sampling rate", rate=0.5),
    Condition("double-rate", "twice the sampling rate", rate=2.0),
    Condition(
        "sites",
        "a site drawn per seed; faults at 50-100 %, up to 2 a device; 5 % late or twice",
        strength=(0.5, 1.0),
        drawn=True,
        per_device=2,
        disorder=0.05,
    ),
)


def on_site(spec: str) -> Condition:
    """A condition on a site described from outside (`devices.sites.site`, e.g.
    `field,noise=1.4,pressure=-0.4`): every seed runs there, faults at 50-100 %, up to two a
    device, as in `sites`; 5 % of readings late or twice unless the spec sets `disorder`."""
    chosen = site(spec)
    if "disorder" not in overridden(spec):
        chosen = dataclasses.replace(chosen, disorder=0.05)
    return Condition(
        f"site {spec}",
        f"the site `{spec}`; faults at 50-100 %, up to 2 a device",
        strength=(0.5, 1.0),
        per_device=2,
        fixed=chosen,
    )


def rate_interval(hits: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of hits / n. Not a bootstrap: resampling 5 detections
    out of 5 gives 5 out of 5 every time, an interval of [1, 1] that claims a certainty
    five faults cannot give (Wilson: [0.57, 1])."""
    if n == 0:
        return (math.nan, math.nan)
    z = 1.959964
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile_interval(
    values: Sequence[float], q: float, rng: np.random.Generator
) -> tuple[float, float]:
    if not values:
        return (math.nan, math.nan)
    data = np.asarray(values)
    picks = rng.choice(data, (DRAWS, data.size), replace=True)
    stats = np.percentile(picks, q, axis=1)
    return (float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5)))


@dataclass
class KindResult:
    """One fault kind under one condition, pooled over seeds."""

    score: Score
    window: float
    recall_ci: tuple[float, float]
    precision_ci: tuple[float, float]
    p95_ci: tuple[float, float]  # in windows

    @property
    def p50(self) -> float:
        return self.score.ttd_percentile(50) / self.window

    @property
    def p95(self) -> float:
        return self.score.ttd_percentile(95) / self.window

    def misses(self) -> list[str]:
        """The targets this result misses (empty: all met, or nothing to judge)."""
        s, out = self.score, []
        if s.faults and s.recall < TARGETS["recall"]:
            out.append("recall")
        if s.raises and s.precision < TARGETS["precision"]:
            out.append("precision")
        if s.ttd and self.p95 > TARGETS["ttd_windows"]:
            out.append("ttd")
        return out


@dataclass
class ClassResult:
    """Per-window answers of the edge model for one class, pooled over seeds."""

    label: str
    truth: int = 0  # windows whose truth is this class
    said: int = 0  # windows the model put in this class
    right: int = 0

    @property
    def precision(self) -> float:
        return self.right / self.said if self.said else math.nan

    @property
    def recall(self) -> float:
        return self.right / self.truth if self.truth else math.nan


@dataclass
class Cell:
    """One demo under one condition."""

    condition: Condition
    runs: list[Run]
    kinds: dict[str, KindResult] = field(default_factory=dict)
    classes: dict[str, ClassResult] = field(default_factory=dict)
    decided: int = 0  # windows the edge model decided (the rest escalated or rejected)

    @property
    def majority(self) -> str:
        return max(self.classes.values(), key=lambda c: c.truth).label

    def misses(self) -> int:
        if not self.condition.judged:
            return 0
        kinds = sum(bool(k.misses()) for k in self.kinds.values())
        classes = sum(
            c.said > 0 and c.precision < TARGETS["class_precision"] for c in self.classes.values()
        )
        return kinds + classes


def model_windows(run: Run, step: str = "diagnosis") -> dict[str, ClassResult]:
    """Per class, the edge model's answers on the run's `step` stream against the truth."""
    task = TASKS[run.demo.name]
    records = [r for r in run.tapped.get(step, []) if "label" in r.fields]
    truth = label_windows(records, run.intervals, task.classes)
    out = {label: ClassResult(label) for label in task.labels}
    for record, t in zip(records, truth.tolist(), strict=True):
        said, real = str(record.fields["label"]), task.labels[t]
        out[real].truth += 1
        if said in out:
            out[said].said += 1
            out[said].right += said == real
    return out


def run_cell(
    demo: Demo,
    condition: Condition,
    seeds: Sequence[int],
    *,
    hours: float | None = None,
    devices: int | None = None,
    pipeline: Pipeline | None = None,
) -> Cell:
    runs = [
        evaluate(
            demo,
            seed,
            hours=hours,
            devices=devices,
            pipeline=pipeline,
            site=condition.site(seed),
            rate=demo.rate * condition.rate,
            strength=condition.strength,
            per_device=condition.per_device,
            taps=["diagnosis"],
        )
        for seed in seeds
    ]
    cell = Cell(condition, runs)
    rng = np.random.default_rng(0xB007)
    window = runs[0].window
    for kind, s in combine(r.score(GRACE_WINDOWS) for r in runs).items():
        ttd = [x / window for x in s.ttd]
        cell.kinds[kind] = KindResult(
            s,
            window,
            rate_interval(s.detected, s.faults),
            rate_interval(s.matched, s.raises),
            percentile_interval(ttd, 95, rng),
        )
    for run in runs:
        for label, c in model_windows(run).items():
            total = cell.classes.setdefault(label, ClassResult(label))
            total.truth += c.truth
            total.said += c.said
            total.right += c.right
    cell.decided = sum(c.said for c in cell.classes.values())
    return cell
