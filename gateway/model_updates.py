"""Model updates over the air: chunks in on `fogline/<id>/down/model/#`, a new model running.

The cloud publishes a model for one `infer` step as retained chunks (`fogline.ota`). Here
they are assembled and checked (size, sha256), loaded, self-tested and timed first in a
limited child process (`fogline.sandbox`: damaged bytes used to segfault the gateway, and
a crafted model blocked the loop 17.7 s per window), then loaded off the event loop,
checked against the step (same labels, inputs the step receives), and swapped in between
two micro-batches: no reading waits for a model to load and none is dropped. The model is
kept in the data directory, so a restart runs it again before the broker says anything;
a kept model goes through the child again at start, so bad bytes cannot crash-loop us.

Uploads are numbered (`serial`, in the header the cloud signs: `fogline.ota`). A model runs
only if its serial is greater than that of the upload the step last took, or is that very
upload again (its kept file was lost): an old signed model replayed by a hostile broker is
refused, counted (`reason="not_newer"`) and reported, and cannot roll the gateway back. The
last upload taken is kept next to the model (`<step>.upload`), so a restart remembers it.

Whatever happens is reported to the cloud as an `event` record (`model_update`, with the
status `running` or `refused` and the reason), and the running versions are in every
health record (`inference`). A refused model changes nothing: the old one keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fogline import ota, sandbox
from fogline.model import Model, ModelError
from gateway.metrics import Metrics
from gateway.operators.infer import Infer

log = logging.getLogger("fogline.gateway.models")

Report = Callable[[dict[str, Any]], None]
INBOX_MAX = 1024  # chunks waiting to be assembled (a 16 MiB model in 16 KiB chunks)
REPORTS_PER_MINUTE = 10
MAX_CHUNK_PAYLOAD = 4 * ota.CHUNK_SIZE  # a header line and one chunk fit well within


class ModelUpdates:
    def __init__(
        self,
        gateway_id: str,
        steps: dict[str, Infer],
        directory: Path,
        report: Report,
        metrics: Metrics,
        *,
        limits: ota.AssemblyLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subscription = ota.subscription(gateway_id)
        self._prefix = self.subscription[:-1]
        self._steps = steps
        self._dir = directory
        self._report = report
        self._metrics = metrics
        self._assembler = ota.Assembler(
            limits, steps=frozenset(steps), clock=clock, on_expired=self._expired
        )
        # Refused chunks are each counted, but reported (an outbox event) once per upload and
        # at most REPORTS_PER_MINUTE times a minute: junk must not fill the outbox.
        self._reported: set[tuple[str, str]] = set()
        self._report_times: deque[float] = deque()
        # (sha256, serial) refused: retained copies come back on every reconnect.
        self._refused_uploads: set[tuple[str, int]] = set()
        # step -> (serial, sha256) of the last upload it took: older ones are refused.
        self._taken: dict[str, tuple[int, str]] = {}
        # Bounded: chunks wait here while a model is checked (a quarter second or more).
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(INBOX_MAX)

    def wants(self, topic: str) -> bool:
        return topic.startswith(self._prefix)

    def on_message(self, topic: str, payload: bytes) -> None:
        if not payload:  # an empty retained payload only clears a chunk topic
            return
        if len(payload) > MAX_CHUNK_PAYLOAD:
            self._metrics.rejects[("model_update", "chunk_too_large")] += 1
            return
        try:
            self._inbox.put_nowait(payload)
        except asyncio.QueueFull:
            self._metrics.rejects[("model_update", "inbox_full")] += 1

    def expire(self) -> None:
        """Drop transfers incomplete for too long (each tick: not only when a chunk comes)."""
        self._assembler.expire()

    def restore(self) -> None:
        """Run the models kept from earlier updates (at start, before any reading)."""
        for step_id, op in self._steps.items():
            self._taken[step_id] = self._read_taken(step_id)
            path = self._path(step_id)
            if not path.exists():
                continue
            try:
                sandbox.check(path.read_bytes(), self._limits(op))
                op.swap(Model.from_file(path))
            except (ModelError, OSError) as exc:
                log.warning("%s: not running the kept model %s: %s", step_id, path, exc)
                path.unlink(missing_ok=True)
                continue
            log.info("%s: running model %s", step_id, op.model.info.version)

    async def run(self) -> None:
        while True:
            payload = await self._inbox.get()
            try:
                whole = self._assembler.add(payload)
            except ota.ChunkError as exc:
                manifest = exc.manifest
                self._metrics.rejects[("model_update", "bad_chunk")] += 1
                reason = str(exc)
                if not self._may_report(manifest, reason):
                    continue  # junk: counted, not reported again
                self._refused(
                    manifest or ota.Manifest("?", "?", "", 0, 0),
                    f"damaged in transit: {exc}" if exc.damaged else reason,
                    again=exc.damaged,
                )
                continue
            if whole is not None:
                await self._install(*whole)

    async def _install(self, manifest: ota.Manifest, data: bytes) -> None:
        step, version, digest = manifest.step, manifest.version, manifest.sha256
        op = self._steps.get(step)
        if op is None:
            known = ", ".join(self._steps) or "none"
            self._refused(manifest, f"no infer step '{step}' (infer steps: {known})")
            return
        if (digest, manifest.serial) in self._refused_uploads:
            return  # already refused (a retained copy after a reconnect)
        serial, taken_sha = self._taken.get(step, (0, ""))
        if manifest.serial < serial or (manifest.serial == serial and digest != taken_sha):
            self._metrics.rejects[("model_update", "not_newer")] += 1
            self._refused(
                manifest,
                f"{ota.NOT_NEWER}: upload {manifest.serial}, and the step took upload "
                f"{serial} (an old model replayed?); to roll back, upload the old model again",
            )
            return
        if op.model.info.sha256 == digest:
            if manifest.serial > serial:  # the running bytes, uploaded again: remember it
                await self._take(manifest, op.model.info.version)
            return  # already running (a retained copy after a reconnect)
        try:
            verdict = await sandbox.check_async(data, self._limits(op))
            log.info(
                "%s: model v%s passed its check: %.2f ms a batch, %.0f MiB",
                step,
                version,
                verdict.batch_seconds * 1000,
                verdict.peak_rss_bytes / 2**20,
            )
            model = await asyncio.to_thread(_load, data, f"{step} v{version}")
            op.swap(model)
        except ModelError as exc:
            self._refused(manifest, str(exc))
            return
        except Exception as exc:  # a model the runtime chokes on must not stop the gateway
            log.exception("%s: loading model v%s failed", step, version)
            self._refused(manifest, f"could not load: {exc!r}")
            return
        try:
            await asyncio.to_thread(_keep, self._path(step), data)
        except OSError as exc:  # it runs; only a restart would fall back to the pipeline's
            log.warning("%s: running model v%s, but could not keep it: %s", step, version, exc)
        log.info("%s: now running model %s v%s", step, model.info.name, model.info.version)
        await self._take(manifest, model.info.version)

    async def _take(self, manifest: ota.Manifest, version: str) -> None:
        """Remember the upload the step now runs (durably: older ones stay refused after a
        restart) and tell the cloud."""
        step = manifest.step
        self._taken[step] = (manifest.serial, manifest.sha256)
        taken = orjson.dumps({"serial": manifest.serial, "sha256": manifest.sha256})
        try:
            await asyncio.to_thread(_keep, self._taken_path(step), taken)
        except OSError as exc:
            log.warning("%s: could not keep the upload serial: %s", step, exc)
        self._metrics.outputs["model_updates_running"] += 1
        self._report(
            {
                "event": "model_update",
                "step": step,
                "version": version,
                "sha256": manifest.sha256,
                "serial": manifest.serial,
                "status": "running",
            }
        )

    def _refused(self, manifest: ota.Manifest, reason: str, *, again: bool = False) -> None:
        """Report a refusal; unless `again` (bytes damaged on the way: a retry may succeed),
        the same upload is not looked at again."""
        step, version, digest = manifest.step, manifest.version, manifest.sha256
        if digest and not again:
            self._refused_uploads.add((digest, manifest.serial))
        log.warning("%s: refused model v%s: %s; the running model stays", step, version, reason)
        self._metrics.rejects[("model_update", "refused")] += 1
        event: dict[str, Any] = {
            "event": "model_update",
            "step": step,
            "version": version,
            "sha256": digest,
            "status": "refused",
            "reason": reason,
        }
        if manifest.serial:
            event["serial"] = manifest.serial
        self._report(event)

    def _may_report(self, manifest: ota.Manifest | None, reason: str) -> bool:
        seen = (manifest.sha256, reason) if manifest else ("", reason)
        if seen in self._reported:
            return False
        now = time.monotonic()
        times = self._report_times
        while times and now - times[0] > 60:
            times.popleft()
        if len(times) >= REPORTS_PER_MINUTE:
            return False
        times.append(now)
        if len(self._reported) >= 1000:
            self._reported.clear()
        self._reported.add(seen)
        return True

    @staticmethod
    def _limits(op: Infer) -> sandbox.Limits:
        return sandbox.Limits(budget_seconds=op.config.model_budget)

    def _expired(self, manifest: ota.Manifest, reason: str) -> None:
        """An incomplete transfer the assembler gave up on (counted, reported)."""
        self._metrics.rejects[("model_update", "chunks_dropped")] += 1
        log.warning(
            "%s: dropped an incomplete model v%s: %s", manifest.step, manifest.version, reason
        )

    def _path(self, step: str) -> Path:
        return self._dir / f"{step}.tflite"

    def _taken_path(self, step: str) -> Path:
        return self._dir / f"{step}.upload"

    def _read_taken(self, step: str) -> tuple[int, str]:
        """(serial, sha256) of the last upload the step took; (0, "") if none (or unreadable:
        logged, and then any signed upload is newer)."""
        path = self._taken_path(step)
        try:
            taken = orjson.loads(path.read_bytes())
            return int(taken["serial"]), str(taken["sha256"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: ignoring %s: %s", step, path, exc)
        return 0, ""


def _load(data: bytes, source: str) -> Model:
    model = Model(data, source=source)
    model.self_test()
    return model


def _keep(path: Path, data: bytes) -> None:
    """Replace the kept model in one step: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
