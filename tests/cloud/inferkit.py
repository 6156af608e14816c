"""Cloud models whose answers a test can choose, escalation records as the `infer` step
writes them, and a running cloud on the test's broker and database.

The shipped models are placeholders until trained ones replace them: tests read only
their names, inputs and labels. `tiny_model` builds a real .tflite (one fully connected
layer and a softmax) whose label `k` wins exactly when its `k`-th input is the largest of
the first ones, so a test decides what the cloud will say.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils
from cloudkit import NOW, Database
from support import Broker

from cloud.app import Cloud, CloudOptions
from fogline.model import METADATA_NAME, read_metadata, with_metadata
from fogline.urls import parse_broker_url

MODELS = Path(__file__).resolve().parents[2] / "models"
FACTORY = MODELS / "factory-vibration.tflite"
FACTORY_META = orjson.loads(read_metadata(FACTORY.read_bytes())[METADATA_NAME])
FACTORY_INPUTS: list[str] = FACTORY_META["inputs"]
FACTORY_LABELS: list[str] = FACTORY_META["labels"]
# The cloud model reads three of the edge's inputs, in its own order.
CLOUD_INPUTS = ["vibration_hf_max_rel", "vibration_1x_rel", "vibration_cv"]


def _tensor(name: str | bytes, shape: list[int], buffer: int) -> Any:
    tensor = schema.TensorT()
    tensor.name = name
    tensor.shape = np.array([1 if d < 0 else d for d in shape], np.int32)
    tensor.shapeSignature = np.array(shape, np.int32)
    tensor.type = schema.TensorType.FLOAT32
    tensor.buffer = buffer
    return tensor


def _buffer(values: np.ndarray | None = None) -> Any:
    buffer = schema.BufferT()
    if values is not None:
        buffer.data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
    return buffer


def _operator(code: int, inputs: list[int], output: int, kind: int, options: Any) -> Any:
    op = schema.OperatorT()
    op.opcodeIndex = code
    op.inputs = np.array(inputs, np.int32)
    op.outputs = np.array([output], np.int32)
    op.builtinOptionsType = kind
    op.builtinOptions = options
    return op


def tiny_model(
    inputs: list[str] | None = None,
    labels: list[str] | None = None,
    *,
    name: str = "factory-vibration",
    version: str = "7",
    kind: str = "cloud",
    input_name: str | bytes = "x",
) -> bytes:
    """A float .tflite: softmax(10 * x[:labels]), x standardized with mean 0, std 1."""
    inputs = inputs or CLOUD_INPUTS
    labels = labels or FACTORY_LABELS
    n, c = len(inputs), len(labels)
    weights = np.zeros((c, n), np.float32)
    for k in range(min(c, n)):
        weights[k, k] = 10.0
    codes = []
    for builtin in (schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.SOFTMAX):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        codes.append(code)
    graph = schema.SubGraphT()
    graph.tensors = [
        _tensor(input_name, [-1, n], 0),
        _tensor("w", [c, n], 1),
        _tensor("b", [c], 2),
        _tensor("logits", [-1, c], 0),
        _tensor("p", [-1, c], 0),
    ]
    graph.inputs = np.array([0], np.int32)
    graph.outputs = np.array([4], np.int32)
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    graph.operators = [
        _operator(
            0,
            [0, 1, 2],
            3,
            schema.BuiltinOptions.FullyConnectedOptions,
            schema.FullyConnectedOptionsT(),
        ),
        _operator(1, [3], 4, schema.BuiltinOptions.SoftmaxOptions, softmax),
    ]
    model = schema.ModelT()
    model.version = 3
    model.operatorCodes = codes
    model.subgraphs = [graph]
    model.buffers = [_buffer(), _buffer(weights), _buffer(np.zeros(c))]
    data = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    meta = {
        "name": name,
        "version": version,
        "inputs": inputs,
        "labels": labels,
        "mean": [0.0] * n,
        "std": [1.0] * n,
        "kind": kind,
    }
    return with_metadata(data, meta)


def inputs_for(label: str, **overrides: Any) -> dict[str, Any]:
    """Every factory input, valued so that the tiny cloud model says `label`."""
    values: dict[str, Any] = dict.fromkeys(FACTORY_INPUTS, 0.0)
    values[CLOUD_INPUTS[FACTORY_LABELS.index(label)]] = 1.0
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def escalation(
    edge: str,
    inputs: dict[str, Any],
    window_end: float = NOW,
    machine: str = "m-03",
    model: str | None = "factory-vibration",
) -> dict[str, Any]:
    """An escalation as the gateway's `infer` step writes it (plus the uplink's `ts`)."""
    probabilities = dict.fromkeys(FACTORY_LABELS, 0.1)
    probabilities[edge] = 0.52
    data: dict[str, Any] = {
        "line": "line-1",
        "machine": machine,
        "window_start": window_end - 10,
        "window_end": window_end,
        "label": edge,
        "confidence": 0.52,
        "entropy": 0.71,
        "model_version": "1",
        "exit": "cloud",
        "inputs": inputs,
        "probabilities": probabilities,
        "ts": window_end,
    }
    if model is not None:
        data["model"] = model
    return data


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = NOW + 1000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def running_cloud(
    broker: Broker, database: Database, models_dir: Path, **options: Any
) -> AsyncIterator[Cloud]:
    """A cloud on the test's broker and database, its models from `models_dir`."""
    cloud_options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="infer",
        wait_broker=None,
        models_dir=models_dir,
        **options,
    )
    async with Cloud(cloud_options) as cloud:
        yield cloud
