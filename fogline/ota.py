"""Models over the air: the wire format of `fogline/<gateway-id>/down/model/<step>/<n>`.

The cloud publishes a model for one pipeline step of one gateway as `count` retained
chunks, one topic each, so a gateway that connects later (or restarts) still receives the
latest model whole. Each chunk is one line of JSON, a newline, then raw bytes:

    {"v": 1, "step": "diagnosis", "version": "2", "serial": 1764878400000000,
     "sha256": "...", "size": 5120, "index": 0, "count": 1}\\n<bytes>

`serial` numbers the uploads to one step of one gateway, increasing (the cloud takes the
larger of the last one + 1 and the time in microseconds, so a cloud whose database was
reset still counts up). It sits in the header the cloud signs (`fogline.signing.sign_chunk`),
and a gateway runs a model only if its serial is greater than that of the model it runs:
an old signed upload replayed by a hostile broker cannot roll the gateway back. A rollback
is a new upload of the old bytes.

The gateway assembles chunks per step (a chunk of another sha256 starts over: a newer
upload replaced the one in progress), and checks size and sha256 before it even tries to
load the model. An empty retained payload clears a chunk topic (the cloud clears chunks
beyond a new, shorter count).

Chunks come from a broker, not only from our cloud, so the assembler is bounded
(`AssemblyLimits`): a header announcing more than `max_bytes` or `max_chunks`, a chunk for a
step the gateway does not run, or chunks holding more bytes than announced are refused at
once and never held; at most `max_open` transfers are held (a new one drops the oldest) and
one still incomplete after `ttl` seconds is dropped. 400 junk chunks used to take a gateway
to 471 MB. Drops are reported through `on_expired`, so they are counted.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

WIRE_VERSION = 1
CHUNK_SIZE = 64 * 1024
MAX_SERIAL = 2**63 - 1
NOT_NEWER = "not newer than the running model"
"""How a gateway's refusal of a replayed (older) upload begins: the cloud does not hold it
against the bytes, which may be uploaded again to roll back on purpose."""


class ChunkError(ValueError):
    """A chunk that cannot be part of a model (the message says why)."""

    def __init__(
        self, message: str, manifest: Manifest | None = None, *, damaged: bool = True
    ) -> None:
        super().__init__(message)
        self.manifest = manifest  # which upload it was, once the header could be read
        self.damaged = damaged  # False: intact, but not for us (or beyond the limits)


@dataclass(frozen=True, slots=True)
class Manifest:
    step: str
    version: str
    sha256: str
    size: int
    count: int
    serial: int = 0  # the upload's number for its (gateway, step): see the module docstring


def topic(gateway: str, step: str, index: int) -> str:
    return f"fogline/{gateway}/down/model/{step}/{index}"


def subscription(gateway: str) -> str:
    return f"fogline/{gateway}/down/model/#"


def chunks(
    step: str, version: str, data: bytes, size: int = CHUNK_SIZE, *, serial: int | None = None
) -> list[bytes]:
    """The payloads to publish, retained, on `topic(gateway, step, i)` for i = 0, 1, ...

    `serial` defaults to the time in microseconds (the cloud passes its own, see above)."""
    digest = hashlib.sha256(data).hexdigest()
    count = max(1, -(-len(data) // size))
    serial = time.time_ns() // 1000 if serial is None else serial
    return [
        orjson.dumps(
            {
                "v": WIRE_VERSION,
                "step": step,
                "version": version,
                "serial": serial,
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
            int(header["serial"]),
        )
        index = int(header["index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ChunkError(f"header field {exc} is missing or malformed") from exc
    if not 0 < manifest.serial <= MAX_SERIAL:
        raise ChunkError(f"serial {manifest.serial} is outside 1..{MAX_SERIAL}", manifest)
    if not 0 <= index < manifest.count:
        raise ChunkError(f"chunk {index} of {manifest.count}")
    return manifest, index, body


@dataclass(frozen=True, slots=True)
class AssemblyLimits:
    """What chunks in progress may hold."""

    max_bytes: int = 16 * 1024 * 1024  # one model; the cloud refuses larger uploads too
    max_chunks: int = 4096  # 16 MiB in 4 KiB chunks
    max_open: int = 4  # transfers held at once
    ttl: float = 600.0  # seconds an incomplete transfer is kept


@dataclass
class _Transfer:
    manifest: Manifest
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    held: int = 0  # bytes in parts


Dropped = Callable[[Manifest, str], None]


def _ignore(manifest: Manifest, reason: str) -> None:
    """The default: nobody counts dropped transfers."""


class Assembler:
    """Chunks in, whole verified models out, per step; bounded (see the module docstring)."""

    def __init__(
        self,
        limits: AssemblyLimits | None = None,
        *,
        steps: Collection[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_expired: Dropped = _ignore,
    ) -> None:
        self.limits = limits or AssemblyLimits()
        self._steps = steps
        self._clock = clock
        self._on_expired = on_expired
        self._parts: dict[str, _Transfer] = {}

    @property
    def open_transfers(self) -> int:
        return len(self._parts)

    @property
    def held_bytes(self) -> int:
        return sum(t.held for t in self._parts.values())

    def expire(self) -> None:
        """Drop the transfers incomplete for longer than `ttl`."""
        now = self._clock()
        for step, transfer in list(self._parts.items()):
            if now - transfer.started > self.limits.ttl:
                del self._parts[step]
                self._on_expired(
                    transfer.manifest,
                    f"{len(transfer.parts)} of {transfer.manifest.count} chunks after "
                    f"{self.limits.ttl:g} s",
                )

    def _check(self, manifest: Manifest, body: bytes) -> None:
        limits = self.limits
        if self._steps is not None and manifest.step not in self._steps:
            known = ", ".join(sorted(self._steps)) or "none"
            raise ChunkError(
                f"no infer step '{manifest.step}' (infer steps: {known})", manifest, damaged=False
            )
        if not 0 < manifest.size <= limits.max_bytes:
            raise ChunkError(
                f"announces {manifest.size} bytes; a model may have 1 to {limits.max_bytes}",
                manifest,
                damaged=False,
            )
        if manifest.count > limits.max_chunks:
            raise ChunkError(
                f"announces {manifest.count} chunks, more than {limits.max_chunks}",
                manifest,
                damaged=False,
            )
        if len(body) > manifest.size:
            raise ChunkError(
                f"a chunk of {len(body)} bytes > the model's {manifest.size}", manifest
            )

    def add(self, payload: bytes) -> tuple[Manifest, bytes] | None:
        """The whole model once its last chunk arrives; ChunkError if it is not intact."""
        manifest, index, body = parse_chunk(payload)
        self.expire()
        self._check(manifest, body)
        held = self._parts.get(manifest.step)
        if held is None or held.manifest != manifest:
            self._parts.pop(manifest.step, None)  # a newer upload replaces the one in progress
            if len(self._parts) >= self.limits.max_open:
                oldest = min(self._parts, key=lambda step: self._parts[step].started)
                dropped = self._parts.pop(oldest)
                self._on_expired(
                    dropped.manifest, f"more than {self.limits.max_open} transfers at once"
                )
            held = self._parts[manifest.step] = _Transfer(manifest, self._clock())
        held.held += len(body) - len(held.parts.get(index, b""))
        held.parts[index] = body
        if held.held > manifest.size:
            del self._parts[manifest.step]
            raise ChunkError(f"chunks hold more than the announced {manifest.size} bytes", manifest)
        if len(held.parts) < manifest.count:
            return None
        del self._parts[manifest.step]
        data = b"".join(held.parts[i] for i in range(manifest.count))
        if len(data) != manifest.size:
            raise ChunkError(f"expected {manifest.size} bytes, got {len(data)}", manifest)
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.sha256:
            raise ChunkError(
                f"sha256 {digest[:12]}... does not match the announced {manifest.sha256[:12]}...",
                manifest,
            )
        return manifest, data
