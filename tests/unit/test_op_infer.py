"""`infer`: one invoke per batch, edge decisions on the main stream, escalations on the side."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pytest
from oplab import make_op, rec

from fogline.model import Model, ModelError, read_metadata, with_metadata
from gateway.clock import FakeClock
from gateway.simulate import START, Simulation
from gateway.spec import PipelineError, load_pipeline, parse_pipeline

MODELS = Path(__file__).resolve().parents[2] / "models"
FACTORY = MODELS / "factory-vibration.tflite"
FARM = MODELS / "farm-irrigation.tflite"


def windows(model: Model, n: int, seed: int = 0, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    mean, std = model.mean, model.std
    rows = mean + std * rng.normal(0, spread, (n, len(mean)))
    out = []
    for i, row in enumerate(rows):
        fields = dict(zip(model.info.inputs, row.tolist(), strict=True))
        out.append(rec(f"m-{i:03d}", 10.0, window_start=0.0, window_end=10.0, **fields))
    return rows, out


def test_every_record_is_classified_as_the_model_says_in_one_batch():
    run = make_op("infer", {"model": str(FACTORY), "escalate_above": 1.0})
    model = run.op.model
    rows, records = windows(model, 50)
    out = run.feed(records)
    assert len(out) == 50
    assert not run.side
    expected = model.predict(rows.astype(np.float32))
    labels = model.info.labels
    for record, probs in zip(out, expected, strict=True):
        f = record.fields
        assert f["label"] == labels[int(probs.argmax())]
        assert f["confidence"] == pytest.approx(float(probs.max()), abs=1e-4)
        assert sum(f[f"p_{label}"] for label in labels) == pytest.approx(1.0, abs=1e-3)
        assert 0.0 <= f["entropy"] <= 1.0
        assert f["exit"] == "edge"
        assert f["model"] == "factory-vibration"
        assert f["model_version"] == model.info.version
        assert "vibration_1x_rel" in f  # the window's own fields stay
    assert run.op.decided == {"edge": 50, "budget": 0, "escalated": 0}


def test_uncertain_results_escalate_with_their_inputs_within_the_budget():
    clock = FakeClock(1000.0)
    run = make_op(
        "infer", {"model": str(FACTORY), "escalate_above": 0.0, "escalation_budget": 6}, clock
    )
    rows, records = windows(run.op.model, 10)
    out = run.feed(records)
    escalated = [r for stream, r in run.side if stream == "escalate"]
    assert len(escalated) == 6  # the budget: 6 a minute
    assert [r.fields["exit"] for r in out] == ["budget"] * 4
    first = escalated[0].fields
    assert first["exit"] == "cloud"
    assert first["machine"] == "m-000"
    assert first["window_start"] == 0.0
    assert first["window_end"] == 10.0
    assert list(first["inputs"]) == list(run.op.model.info.inputs)
    assert first["inputs"]["vibration_1x_rel"] == pytest.approx(rows[0][0])
    assert set(first["probabilities"]) == set(run.op.model.info.labels)
    assert "vibration_hf_rel" not in first  # the inputs, not the whole window
    # Ten seconds later the budget has refilled by one.
    clock.t += 10.0
    run.feed(windows(run.op.model, 3, seed=1)[1])
    assert len([1 for stream, _ in run.side if stream == "escalate"]) == 7
    assert run.op.decided == {"edge": 0, "budget": 6, "escalated": 7}


def test_the_models_own_threshold_is_the_default():
    run = make_op("infer", {"model": str(FACTORY)})
    assert run.op.threshold == run.op.model.info.escalate_above


def test_missing_or_wrong_inputs_are_rejected_and_the_rest_goes_on():
    run = make_op("infer", {"model": str(FACTORY)})
    _, records = windows(run.op.model, 3)
    del records[0].fields["vibration_cv"]
    records[1].fields["vibration_hf_rel"] = "high"
    out = run.feed(records)
    assert len(out) == 1
    assert run.reasons == ["missing_input", "wrong_type"]
    assert run.rejects[0][2] == "no field vibration_cv"
    assert run.rejects[1][2] == "field 'vibration_hf_rel': expected a number, got 'high'"
    _, records = windows(run.op.model, 2)
    records[0].fields["vibration_cv"] = 1e39  # valid JSON, but no float32
    assert len(run.feed(records)) == 1
    assert (
        run.rejects[2][2] == "field 'vibration_cv': 1e+39 is beyond float32, the model's input type"
    )


def test_a_window_of_too_few_readings_is_not_classified():
    run = make_op("infer", {"model": str(FACTORY), "escalate_above": 1.0, "min_readings": 5})
    _, records = windows(run.op.model, 3)
    records[0].fields["count"] = 1  # a machine's first window: one reading
    records[1].fields["count"] = 10
    out = run.feed(records)  # the third has no count at all
    assert [r.key for r in out] == [records[1].key]
    assert run.rejects[0][1:] == (
        "too_few_readings",
        "the window holds 1 reading(s); min_readings is 5",
    )
    assert run.rejects[1][1:] == (
        "too_few_readings",
        "the window holds None reading(s); min_readings is 5",
    )


def test_swap_takes_a_compatible_model_and_refuses_others():
    run = make_op("infer", {"model": str(FACTORY)})
    data = FACTORY.read_bytes()
    meta = orjson.loads(read_metadata(data)["fogline"])
    newer = Model(with_metadata(data, {**meta, "version": "99", "escalate_above": 0.9}))
    run.op.swap(newer)
    assert run.op.model is newer
    assert run.op.threshold == 0.9
    assert run.feed(windows(newer, 2)[1])[0].fields["model_version"] == "99"
    with pytest.raises(ModelError, match=r"labels .* differ from the running model's"):
        run.op.swap(Model.from_file(FARM))
    renamed = list(meta["inputs"])
    renamed[0] = "vibration_median"
    with pytest.raises(ModelError, match=r"inputs \['vibration_median'\] are not fields"):
        run.op.swap(Model(with_metadata(data, {**meta, "inputs": renamed})))
    assert run.op.model is newer  # refused models change nothing


PIPELINE = """\
name: t
key: [machine]
sources:
  - mqtt: {{topics: ["f/{{machine}}"]}}
steps:
  - features:
      size: 10s
      aggregates:
        vibration: [mean, std]
  - infer:
      model: {model}
outputs:
  - uplink: {{from: infer, kind: digest}}
  - uplink: {{from: infer.escalate, kind: escalation}}
"""


def test_pipeline_check_reads_the_models_inputs_and_names_the_missing_ones(tmp_path):
    with pytest.raises(PipelineError) as err:
        parse_pipeline(PIPELINE.format(model=FACTORY), str(tmp_path / "p.yaml"))
    text = str(err.value)
    assert "steps[1].infer.model" in text
    assert "'vibration_crest_rel'" in text
    assert "which no step produces" in text


def test_a_model_path_is_relative_to_the_pipeline_file(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"not a model")
    with pytest.raises(PipelineError) as err:
        parse_pipeline(PIPELINE.format(model="m.tflite"), str(tmp_path / "p.yaml"))
    assert f"expected a Fogline .tflite model, got {tmp_path / 'm.tflite'}" in str(err.value)
    with pytest.raises(PipelineError) as err:
        parse_pipeline(PIPELINE.format(model="gone.tflite"), str(tmp_path / "p.yaml"))
    assert f"expected a readable model file, got {tmp_path / 'gone.tflite'}" in str(err.value)


def test_a_short_first_window_is_counted_and_told_once_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every machine's first window holds only the readings since it started: the factory
    pipeline's diagnosis leaves those out (min_readings 4). At a gateway's start that is
    every machine, so it is counted and said once, at INFO; a warning is for trouble."""
    caplog.set_level(logging.DEBUG, logger="fogline.gateway.engine")
    sim = Simulation(load_pipeline(Path(__file__).parents[2] / "pipelines" / "factory.yaml"))
    reading = {
        "vibration": 1.4, "vibration_peak": 4.0, "vibration_hf": 0.3, "vibration_1x": 1.1,
        "temperature": 55.0, "rpm": 1480,
    }  # fmt: skip
    for i, machine in enumerate(("m-01", "m-02", "m-03")):
        body = orjson.dumps({**reading, "ts": START + 1 + i})
        sim.send(f"factory/line-1/{machine}/telemetry", body, START + 1 + i)
    sim.stop(START + 30)
    # Each reading is in two of the model's windows (10 s, every 5 s): two short ones each.
    assert sim.rejects() == {("diagnosis", "too_few_readings"): 6}
    told = [r for r in caplog.records if r.name == "fogline.gateway.engine"]
    assert [r.levelno for r in told] == [logging.INFO] + [logging.DEBUG] * 5
    assert "too_few_readings: normal while a device starts" in told[0].getMessage()
