"""The shipped models, run by LiteRT alone on windows generated afresh, do what their cards say."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.dataset import TASKS, dataset
from fogline.calibration import accuracy, sweep
from fogline.model import Model

MODELS = Path(__file__).resolve().parents[2] / "models"
TOLERANCE = 0.02  # between the card's three test seeds and one fresh seed (faults differ per seed)
FRESH_SEED = 4242  # neither a training, validation nor test seed of models/train.py


@pytest.mark.parametrize("demo", ["factory", "farm"])
def test_accuracy_on_fresh_data_matches_the_card(demo):
    task = TASKS[demo]
    edge = Model.from_file(MODELS / f"{task.name}.tflite")
    cloud = Model.from_file(MODELS / f"{task.name}-cloud.tflite")
    assert edge.info.inputs == task.inputs
    assert edge.info.labels == task.labels
    card = edge.info.extra["evaluation"]["test"]
    rows, labels = dataset(task, FRESH_SEED)
    assert len(rows) > 5000
    assert set(labels.tolist()) == set(range(len(task.labels)))  # every class is there
    edge_probs, cloud_probs = edge.predict(rows), cloud.predict(rows)
    at = sweep(edge_probs, labels, cloud_probs, (edge.info.escalate_above,)).points[0]
    measured = {
        "edge_int8": accuracy(edge_probs, labels),
        "cloud": accuracy(cloud_probs, labels),
        "joint": at.joint_accuracy,
    }
    for name, value in measured.items():
        assert value == pytest.approx(card[name], abs=TOLERANCE), name
    # The promise of early exit: most windows decided at the edge, little accuracy given up.
    assert at.local >= 0.75
    assert at.joint_accuracy >= measured["cloud"] - 0.01
    text = (MODELS / f"{task.name}.md").read_text()
    assert f"| edge, int8 | {card['edge_int8']:.2%} |" in text
    assert f"escalate_above: {edge.info.escalate_above}" in text
