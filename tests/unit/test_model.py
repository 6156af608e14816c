"""fogline.model: the shipped models load with LiteRT alone; quantization, batching, metadata."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from fogline.model import Model, ModelError, normalized_entropy, read_metadata, with_metadata

MODELS = Path(__file__).resolve().parents[2] / "models"
NAMES = ("factory-vibration", "farm-irrigation")


def rows_for(model: Model, n: int, seed: int = 0) -> np.ndarray:
    """Raw feature rows around the training distribution the model carries."""
    rng = np.random.default_rng(seed)
    mean, std = model.mean, model.std
    return (mean + std * rng.normal(0, 1.5, (n, len(mean)))).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_models_load_and_describe_themselves(name):
    edge = Model.from_file(MODELS / f"{name}.tflite")
    cloud = Model.from_file(MODELS / f"{name}-cloud.tflite")
    for model in (edge, cloud):
        model.self_test()
        assert model.info.name == name
        assert model.info.labels[0] == "normal"
        assert len(model.info.inputs) == len(set(model.info.inputs)) > 3
    assert edge.info.quantized == "int8 inside"
    assert cloud.info.quantized == "float"
    assert edge.info.inputs == cloud.info.inputs
    assert edge.info.escalate_above is not None
    assert 0 < edge.info.escalate_above < 1
    assert cloud.info.size > edge.info.size  # the cloud model is the larger one


@pytest.mark.parametrize("name", NAMES)
def test_batched_and_one_by_one_inference_agree(name):
    model = Model.from_file(MODELS / f"{name}.tflite")
    rows = rows_for(model, 64)
    batched = model.predict(rows)
    single = np.concatenate([model.predict(rows[i : i + 1]) for i in range(len(rows))])
    again = model.predict(rows[:7])  # another batch size after a resize
    assert batched.shape == (64, len(model.info.labels))
    np.testing.assert_allclose(batched, single, atol=1e-6)
    np.testing.assert_allclose(again, batched[:7], atol=1e-6)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-5)


def test_int8_io_model_quantizes_with_its_own_parameters():
    model = Model.from_file(MODELS / "factory-vibration-int8io.tflite")
    inside = Model.from_file(MODELS / "factory-vibration.tflite")
    assert model.info.quantized == "int8 I/O"
    scale, zero = model._in_q
    x = model.standardize(rows_for(model, 200, seed=1))
    q = model.quantize(x)
    assert q.dtype == np.int8
    back = (q.astype(np.float32) - zero) * scale
    inside_range = (x >= (-128 - zero) * scale) & (x <= (127 - zero) * scale)
    # Inside the representable range the round trip is off by at most half a step.
    assert np.all(np.abs(back - x)[inside_range] <= scale / 2 + 1e-6)
    assert inside_range.mean() > 0.9
    out_scale, out_zero = model._out_q
    levels = np.arange(-128, 128, dtype=np.int8)[None, :]
    np.testing.assert_allclose(
        model.dequantize(levels), (levels.astype(np.float32) - out_zero) * out_scale
    )
    # Same weights as the float-I/O model: the same answers, to the int8 output step.
    rows = rows_for(model, 200, seed=2)
    p_io, p_inside = model.predict(rows), inside.predict(rows)
    assert np.abs(p_io - p_inside).max() <= 2 * out_scale + 1e-6
    assert (p_io.argmax(axis=1) == p_inside.argmax(axis=1)).mean() > 0.97


def test_float_io_model_has_nothing_to_quantize():
    model = Model.from_file(MODELS / "factory-vibration.tflite")
    with pytest.raises(ModelError, match="takes float input"):
        model.quantize(np.zeros((1, 7), np.float32))


def test_metadata_round_trip_and_refusals():
    data = (MODELS / "factory-vibration.tflite").read_bytes()
    meta = read_metadata(data)
    assert "fogline" in meta
    renamed = with_metadata(data, {**_meta(data), "version": "7"})
    assert Model(renamed).info.version == "7"
    assert Model(renamed).info.sha256 != Model(data).info.sha256
    with pytest.raises(ModelError, match=r"not a \.tflite file"):
        Model(b"\x00" * 64)
    with pytest.raises(ModelError, match=r"runtime refused|not a \.tflite"):
        Model(data[: len(data) // 2])
    with pytest.raises(ModelError, match=f"expected {len(_meta(data)['inputs'])} means and stds"):
        Model(with_metadata(data, {**_meta(data), "mean": [0.0]}))
    with pytest.raises(ModelError, match=r"expected \[batch, 2\] for the 2 labels"):
        Model(with_metadata(data, {**_meta(data), "labels": ["a", "b"]}))
    with pytest.raises(ModelError, match="'labels' is missing"):
        Model(with_metadata(data, {k: v for k, v in _meta(data).items() if k != "labels"}))
    for bad, what in (
        ({"inputs": 5}, "'inputs': expected a list of names"),
        ({"mean": ["a"] * len(_meta(data)["inputs"])}, "'mean': expected a list of numbers"),
        ({"escalate_above": []}, "'escalate_above': expected a number"),
    ):
        with pytest.raises(ModelError, match=what):
            Model(with_metadata(data, {**_meta(data), **bad}))
    with pytest.raises(ModelError, match="cannot read the model"):
        Model.from_file(MODELS / "no-such-model.tflite")


def test_normalized_entropy_spans_zero_to_one():
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]], np.float32)
    h = normalized_entropy(probs)
    assert h[0] == pytest.approx(0.0, abs=1e-6)
    assert h[1] == pytest.approx(1.0, abs=1e-6)
    assert h[2] == pytest.approx(math.log(2) / math.log(3), abs=1e-6)


def _meta(data: bytes) -> dict:
    return orjson.loads(read_metadata(data)["fogline"])
