"""Models over the air, the cloud's half: store an upload, publish it, follow what the gateway says.

`PUT /api/gateways/<gateway>/models/<step>` hands the bytes here. The gateway must exist and
its latest health must name an `infer` step of that id, before the bytes are even looked
at; then they are loaded, self-tested and timed in a limited child process
(`fogline.sandbox`: one damaged upload used to segfault the cloud), and only then loaded
here for their metadata. What the cloud already knows the gateway would refuse is answered
409 at once, not found later in `GET .../models`: bytes it refused before, labels other
than the running model's, inputs the step does not receive (its health names them).
Nothing is kept or sent before all of that passed. Then the chunks of
`fogline.ota` are published retained, QoS 1, on the cloud's own downlink connection (the
one acks leave on), so that a gateway that is away gets the model when it comes back;
chunk topics beyond the new count, left by a longer earlier upload, are cleared with
empty retained payloads. Once the broker has taken them all (PUBACK), the upload is
stored as `published`: the API answers after that, so whoever connects then gets it.

The gateway answers with `model_update` events (`running`, or `refused` with the reason),
matched to uploads by sha256 as they are stored (`apply_model_events`, in the drain's
transaction); the model each step runs is in its health records.

Uploads of one replica take turns (the count of topics to clear is read before publishing
and the upload stored after it); uploads to one step through two replicas at the same
instant may leave the longer one's extra chunks retained, which gateways ignore (another
sha256) and the next upload clears.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, or_, select, update
from sqlalchemy.orm import Session

from cloud.db import writing
from cloud.models import (
    MAX_GATEWAY,
    MAX_MODEL,
    MAX_STEP,
    MAX_VERSION,
    Activity,
    Gateway,
    ModelUpload,
)
from cloud.parse import is_number
from cloud.queries import inference_steps, upload_out
from cloud.schemas import InferenceStep, ModelUploadOut
from fogline import ota, sandbox
from fogline.model import Model, ModelError
from fogline.mqtt import MqttLink

if TYPE_CHECKING:
    from cloud.trust import CloudTrust

log = logging.getLogger("fogline.cloud.model_updates")

MAX_MODEL_BYTES = 16 * 1024 * 1024
REPORTED = ("running", "refused")
CONFIRM_WITHIN = 10.0  # seconds the broker has to acknowledge one window of chunks
# Chunks in flight at once: within mosquitto's receive maximum (20), which acks share.
WINDOW = 10
AWAY = "the broker is not taking messages from the cloud; try again later"
# A refusal that a retry may cure (gateway/model_updates.py says so for damaged chunks).
DAMAGED = "damaged in transit"


class UploadError(Exception):
    """An upload refused; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_segment(what: str, value: str, limit: int) -> None:
    """A gateway id or step name that can stand as one MQTT topic level."""
    if not 0 < len(value) <= limit or any(c in value for c in "/+#\x00"):
        raise UploadError(
            422, f"{what} must be 1 to {limit} characters, without '/', '+', '#' or NUL"
        )


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise UploadError(413, f"a model may have {limit} bytes at most, got {size} or more")


def load(data: bytes) -> Model:
    """The model the bytes hold, test-invoked; 422 says why it will not do."""
    try:
        model = Model(data, source="upload")
        model.self_test()
    except ModelError as exc:
        raise UploadError(422, f"not a loadable Fogline model: {exc}") from exc
    return model


class ModelUpdates:
    """Uploads: checked, published retained on `link`, stored."""

    def __init__(
        self,
        engine: Engine,
        link: MqttLink,
        clock: Callable[[], float],
        chunk_size: int = ota.CHUNK_SIZE,
        max_bytes: int = MAX_MODEL_BYTES,
    ) -> None:
        self.engine = engine
        self.link = link
        self.chunk_size = chunk_size
        self.max_bytes = max_bytes
        self._clock = clock
        self._turn = asyncio.Lock()
        self.trust: CloudTrust | None = None  # signs each chunk's header (cloud.trust)
        self.limits = sandbox.Limits()

    async def upload(
        self, gateway: str, step: str, data: bytes, version: str | None, actor: str
    ) -> ModelUploadOut:
        """Check, publish and store one upload, audited as `actor`'s (an activity row with
        no alert); UploadError says why not."""
        check_segment("gateway id", gateway, MAX_GATEWAY)
        check_segment("step", step, MAX_STEP)
        check_size(len(data), self.max_bytes)
        described = await asyncio.to_thread(self._target, gateway, step, data)
        try:
            await sandbox.check_async(data, self.limits)
        except ModelError as exc:
            raise UploadError(422, f"not a loadable Fogline model: {exc}") from exc
        model = await asyncio.to_thread(load, data)
        refused = _would_refuse(model, described)
        if refused is not None:
            raise UploadError(409, f"gateway {gateway!r} would refuse it: {refused}")
        version = model.info.version if version is None else version
        if not 0 < len(version) <= MAX_VERSION:
            raise UploadError(422, f"version must be 1 to {MAX_VERSION} characters")
        async with self._turn:
            previous, running, last = await asyncio.to_thread(self._before, gateway, step)
            # Counts up even after a database reset (gateways remember the last serial).
            serial = max(last + 1, int(self._clock() * 1_000_000))
            payloads = ota.chunks(step, version, data, self.chunk_size, serial=serial)
            await self._publish(gateway, step, payloads, previous)
            row = ModelUpload(
                gateway_id=gateway,
                step=step,
                name=model.info.name[:MAX_MODEL],
                version=version,
                serial=serial,
                sha256=model.info.sha256,
                size=len(data),
                chunks=len(payloads),
                data=data,
                uploaded_at=self._clock(),
                status="published",
                reason=None,
                reported_at=None,
            )
            await asyncio.to_thread(self._store, row, actor)
        log.info(
            "model %s %s (%d bytes, %d chunks) published for %s/%s",
            model.info.name,
            version,
            len(data),
            len(payloads),
            gateway,
            step,
        )
        return upload_out(row, running)

    def _target(self, gateway: str, step: str, data: bytes) -> dict[str, Any]:
        """404 unless the gateway exists and its latest health names the infer step; 409 if
        it refused these very bytes before (a retry cannot change its mind, unless they were
        damaged on the way). What the health says the step runs."""
        with self.engine.connect() as conn:
            health = conn.execute(select(Gateway.health).where(Gateway.id == gateway)).first()
            if health is None:
                raise UploadError(404, f"unknown gateway {gateway!r}")
            steps = [s.step for s in inference_steps(health[0])]
            if step not in steps:
                known = ", ".join(steps) or "none reported"
                raise UploadError(404, f"gateway {gateway!r} has no infer step {step!r} ({known})")
            reason = conn.execute(
                select(ModelUpload.reason)
                .where(
                    ModelUpload.gateway_id == gateway,
                    ModelUpload.step == step,
                    ModelUpload.sha256 == hashlib.sha256(data).hexdigest(),
                    ModelUpload.status == "refused",
                )
                .order_by(ModelUpload.id.desc())
                .limit(1)
            ).scalar()
        if reason is not None and not reason.startswith((DAMAGED, ota.NOT_NEWER)):
            raise UploadError(409, f"gateway {gateway!r} refused this model before: {reason}")
        described: dict[str, Any] = health[0]["inference"][step]
        return described

    def _before(self, gateway: str, step: str) -> tuple[int, list[InferenceStep], int]:
        """The most chunk topics earlier uploads to this step may have left retained, the
        steps the gateway's latest health describes, and the step's last upload serial."""
        with self.engine.connect() as conn:
            health = conn.execute(select(Gateway.health).where(Gateway.id == gateway)).first()
            if health is None:
                raise UploadError(404, f"unknown gateway {gateway!r}")
            most, last = conn.execute(
                select(func.max(ModelUpload.chunks), func.max(ModelUpload.serial)).where(
                    ModelUpload.gateway_id == gateway, ModelUpload.step == step
                )
            ).one()
        return int(most or 0), inference_steps(health[0]), int(last or 0)

    async def _publish(self, gateway: str, step: str, payloads: list[bytes], previous: int) -> None:
        """Every chunk, then empty payloads over the topics of older, longer uploads, a
        window at a time, each acknowledged by the broker before the next; 503 if not.

        Cut off half-way, the gateway holds an incomplete set of another sha256, which it
        ignores, and keeps running what it runs.
        """
        if self.trust is not None:
            payloads = [self.trust.sign_chunk(p, gateway) for p in payloads]
        messages = [(ota.topic(gateway, step, i), p) for i, p in enumerate(payloads)]
        messages += [(ota.topic(gateway, step, i), b"") for i in range(len(payloads), previous)]
        for start in range(0, len(messages), WINDOW):
            for topic, payload in messages[start : start + WINDOW]:
                if not self.link.publish(topic, payload, 1, retain=True):
                    raise UploadError(503, AWAY)
            if not await self.link.drain(within=CONFIRM_WITHIN):
                raise UploadError(503, AWAY)

    def _store(self, row: ModelUpload, actor: str) -> None:
        with writing(self.engine) as conn, Session(conn) as session:
            session.add(row)
            session.flush()  # assigns row.id; `writing` commits
            detail = {
                "upload": row.id,
                "gateway": row.gateway_id,
                "step": row.step,
                "name": row.name,
                "version": row.version,
                "sha256": row.sha256,
                "size": row.size,
            }
            session.add(
                Activity(
                    at=row.uploaded_at,
                    actor=actor,
                    action="model_upload",
                    alert=None,
                    detail=detail,
                )
            )
            session.flush()


def _would_refuse(model: Model, running: dict[str, Any]) -> str | None:
    """The gateway's own check (`ModelInfo.replaces`) against the labels and inputs its
    health says the step's model has; None when the health does not say (older gateways)."""
    labels, inputs = running.get("labels"), running.get("inputs")
    if not isinstance(labels, list) or not isinstance(inputs, list):
        return None
    return model.info.replaces([str(x) for x in labels], [str(x) for x in inputs])


def apply_model_events(
    conn: Connection, rows: list[tuple[str, int, str, dict[str, Any]]], now: float
) -> None:
    """Move the uploads that `model_update` events name (by gateway, step and sha256, and
    serial when the event has one: a replayed old upload refused names only that upload).

    The latest report wins, by the event's `ts`: a retransmitted older event changes nothing.
    """
    for gateway, _, _, data in rows:
        status, step, sha256 = data.get("status"), data.get("step"), data.get("sha256")
        if (
            data.get("event") != "model_update"
            or status not in REPORTED
            or not isinstance(step, str)
            or not isinstance(sha256, str)
        ):
            continue
        ts = data.get("ts")
        at = float(ts) if is_number(ts) else now
        reason = data.get("reason")
        serial = data.get("serial")
        which = [
            ModelUpload.gateway_id == gateway,
            ModelUpload.step == step,
            ModelUpload.sha256 == sha256,
            or_(ModelUpload.reported_at.is_(None), ModelUpload.reported_at <= at),
        ]
        if isinstance(serial, int) and not isinstance(serial, bool):
            which.append(ModelUpload.serial == serial)
        conn.execute(
            update(ModelUpload)
            .where(*which)
            .values(
                status=status,
                reason=reason if status == "refused" and isinstance(reason, str) else None,
                reported_at=at,
            )
        )
