"""Choosing the early-exit threshold from numbers: local-exit rate against accuracy.

For each candidate threshold on the edge model's normalized entropy, a window is decided
at the edge when its entropy is at or below the threshold, and by the cloud model
otherwise. `sweep` reports, per threshold, the share decided locally, the edge's accuracy
on what it kept, and the joint accuracy (edge where it exits, cloud elsewhere); `choose`
takes the threshold that keeps the most at the edge while the joint accuracy stays within
`tolerance` of the best the pair reaches (or of the cloud alone, when that is better: the
edge is confident where it is right, so the pair often beats either model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fogline.model import normalized_entropy

THRESHOLDS = tuple(round(i * 0.05, 2) for i in range(21))


@dataclass(frozen=True, slots=True)
class Point:
    threshold: float
    local: float  # share of windows decided at the edge
    edge_local_accuracy: float  # accuracy of the edge on the windows it decided
    joint_accuracy: float  # edge where it exits, cloud (or edge without one) elsewhere


@dataclass(frozen=True, slots=True)
class Sweep:
    points: list[Point]
    edge_accuracy: float
    cloud_accuracy: float | None
    n: int


def accuracy(probs: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
    return float((probs.argmax(axis=1) == labels).mean()) if len(labels) else float("nan")


def confusion(
    probs: NDArray[np.float32], labels: NDArray[np.int64], classes: int
) -> list[list[int]]:
    """Rows: the true class; columns: the predicted one."""
    out = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(out, (labels, probs.argmax(axis=1)), 1)
    return [[int(v) for v in row] for row in out]


def sweep(
    edge: NDArray[np.float32],
    labels: NDArray[np.int64],
    cloud: NDArray[np.float32] | None = None,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> Sweep:
    entropy = normalized_entropy(edge)
    edge_right = edge.argmax(axis=1) == labels
    cloud_right = cloud.argmax(axis=1) == labels if cloud is not None else edge_right
    points = []
    for t in thresholds:
        local = entropy <= t
        kept = int(local.sum())
        points.append(
            Point(
                t,
                float(local.mean()) if len(labels) else float("nan"),
                float(edge_right[local].mean()) if kept else float("nan"),
                float(np.where(local, edge_right, cloud_right).mean()) if len(labels) else 0.0,
            )
        )
    return Sweep(
        points,
        float(edge_right.mean()),
        None if cloud is None else float(cloud_right.mean()),
        len(labels),
    )


TOLERANCE = 0.002


def choose(result: Sweep, tolerance: float = TOLERANCE) -> Point:
    """The threshold with the most local exits whose joint accuracy is within `tolerance`
    of the best joint accuracy of the sweep, or of the cloud alone if that is higher."""
    target = max(p.joint_accuracy for p in result.points)
    if result.cloud_accuracy is not None:
        target = max(target, result.cloud_accuracy)
    good = [p for p in result.points if p.joint_accuracy >= target - tolerance]
    return max(good, key=lambda p: (p.local, p.joint_accuracy))


def table(result: Sweep, chosen: Point | None = None) -> str:
    """The sweep as a fixed-width table, the chosen threshold marked."""
    lines = [f"{'threshold':>9}  {'local':>6}  {'edge acc (local)':>16}  {'joint acc':>9}"]
    for p in result.points:
        mark = "  <- chosen" if chosen is not None and p.threshold == chosen.threshold else ""
        kept = "-" if math.isnan(p.edge_local_accuracy) else f"{p.edge_local_accuracy:.2%}"
        lines.append(
            f"{p.threshold:9.2f}  {p.local:6.1%}  {kept:>16}  {p.joint_accuracy:9.2%}{mark}"
        )
    return "\n".join(lines)
