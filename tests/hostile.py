"""Hostile models for the sandbox tests: valid-looking .tflite files that cost too much.

`slow_model(k)` is the attack of issue 9: TILE (k copies) -> RESHAPE -> MEAN in front of a
real network. Its answers are those of the network (the mean of k copies of x is x), every
static check passes, and each invoke moves `batch * inputs * k * 4` bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from fogline.model import with_metadata

LABELS = ["normal", "imbalance", "bearing"]


def _tensor(name: str, shape: list[int], buffer: int, kind: int = schema.TensorType.FLOAT32) -> Any:
    tensor = schema.TensorT()
    tensor.name = name
    tensor.shape = np.array([1 if d < 0 else d for d in shape], np.int32)
    tensor.shapeSignature = np.array(shape, np.int32)
    tensor.type = kind
    tensor.buffer = buffer
    return tensor


def _buffer(values: np.ndarray | None = None) -> Any:
    buffer = schema.BufferT()
    if values is not None:
        buffer.data = np.frombuffer(values.tobytes(), np.uint8)
    return buffer


def _op(code: int, inputs: list[int], output: int, kind: int = 0, options: Any = None) -> Any:
    op = schema.OperatorT()
    op.opcodeIndex = code
    op.inputs = np.array(inputs, np.int32)
    op.outputs = np.array([output], np.int32)
    op.builtinOptionsType = kind
    op.builtinOptions = options
    return op


def slow_model(k: int, n: int = 4) -> bytes:
    """A Fogline model whose every invoke tiles its input `k` times and averages it back."""
    c = len(LABELS)
    builtins = schema.BuiltinOperator
    codes = []
    for builtin in (builtins.TILE, builtins.RESHAPE, builtins.MEAN, builtins.FULLY_CONNECTED,
                    builtins.SOFTMAX):  # fmt: skip
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        codes.append(code)
    i32 = schema.TensorType.INT32
    weights = np.zeros((c, n), np.float32)
    weights[0, 0] = 1.0
    graph = schema.SubGraphT()
    graph.tensors = [
        _tensor("x", [-1, n], 0),  # 0
        _tensor("multiples", [2], 1, i32),  # 1
        _tensor("tiled", [-1, n * k], 0),  # 2
        _tensor("shape", [3], 2, i32),  # 3
        _tensor("copies", [-1, k, n], 0),  # 4
        _tensor("axis", [1], 3, i32),  # 5
        _tensor("mean", [-1, n], 0),  # 6
        _tensor("w", [c, n], 4),  # 7
        _tensor("b", [c], 5),  # 8
        _tensor("logits", [-1, c], 0),  # 9
        _tensor("p", [-1, c], 0),  # 10
    ]
    graph.inputs = np.array([0], np.int32)
    graph.outputs = np.array([10], np.int32)
    reshape = schema.ReshapeOptionsT()
    reshape.newShape = np.array([-1, k, n], np.int32)
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    options = schema.BuiltinOptions
    graph.operators = [
        _op(0, [0, 1], 2, options.TileOptions, schema.TileOptionsT()),
        _op(1, [2, 3], 4, options.ReshapeOptions, reshape),
        _op(2, [4, 5], 6, options.ReducerOptions, reducer),
        _op(3, [6, 7, 8], 9, options.FullyConnectedOptions, schema.FullyConnectedOptionsT()),
        _op(4, [9], 10, options.SoftmaxOptions, softmax),
    ]
    model = schema.ModelT()
    model.version = 3
    model.operatorCodes = codes
    model.subgraphs = [graph]
    model.buffers = [
        _buffer(),
        _buffer(np.array([1, k], np.int32)),
        _buffer(np.array([-1, k, n], np.int32)),
        _buffer(np.array([1], np.int32)),
        _buffer(weights),
        _buffer(np.zeros(c, np.float32)),
    ]
    data = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    meta = {
        "name": "factory-vibration",
        "version": f"slow-{k}",
        "inputs": [f"f{i}" for i in range(n)],
        "labels": LABELS,
        "mean": [0.0] * n,
        "std": [1.0] * n,
    }
    return with_metadata(data, meta)
