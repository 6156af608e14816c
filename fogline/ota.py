"""Models over the air: the wire format of `fogline/<gateway-id>/down/model/<step>/<n>`.

The cloud publishes a model for one pipeline step of one gateway as `count` retained
chunks, one topic each, so a gateway that connects later (or restarts) still receives the
latest model whole. Each chunk is one line of JSON, a newline, then raw bytes:

    {"v": 1, "step": "diagnosis", "version": "2", "sha256": "...", "size": 5120,
     "index": 0, "count": 1}\\n<bytes>

The gateway assembles chunks per step (a chunk of another sha256 starts over: a newer
upload replaced the one in progress), and checks size and sha256 before it even tries to
load the model. An empty retained payload clears a chunk topic (the cloud clears chunks
beyond a new, shorter count).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

WIRE_VERSION = 1
CHUNK_SIZE = 64 * 1024


class ChunkError(ValueError):
    """A chunk that cannot be part of a model (the message says why)."""

    def __init__(self, message: str, manifest: Manifest | None = None) -> None:
        super().__init__(message)
        self.manifest = manifest  # which upload it was, once the header could be read


@dataclass(frozen=True, slots=True)
class Manifest:
    step: str
    version: str
    sha256: str
    size: int
    count: int


def topic(gateway: str, step: str, index: int) -> str:
    return f"fogline/{gateway}/down/model/{step}/{index}"


def subscription(gateway: str) -> str:
    return f"fogline/{gateway}/down/model/#"


def chunks(step: str, version: str, data: bytes, size: int = CHUNK_SIZE) -> list[bytes]:
    """The payloads to publish, retained, on `topic(gateway, step, i)` for i = 0, 1, ..."""
    digest = hashlib.sha256(data).hexdigest()
    count = max(1, -(-len(data) // size))
    return [
        orjson.dumps(
            {
                "v": WIRE_VERSION,
                "step": step,
                "version": version,
                "sha256": digest,
                "size": len(data),
                "index": i,
                "count": count,
            }
        )
        + b"\n"
        + data[i * size : (i + 1) * size]
        for i in range(count)
    ]


def parse_chunk(payload: bytes) -> tuple[Manifest, int, bytes]:
    """(manifest, index, bytes) of one chunk, or ChunkError naming what is wrong."""
    head, sep, body = payload.partition(b"\n")
    if not sep:
        raise ChunkError("expected a JSON header line, then the model bytes")
    try:
        header: Any = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ChunkError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("v") != WIRE_VERSION:
        raise ChunkError(f"expected a header with v={WIRE_VERSION}")
    try:
        manifest = Manifest(
            str(header["step"]),
            str(header["version"]),
            str(header["sha256"]),
            int(header["size"]),
            int(header["count"]),
        )
        index = int(header["index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ChunkError(f"header field {exc} is missing or malformed") from exc
    if not 0 <= index < manifest.count:
        raise ChunkError(f"chunk {index} of {manifest.count}")
    return manifest, index, body


@dataclass
class Assembler:
    """Chunks in, whole verified models out, per step."""

    _parts: dict[str, tuple[Manifest, dict[int, bytes]]] = field(default_factory=dict)

    def add(self, payload: bytes) -> tuple[Manifest, bytes] | None:
        """The whole model once its last chunk arrives; ChunkError if it is not intact."""
        manifest, index, body = parse_chunk(payload)
        held = self._parts.get(manifest.step)
        if held is None or held[0] != manifest:
            held = self._parts[manifest.step] = (manifest, {})
        held[1][index] = body
        if len(held[1]) < manifest.count:
            return None
        del self._parts[manifest.step]
        data = b"".join(held[1][i] for i in range(manifest.count))
        if len(data) != manifest.size:
            raise ChunkError(f"expected {manifest.size} bytes, got {len(data)}", manifest)
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.sha256:
            raise ChunkError(
                f"sha256 {digest[:12]}... does not match the announced {manifest.sha256[:12]}...",
                manifest,
            )
        return manifest, data
