"""A LiteRT (.tflite) classifier with what it needs to run carried inside the file.

A Fogline model is an ordinary .tflite file whose flatbuffer metadata holds one entry,
`fogline`, a JSON object: the model's `name` and `version`, its `inputs` (field names, in
order), the standardization constants `mean` and `std` (one per input) and `clip` (z-scores
are clipped to +-clip, so that one wild reading cannot stretch the int8 input range the
model was quantized for), its `labels`, and the `escalate_above` threshold chosen at
calibration. Standardization happens here, in
numpy, before the model; so the constants, like everything else the model needs, travel
with it: over the air a model is one file.

Both kinds of models run the same way: an int8-inside model with float32 input and output
(what the edge ships: quantizing inputs in numpy would cost more than the invoke), and a
full-integer model with int8 input and output, quantized and dequantized here with the
model's own scale and zero point. The batch dimension is resized to each call's batch:
one invoke per batch, whatever its size (resizing costs about 2 µs).

The runtime is `ai-edge-litert`; `tflite-runtime` is the fallback where LiteRT is absent.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any

import flatbuffers
import numpy as np
import orjson
from numpy.typing import NDArray

METADATA_NAME = "fogline"
MAX_BATCH = 1024  # rows per invoke; larger batches are split

FloatArray = NDArray[np.float32]


class ModelError(Exception):
    """A model that cannot be used; the message says why (shown to users, sent to the cloud)."""


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # noqa: PLC0415
        except ImportError as exc:
            raise ModelError(
                "no LiteRT runtime: pip install ai-edge-litert (or tflite-runtime)"
            ) from exc
    return Interpreter


# -- metadata: a few lines of flatbuffer reading, so either runtime will do ---------------


def read_metadata(data: bytes) -> dict[str, bytes]:
    """The .tflite file's metadata entries, name -> bytes."""
    from flatbuffers import number_types as nt  # noqa: PLC0415
    from flatbuffers.table import Table  # noqa: PLC0415

    if data[4:8] != b"TFL3":
        raise ModelError("not a .tflite file (no TFL3 identifier at byte 4)")
    try:
        model = Table(data, flatbuffers.encode.Get(nt.UOffsetTFlags.packer_type, data, 0))
        out: dict[str, bytes] = {}
        buffers = model.Offset(12)  # Model.buffers
        metadata = model.Offset(16)  # Model.metadata
        if not metadata or not buffers:
            return out
        for i in range(model.VectorLen(metadata)):
            entry = Table(data, model.Indirect(model.Vector(metadata) + 4 * i))
            name_at, buffer_at = entry.Offset(4), entry.Offset(6)
            name = entry.String(name_at + entry.Pos).decode() if name_at else ""
            index = entry.Get(nt.Uint32Flags, buffer_at + entry.Pos) if buffer_at else 0
            buffer = Table(data, model.Indirect(model.Vector(buffers) + 4 * index))
            data_at = buffer.Offset(4)
            if data_at:
                start = buffer.Vector(data_at)
                out[name] = bytes(data[start : start + buffer.VectorLen(data_at)])
            else:
                out[name] = b""
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, struct.error) as exc:
        raise ModelError(f"not a .tflite file (damaged flatbuffer: {exc})") from exc
    return out


def with_metadata(data: bytes, meta: dict[str, Any]) -> bytes:
    """`data` with its `fogline` metadata entry set to `meta` (for training and tests)."""
    from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    entries = [m for m in (model.metadata or []) if m.name.decode() != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# -- the model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model says about itself, plus the identity of its bytes."""

    name: str
    version: str
    inputs: tuple[str, ...]
    labels: tuple[str, ...]
    escalate_above: float | None
    sha256: str
    size: int
    quantized: str  # "float", "int8 inside" or "int8 I/O"
    extra: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def replaces(self, labels: Sequence[str], inputs: Sequence[str]) -> str | None:
        """Why this model cannot take the place of one with these labels and inputs (rules
        downstream read the labels; the step receives only those inputs), or None.

        The gateway refuses such a swap; the cloud refuses the upload before sending it."""
        if set(self.labels) != set(labels):
            return (
                f"labels {list(self.labels)} differ from the running model's {list(labels)}: "
                "rules downstream read them"
            )
        missing = sorted(set(self.inputs) - set(inputs))
        if missing:
            return (
                f"inputs {missing} are not fields this step receives (it receives {list(inputs)})"
            )
        return None


def parse_meta(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise ModelError(f"no '{METADATA_NAME}' metadata: not a Fogline model (models/train.py)")
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ModelError(f"'{METADATA_NAME}' metadata is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"'{METADATA_NAME}' metadata: expected an object")
    for name in ("name", "version", "inputs", "labels", "mean", "std"):
        if name not in meta:
            raise ModelError(f"'{METADATA_NAME}' metadata: '{name}' is missing")
    for name in ("inputs", "labels"):
        if not _list_of(meta[name], str) or not meta[name]:
            raise ModelError(f"'{METADATA_NAME}' metadata: '{name}': expected a list of names")
    for name in ("mean", "std"):
        if not _list_of(meta[name], int | float):
            raise ModelError(f"'{METADATA_NAME}' metadata: '{name}': expected a list of numbers")
    for name in ("clip", "escalate_above"):
        if not isinstance(meta.get(name), int | float | None):
            raise ModelError(f"'{METADATA_NAME}' metadata: '{name}': expected a number")
    n = len(meta["inputs"])
    if len(meta["mean"]) != n or len(meta["std"]) != n:
        raise ModelError(
            f"'{METADATA_NAME}' metadata: expected {n} means and stds (one per input), "
            f"got {len(meta['mean'])} and {len(meta['std'])}"
        )
    return meta


def _list_of(value: object, kind: type | UnionType) -> bool:
    return isinstance(value, list) and all(isinstance(v, kind) for v in value)


class Model:
    """One loaded model: `predict` turns a batch of raw feature rows into probabilities."""

    def __init__(self, data: bytes, *, source: str = "model") -> None:
        self.source = source
        meta = parse_meta(read_metadata(data).get(METADATA_NAME))
        runtime = _interpreter_class()
        try:
            self._interpreter = runtime(model_content=data, num_threads=1)  # batches are small
            self._interpreter.allocate_tensors()
            inputs = self._interpreter.get_input_details()
            outputs = self._interpreter.get_output_details()
        except Exception as exc:  # untrusted bytes: whatever the runtime raises
            raise ModelError(f"the runtime refused the model: {exc}") from exc
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"expected one input and one output tensor, got {len(inputs)} and {len(outputs)}"
            )
        self._in, self._out = inputs[0], outputs[0]
        n_inputs, n_labels = len(meta["inputs"]), len(meta["labels"])
        if list(self._in["shape"][1:]) != [n_inputs]:
            raise ModelError(
                f"input tensor shape {list(self._in['shape'])}: expected [batch, {n_inputs}] "
                f"for the {n_inputs} inputs the metadata names"
            )
        if list(self._out["shape"][1:]) != [n_labels]:
            raise ModelError(
                f"output tensor shape {list(self._out['shape'])}: expected [batch, {n_labels}] "
                f"for the {n_labels} labels the metadata names"
            )
        self.mean = np.asarray(meta["mean"], dtype=np.float32)
        self.std = std = np.asarray(meta["std"], dtype=np.float32)
        self._inv_std = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0).astype(np.float32)
        clip = meta.get("clip")
        self._clip = None if clip is None else float(clip)
        self._in_q = _quantization(self._in)
        self._out_q = _quantization(self._out)
        quantized = "int8 I/O" if self._in_q else "float"
        if not self._in_q and _has_int8_tensors(self._interpreter):
            quantized = "int8 inside"
        escalate = meta.get("escalate_above")
        known = {"name", "version", "inputs", "labels", "mean", "std", "clip", "escalate_above"}
        self.info = ModelInfo(
            name=str(meta["name"]),
            version=str(meta["version"]),
            inputs=tuple(str(x) for x in meta["inputs"]),
            labels=tuple(str(x) for x in meta["labels"]),
            escalate_above=None if escalate is None else float(escalate),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            quantized=quantized,
            extra={k: v for k, v in meta.items() if k not in known},
        )
        self._batch = int(self._in["shape"][0])

    @classmethod
    def from_file(cls, path: Path) -> Model:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the model: {exc.strerror}") from exc
        try:
            return cls(data, source=str(path))
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from exc

    def quantize(self, x: FloatArray) -> NDArray[np.int8]:
        """Standardized rows to the input tensor's int8 (int8 I/O models only)."""
        if self._in_q is None:
            raise ModelError("the model takes float input: nothing to quantize")
        scale, zero = self._in_q
        q: NDArray[np.int8] = np.clip(np.rint(x / scale + zero), -128, 127).astype(np.int8)
        return q

    def dequantize(self, q: NDArray[np.int8]) -> FloatArray:
        """The output tensor's int8 to floats (int8 I/O models only)."""
        if self._out_q is None:
            raise ModelError("the model gives float output: nothing to dequantize")
        scale, zero = self._out_q
        return ((q.astype(np.float32) - zero) * scale).astype(np.float32)

    def standardize(self, rows: NDArray[Any]) -> FloatArray:
        z: FloatArray = (np.asarray(rows, dtype=np.float32) - self.mean) * self._inv_std
        if self._clip is not None:
            np.clip(z, -self._clip, self._clip, out=z)
        return z

    def predict(self, rows: NDArray[Any]) -> FloatArray:
        """Class probabilities, (n, labels), for raw feature rows (n, inputs): one invoke."""
        if len(rows) > MAX_BATCH:
            return np.concatenate(
                [self.predict(rows[i : i + MAX_BATCH]) for i in range(0, len(rows), MAX_BATCH)]
            )
        x = self.standardize(rows)
        if x.ndim != 2 or x.shape[1] != len(self.info.inputs):
            raise ModelError(f"expected rows of {len(self.info.inputs)} inputs, got {x.shape}")
        it = self._interpreter
        if len(x) != self._batch:
            it.resize_tensor_input(self._in["index"], [len(x), x.shape[1]])
            it.allocate_tensors()
            self._batch = len(x)
        it.set_tensor(self._in["index"], self.quantize(x) if self._in_q else x)
        it.invoke()
        out = it.get_tensor(self._out["index"])
        if self.info.quantized == "float":
            probs: FloatArray = out  # a float softmax: already a probability per row
            return probs
        probs = self.dequantize(out) if self._out_q else out
        total = probs.sum(axis=1, keepdims=True)  # int8 softmax sums to 1 only roughly
        uniform = np.full_like(probs, 1.0 / probs.shape[1])
        normalized: FloatArray = np.divide(probs, total, out=uniform, where=total > 0)
        return normalized

    def self_test(self) -> None:
        """Invoke once on the training mean: finite probabilities summing to 1, or ModelError."""
        try:
            probs = self.predict(self.mean[None, :])
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"test invoke failed: {exc}") from exc
        if not np.isfinite(probs).all() or not math.isclose(float(probs.sum()), 1.0, abs_tol=1e-3):
            raise ModelError(f"test invoke gave {probs.tolist()}: not a probability vector")


def normalized_entropy(probs: FloatArray) -> FloatArray:
    """H(p) / log C per row: 0 for a certain answer, 1 for a uniform one."""
    p = np.clip(probs, 1e-12, 1.0)
    h: FloatArray = (-(p * np.log(p)).sum(axis=1) / math.log(probs.shape[1])).astype(np.float32)
    return h


def _quantization(detail: dict[str, Any]) -> tuple[float, int] | None:
    if detail["dtype"] != np.int8:
        return None
    scale, zero = detail["quantization"]
    if not scale:
        raise ModelError(f"tensor '{detail['name']}' is int8 but has no quantization scale")
    return float(scale), int(zero)


def _has_int8_tensors(interpreter: Any) -> bool:
    return any(d["dtype"] == np.int8 for d in interpreter.get_tensor_details())
