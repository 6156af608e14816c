"""Model updates over the air: chunks in on `fogline/<id>/down/model/#`, a new model running.

The cloud publishes a model for one `infer` step as retained chunks (`fogline.ota`). Here
they are assembled and checked (size, sha256), loaded and test-invoked off the event loop,
checked against the step (same labels, inputs the step receives), and swapped in between
two micro-batches: no reading waits for a model to load and none is dropped. The model is
kept in the data directory, so a restart runs it again before the broker says anything.

Whatever happens is reported to the cloud as an `event` record (`model_update`, with the
status `running` or `refused` and the reason), and the running versions are in every
health record (`inference`). A refused model changes nothing: the old one keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fogline import ota
from fogline.model import Model, ModelError
from gateway.metrics import Metrics
from gateway.operators.infer import Infer

log = logging.getLogger("fogline.gateway.models")

Report = Callable[[dict[str, Any]], None]


class ModelUpdates:
    def __init__(
        self,
        gateway_id: str,
        steps: dict[str, Infer],
        directory: Path,
        report: Report,
        metrics: Metrics,
    ) -> None:
        self.subscription = ota.subscription(gateway_id)
        self._prefix = self.subscription[:-1]
        self._steps = steps
        self._dir = directory
        self._report = report
        self._metrics = metrics
        self._assembler = ota.Assembler()
        self._refused_shas: set[str] = set()  # retained copies come back on every reconnect
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def wants(self, topic: str) -> bool:
        return topic.startswith(self._prefix)

    def on_message(self, topic: str, payload: bytes) -> None:
        if payload:  # an empty retained payload only clears a chunk topic
            self._inbox.put_nowait(payload)

    def restore(self) -> None:
        """Run the models kept from earlier updates (at start, before any reading)."""
        for step_id, op in self._steps.items():
            path = self._path(step_id)
            if not path.exists():
                continue
            try:
                op.swap(Model.from_file(path))
            except ModelError as exc:
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
                self._refused(
                    manifest.step if manifest else "?",
                    manifest.version if manifest else "?",
                    manifest.sha256 if manifest else "",
                    f"damaged in transit: {exc}",
                    again=True,
                )
                continue
            if whole is not None:
                await self._install(*whole)

    async def _install(self, manifest: ota.Manifest, data: bytes) -> None:
        step, version, digest = manifest.step, manifest.version, manifest.sha256
        op = self._steps.get(step)
        if op is None:
            known = ", ".join(self._steps) or "none"
            self._refused(step, version, digest, f"no infer step '{step}' (infer steps: {known})")
            return
        if op.model.info.sha256 == digest or digest in self._refused_shas:
            return  # already running, or already refused (a retained copy after a reconnect)
        try:
            model = await asyncio.to_thread(_load, data, f"{step} v{version}")
            op.swap(model)
        except ModelError as exc:
            self._refused(step, version, digest, str(exc))
            return
        except Exception as exc:  # a model the runtime chokes on must not stop the gateway
            log.exception("%s: loading model v%s failed", step, version)
            self._refused(step, version, digest, f"could not load: {exc!r}")
            return
        try:
            await asyncio.to_thread(_keep, self._path(step), data)
        except OSError as exc:  # it runs; only a restart would fall back to the pipeline's
            log.warning("%s: running model v%s, but could not keep it: %s", step, version, exc)
        log.info("%s: now running model %s v%s", step, model.info.name, model.info.version)
        self._metrics.outputs["model_updates_running"] += 1
        self._report(
            {
                "event": "model_update",
                "step": step,
                "version": model.info.version,
                "sha256": digest,
                "status": "running",
            }
        )

    def _refused(
        self, step: str, version: str, digest: str, reason: str, *, again: bool = False
    ) -> None:
        """Report a refusal; unless `again` (bytes damaged on the way: a retry may succeed),
        the same bytes are not looked at again."""
        if digest and not again:
            self._refused_shas.add(digest)
        log.warning("%s: refused model v%s: %s; the running model stays", step, version, reason)
        self._metrics.rejects[("model_update", "refused")] += 1
        self._report(
            {
                "event": "model_update",
                "step": step,
                "version": version,
                "sha256": digest,
                "status": "refused",
                "reason": reason,
            }
        )

    def _path(self, step: str) -> Path:
        return self._dir / f"{step}.tflite"


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
