"""The OTA chunk assembler's bounds, with a fake clock: what a broker may make a gateway hold.

Chunks come from a broker, so anyone who can publish on a gateway's model topics can send
junk (400 junk chunks once took a gateway to 471 MB). Every bound refuses at once, holds
nothing it refused, and is counted where an operator looks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from oplab import make_op
from support import eventually

from fogline import ota
from gateway.clock import FakeClock
from gateway.metrics import Metrics
from gateway.model_updates import INBOX_MAX, MAX_CHUNK_PAYLOAD, ModelUpdates

MODEL = Path(__file__).resolve().parents[2] / "models" / "factory-vibration.tflite"
LIMITS = ota.AssemblyLimits(max_bytes=1000, max_chunks=4, max_open=2, ttl=60.0)


class Dropped:
    """`on_expired`: what the assembler gave up on, and why."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, manifest: ota.Manifest, reason: str) -> None:
        self.calls.append((manifest.step, reason))


def assembler(clock: FakeClock, dropped: Dropped | None = None) -> ota.Assembler:
    return ota.Assembler(
        LIMITS, steps={"a", "b", "c"}, clock=clock.now, on_expired=dropped or Dropped()
    )


def header(**fields: Any) -> bytes:
    base = {"v": 1, "step": "a", "version": "1", "serial": 1, "sha256": "0" * 64, "index": 0}
    return orjson.dumps({**base, **fields}) + b"\n"


def refusal(asm: ota.Assembler, payload: bytes) -> ota.ChunkError:
    with pytest.raises(ota.ChunkError) as info:
        asm.add(payload)
    return info.value


def test_a_whole_model_within_the_limits_is_assembled() -> None:
    asm = assembler(FakeClock())
    data = bytes(range(250)) * 4
    parts = ota.chunks("a", "7", data, size=300)
    assert [asm.add(p) for p in parts[:-1]] == [None, None, None]
    assert asm.open_transfers == 1
    assert asm.held_bytes == 900
    manifest, whole = asm.add(parts[-1])  # type: ignore[misc]
    assert (manifest.step, manifest.version, whole) == ("a", "7", data)
    assert (asm.open_transfers, asm.held_bytes) == (0, 0)


@pytest.mark.parametrize(
    ("data", "size", "message"),
    [
        (b"x" * 1001, 1001, "announces 1001 bytes; a model may have 1 to 1000"),
        (b"x" * 1000, 100, "announces 10 chunks, more than 4"),
    ],
)
def test_a_header_beyond_the_size_or_chunk_count_is_refused_and_nothing_held(
    data: bytes, size: int, message: str
) -> None:
    asm = assembler(FakeClock())
    error = refusal(asm, ota.chunks("a", "1", data, size=size)[0])
    assert str(error) == message
    assert not error.damaged  # intact, only beyond the limits: not retried
    assert (asm.open_transfers, asm.held_bytes) == (0, 0)


def test_an_empty_model_and_a_step_the_gateway_does_not_run_are_refused() -> None:
    asm = assembler(FakeClock())
    assert str(refusal(asm, header(size=0, count=1))) == (
        "announces 0 bytes; a model may have 1 to 1000"
    )
    assert str(refusal(asm, ota.chunks("z", "1", b"x")[0])) == (
        "no infer step 'z' (infer steps: a, b, c)"
    )
    assert asm.open_transfers == 0


def test_chunks_holding_more_than_announced_are_refused_and_the_transfer_dropped() -> None:
    asm = assembler(FakeClock())
    error = refusal(asm, header(size=10, count=3) + b"y" * 11)
    assert str(error) == "a chunk of 11 bytes > the model's 10"
    assert error.damaged
    assert asm.add(header(size=10, count=3, index=0) + b"y" * 6) is None
    assert asm.held_bytes == 6
    error = refusal(asm, header(size=10, count=3, index=1) + b"y" * 6)
    assert str(error) == "chunks hold more than the announced 10 bytes"
    assert (asm.open_transfers, asm.held_bytes) == (0, 0)


def test_a_chunk_sent_again_is_not_counted_twice() -> None:
    asm = assembler(FakeClock())
    first = header(size=10, count=2) + b"y" * 6
    for _ in range(5):  # retained chunks come back on every reconnect
        assert asm.add(first) is None
    assert asm.held_bytes == 6


def test_more_open_transfers_than_allowed_drop_the_oldest() -> None:
    clock, dropped = FakeClock(), Dropped()
    asm = assembler(clock, dropped)
    for step in ("a", "b", "c"):
        assert asm.add(ota.chunks(step, "1", b"x" * 600, size=300)[0]) is None
        clock.advance(1)
    assert asm.open_transfers == 2
    assert asm.held_bytes == 600
    assert dropped.calls == [("a", "more than 2 transfers at once")]


def test_an_incomplete_transfer_expires_after_its_ttl_by_itself() -> None:
    """Expiry runs on the gateway's tick too, not only when the next chunk arrives."""
    clock, dropped = FakeClock(), Dropped()
    asm = assembler(clock, dropped)
    asm.add(ota.chunks("a", "1", b"x" * 900, size=300)[0])
    clock.advance(60)
    asm.expire()
    assert asm.open_transfers == 1  # at the ttl, not yet
    clock.advance(0.5)
    asm.expire()
    assert (asm.open_transfers, asm.held_bytes) == (0, 0)
    assert dropped.calls == [("a", "1 of 3 chunks after 60 s")]


def test_a_chunk_after_the_ttl_starts_over() -> None:
    clock, dropped = FakeClock(), Dropped()
    asm = assembler(clock, dropped)
    parts = ota.chunks("a", "1", b"x" * 600, size=300)
    asm.add(parts[0])
    clock.advance(61)
    assert asm.add(parts[1]) is None  # the first chunk was forgotten: not whole yet
    assert dropped.calls == [("a", "1 of 2 chunks after 60 s")]
    assert asm.add(parts[0]) is not None


def test_a_damaged_model_is_refused_once_whole() -> None:
    asm = assembler(FakeClock())
    [chunk] = ota.chunks("a", "1", b"x" * 10)
    bad = chunk.replace(b"x" * 10, b"x" * 9 + b"y")
    assert "does not match the announced" in str(refusal(asm, bad))


# -- counted where an operator looks: the gateway's ModelUpdates ---------------------------


def updates(tmp_path: Path, clock: FakeClock, metrics: Metrics) -> ModelUpdates:
    steps = {name: make_op("infer", {"model": str(MODEL)}).op for name in ("a", "b", "c")}
    return ModelUpdates(
        "gw1",
        steps,  # type: ignore[arg-type]
        tmp_path / "models",
        lambda _event: None,
        metrics,
        limits=LIMITS,
        clock=clock.now,
    )


async def test_each_refusal_is_counted(tmp_path: Path) -> None:
    clock, metrics = FakeClock(), Metrics()
    models = updates(tmp_path, clock, metrics)
    topic = ota.topic("gw1", "a", 0)
    models.on_message(topic, b"{" + b" " * MAX_CHUNK_PAYLOAD + b"}\n")
    assert metrics.rejects[("model_update", "chunk_too_large")] == 1
    junk = [
        ota.chunks("a", "1", b"x" * 1001, size=1001)[0],  # too large a model
        ota.chunks("a", "1", b"x" * 1000, size=100)[0],  # too many chunks
        ota.chunks("z", "1", b"x")[0],  # no such step
        b"not a chunk",
    ]
    for payload in junk:
        models.on_message(topic, payload)
    for step in ("a", "b", "c"):  # three transfers, two allowed
        models.on_message(ota.topic("gw1", step, 0), ota.chunks(step, "1", b"x" * 600, 300)[0])
    task = asyncio.create_task(models.run())
    try:
        await eventually(
            lambda: metrics.rejects[("model_update", "bad_chunk")] == len(junk),
            5,
            "every junk chunk refused",
        )
        await eventually(
            lambda: metrics.rejects[("model_update", "chunks_dropped")] == 1, 5, "one dropped"
        )
        clock.advance(61)
        models.expire()  # the gateway's tick: no chunk needed
        assert metrics.rejects[("model_update", "chunks_dropped")] == 3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_full_inbox_refuses_and_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    models = updates(tmp_path, FakeClock(), metrics)
    [chunk] = ota.chunks("a", "1", b"x" * 10)
    for _ in range(INBOX_MAX + 3):  # nothing drains it: the model check is busy
        models.on_message(ota.topic("gw1", "a", 0), chunk)
    assert metrics.rejects[("model_update", "inbox_full")] == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"serial": None}, "header field 'serial' is missing or malformed"),
        ({"serial": 0}, "serial 0 is outside 1..9223372036854775807"),
        ({"serial": 2**63}, "serial 9223372036854775808 is outside 1..9223372036854775807"),
    ],
)
def test_a_chunk_needs_an_upload_serial(fields: dict[str, Any], message: str) -> None:
    """The serial is what a gateway refuses a replayed older upload by (fogline/ota.py)."""
    body = {k: v for k, v in fields.items() if v is not None}
    payload = header(size=1, count=1, **body) if body else _without_serial(header(size=1, count=1))
    assert str(refusal(assembler(FakeClock()), payload + b"x")) == message


def _without_serial(line: bytes) -> bytes:
    head = orjson.loads(line)
    del head["serial"]
    return orjson.dumps(head) + b"\n"
