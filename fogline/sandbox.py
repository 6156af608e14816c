"""Untrusted model bytes are loaded and timed in a child process with limits, first.

A damaged .tflite can crash the runtime (2 of 3,000 byte mutations segfaulted the process
that loaded it: one upload killed the cloud, the same bytes retained crash-looped the
gateway), and a valid-looking model can be arbitrarily slow (TILE -> RESHAPE -> MEAN in
front of the real network: 17.7 s and 5.1 GB per window boundary). So before a process we
care about loads a model it did not ship with, a child (`python -m fogline.sandbox`) does:
with an address-space limit (RLIMIT_AS), a CPU-time limit (RLIMIT_CPU), no core files and
a wall-clock deadline, it loads the model, runs its self-test, then times a realistic
batch (`batch` rows around the model's own training mean) and reports as one JSON line.
Whatever the child does, the caller gets a `ModelError` with the reason (a crash names
its signal), never a crash. Only bytes the child accepted are then loaded in-process.

Signatures come first: a gateway takes a model chunk only if the cloud signed it for this
gateway (`gateway/trust.py`, before the chunk is even queued) and runs only an upload newer
than the one it took last (`gateway/model_updates.py`), so bytes that reach a child came
from the cloud. The child still guards against what the cloud itself was given (a damaged
or hostile upload), and the cloud runs the same check before it signs anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from fogline.model import ModelError

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What a model may cost while it is checked, and per batch once it runs."""

    memory_bytes: int = 512 * MIB  # address space of the child (Python + numpy + LiteRT: ~50 MB)
    cpu_seconds: int = 10
    wall_seconds: float = 30.0
    batch: int = 64  # rows in the timed batch: one window boundary of a busy cell
    budget_seconds: float = 0.02  # the timed batch must take less (best of 3; demo: 0.03 ms)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the child measured on a model it accepted."""

    name: str
    version: str
    batch_seconds: float
    peak_rss_bytes: int


def _reason(code: int, stderr: bytes, limits: Limits) -> str:
    """Why a child ended without a verdict."""
    if code < 0:
        name = signal.Signals(-code).name
        if -code == signal.SIGXCPU:
            return f"the model used more than {limits.cpu_seconds} s of CPU time ({name})"
        if -code in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL):
            hint = f" or needed more than {limits.memory_bytes // MIB} MiB"
            return f"the runtime crashed on the model ({name}): damaged{hint}"
        return f"the check was killed ({name})"
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return f"the check failed (exit {code}): {tail[0][:200]}"


def _args(limits: Limits) -> list[str]:
    return [sys.executable, "-m", "fogline.sandbox", orjson.dumps(asdict(limits)).decode()]


def _verdict(code: int, stdout: bytes, stderr: bytes, limits: Limits) -> Verdict:
    line = stdout.strip().splitlines()[-1:] if stdout.strip() else []
    if code == 0 and line:
        try:
            report: dict[str, Any] = orjson.loads(line[0])
        except orjson.JSONDecodeError:
            report = {}
        if report.get("ok") is True:
            return Verdict(
                str(report["name"]),
                str(report["version"]),
                float(report["batch_seconds"]),
                int(report["peak_rss_bytes"]),
            )
        if isinstance(report.get("reason"), str):
            raise ModelError(report["reason"])
    raise ModelError(_reason(code, stderr, limits))


def check(data: bytes, limits: Limits | None = None) -> Verdict:
    """Load, self-test and time `data` in a limited child; ModelError says why not."""
    limits = limits or Limits()
    try:
        done = subprocess.run(  # noqa: S603 - our own module, with our own interpreter
            _args(limits),
            input=data,
            capture_output=True,
            timeout=limits.wall_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ModelError(f"checking the model took longer than {limits.wall_seconds:g} s") from None
    return _verdict(done.returncode, done.stdout, done.stderr, limits)


async def check_async(data: bytes, limits: Limits | None = None) -> Verdict:
    """`check` for the event loop: the child runs while the loop goes on."""
    limits = limits or Limits()
    process = await asyncio.create_subprocess_exec(
        *_args(limits),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(data), limits.wall_seconds)
    except TimeoutError:
        raise ModelError(f"checking the model took longer than {limits.wall_seconds:g} s") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode is not None  # noqa: S101
    return _verdict(process.returncode, stdout, stderr, limits)


# -- the child ------------------------------------------------------------------------------


def _child(limits: Limits) -> dict[str, Any]:
    """Runs in the limited child: load, self-test, time a batch."""
    import numpy as np  # noqa: PLC0415 - only the child pays for these imports

    from fogline.model import Model  # noqa: PLC0415

    data = sys.stdin.buffer.read()
    try:
        model = Model(data, source="untrusted model")
        model.self_test()
        rng = np.random.default_rng(0)
        spread = np.where(model.std > 0, model.std, 1.0)
        rows = model.mean + spread * rng.standard_normal((limits.batch, len(model.mean)))
        model.predict(rows)  # warm: the first invoke at a new batch size allocates
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            model.predict(rows)
            best = min(best, time.perf_counter() - start)
    except ModelError as exc:
        return {"ok": False, "reason": str(exc)}
    except MemoryError:
        return {
            "ok": False,
            "reason": f"the model needs more than {limits.memory_bytes // MIB} MiB",
        }
    except Exception as exc:
        return {"ok": False, "reason": f"the runtime failed on the model: {exc!r}"[:300]}
    if best > limits.budget_seconds:
        return {
            "ok": False,
            "reason": f"a batch of {limits.batch} takes {best * 1000:.1f} ms, over the "
            f"budget of {limits.budget_seconds * 1000:g} ms",
        }
    peak = _peak_rss()
    return {
        "ok": True,
        "name": model.info.name,
        "version": model.info.version,
        "batch_seconds": best,
        "peak_rss_bytes": peak,
    }


def _peak_rss() -> int:
    """This process's own high-water RSS.

    Not `ru_maxrss`: Linux carries it across execve, so a child spawned by a 546 MB test
    runner reported 546 MB for a model that needs 50.
    """
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _main() -> None:
    limits = Limits(**orjson.loads(sys.argv[1]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    os.environ["OMP_NUM_THREADS"] = "1"
    report = _child(limits)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _main()
