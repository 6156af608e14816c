"""Runs a pipeline's steps over micro-batches. No I/O here: sources feed it, outputs drain it.

One pass takes a batch from the source, hands each step the records of the stream it reads
(the step above, or the one named by `from:`), and gives each output what its streams
produced. Timers (`tick`) and shutdown (`flush`) make the same pass with what steps
release on their own, such as closed windows.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.metrics import Metrics, RateLimitedLog
from gateway.operators import REGISTRY
from gateway.operators.base import Operator, StepContext
from gateway.record import Record
from gateway.spec import SOURCE, Pipeline
from gateway.state import fingerprint

log = logging.getLogger("fogline.gateway.engine")

DeadLetter = Callable[[dict[str, Any]], None]


class Output(Protocol):
    def emit(self, records: list[Record]) -> None:
        """Take records; never block (publish or enqueue)."""


class Engine:
    def __init__(
        self,
        pipeline: Pipeline,
        clock: Clock,
        metrics: Metrics,
        outputs: list[tuple[list[str], Output]],
        dead_letter: DeadLetter | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.metrics = metrics
        self._dead_letter = dead_letter
        self._log = RateLimitedLog(log)
        self._pass: defaultdict[str, list[Record]] = defaultdict(list)
        self.passes = 0  # batches and timers run: state may have changed when this moves
        # Per-key state dropped by (step, reason): `max_keys` or `idle` (gateway/keyed.py).
        self.evicted = metrics.state_evicted
        self.steps: list[tuple[str, str, str, Operator]] = []  # (id, from, path, operator)
        for spec in pipeline.steps:
            ctx = StepContext(
                path=spec.path,
                step_id=spec.id,
                key_fields=pipeline.key,
                clock=clock,
                reject=self._rejecter(spec.id, spec.path, REGISTRY[spec.op].ordinary_rejects),
                side=self._sider(spec.id),
                evicted=self._evicter(spec.id, spec.path),
            )
            self.steps.append((spec.id, spec.from_, spec.path, REGISTRY[spec.op](spec.config, ctx)))
        # An output gets each stream it reads as soon as the step making it has run in a
        # pass, not after every step: a local stop action does not wait for the windows,
        # features and models downstream of the alert that decided it.
        produced_by = {SOURCE: -1}
        for i, spec in enumerate(pipeline.steps):
            produced_by[spec.id] = i
            for side in REGISTRY[spec.op].side_streams:
                produced_by[f"{spec.id}.{side}"] = i
        self._emit_after: defaultdict[int, list[tuple[list[str], Output]]] = defaultdict(list)
        for from_list, output in outputs:
            by_step: defaultdict[int, list[str]] = defaultdict(list)
            for name in from_list:
                by_step[produced_by.get(name, len(self.steps))].append(name)
            for i, names in by_step.items():
                self._emit_after[i].append((names, output))
        metrics.gauges["open_state"] = lambda: {
            (("step", step_id),): op.open_state() for step_id, _, _, op in self.steps
        }

    def stateful(self) -> dict[str, tuple[str, Operator]]:
        """Step id -> (fingerprint, operator), for checkpoints (gateway/state.py)."""
        return {
            spec.id: (
                fingerprint(spec.op, spec.config.model_dump(mode="json"), self.pipeline.key),
                op,
            )
            for spec, (_, _, _, op) in zip(self.pipeline.steps, self.steps, strict=True)
        }

    # -- the three ways in --------------------------------------------------------------

    def process(self, batch: list[Record]) -> None:
        """One micro-batch of decoded readings from the sources."""
        if batch:
            self._run({SOURCE: batch}, None)

    def tick(self, now: float) -> None:
        """Timers: release what is due at `now` (e.g. windows that closed)."""
        self._run({}, lambda op: op.on_timer(now))

    def pending(self) -> bool:
        """Some step holds records that are due: `tick` again, now."""
        return any(op.pending() for _, _, _, op in self.steps)

    def flush(self) -> None:
        """Shutdown: release everything still held, open windows included."""
        self._run({}, lambda op: op.flush())

    # -- the pass -------------------------------------------------------------------------

    def _run(
        self, start: dict[str, list[Record]], release: Callable[[Operator], list[Record]] | None
    ) -> None:
        self.passes += 1
        streams = self._pass
        streams.clear()
        streams.update(start)
        metrics = self.metrics
        emit_after = self._emit_after
        self._emit(emit_after.get(-1, ()))
        for i, (step_id, from_, path, op) in enumerate(self.steps):
            batch = streams.get(from_)
            out: list[Record] = []
            if release is not None:
                try:
                    out = release(op)
                except Exception:
                    log.exception("%s: failed to release timed or held records", path)
                    metrics.rejects[(step_id, "step_error")] += 1
            if batch:
                t0 = time.perf_counter()
                try:
                    out += op.process(batch)
                except Exception:
                    # A bug in a step must not stop the gateway: count it and go on.
                    log.exception("%s: failed on a batch of %d records", path, len(batch))
                    metrics.rejects[(step_id, "step_error")] += len(batch)
                metrics.step_seconds[step_id] += time.perf_counter() - t0
                metrics.step_in[step_id] += len(batch)
                metrics.step_batches[step_id] += 1
            if out:
                metrics.step_out[step_id] += len(out)
                streams[step_id].extend(out)
            if i in emit_after:
                self._emit(emit_after[i])
        self._emit(emit_after.get(len(self.steps), ()))
        streams.clear()

    def _emit(self, outputs: Iterable[tuple[list[str], Output]]) -> None:
        streams = self._pass
        for from_list, output in outputs:
            records = [r for name in from_list for r in streams.get(name, ())]
            if records:
                try:
                    output.emit(records)
                except Exception:
                    log.exception("an output failed on %d records", len(records))
                    self.metrics.rejects[("output", "output_error")] += len(records)

    # -- rejects and side streams ---------------------------------------------------------

    def _rejecter(
        self, step_id: str, path: str, ordinary: frozenset[str]
    ) -> Callable[[Record, str, str], None]:
        told: set[str] = set()

        def reject(record: Record, reason: str, detail: str) -> None:
            self.metrics.rejects[(step_id, reason)] += 1
            text = f"{path}: rejected a record of {'/'.join(record.key)}: {detail}"
            if reason not in ordinary:
                self._log.warning(reason, text)
            elif reason in told:
                log.debug("%s", text)
            else:  # a device's first window, say: normal, and said once
                told.add(reason)
                log.info(
                    "%s (%s: normal while a device starts; counted in "
                    "fogline_rejects_total, not logged again)",
                    text,
                    reason,
                )
            if self._dead_letter is not None:
                self._dead_letter(
                    {
                        "step": path,
                        "reason": reason,
                        "detail": detail,
                        "key": list(record.key),
                        "ts": record.ts,
                        "fields": record.fields,
                    }
                )

        return reject

    def _evicter(self, step_id: str, path: str) -> Callable[[str, int], None]:
        def evicted(reason: str, n: int) -> None:
            self.evicted[(step_id, reason)] += n
            if reason == "max_keys":  # idle expiry is housekeeping; a full step is news
                self._log.warning(
                    f"evicted:{step_id}",
                    f"{path}: max_keys reached: dropped the state of the least recently seen key",
                )

        return evicted

    def _sider(self, step_id: str) -> Callable[[str, Record], None]:
        def side(stream: str, record: Record) -> None:
            if stream == "late":
                self.metrics.late[step_id] += 1
            self._pass[f"{step_id}.{stream}"].append(record)

        return side

    def reject_raw(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        """A message that never became a record (bad JSON, unknown topic, too large...)."""
        self.metrics.rejects[("source", reason)] += 1
        self._log.warning(reason, f"source: rejected a message on '{topic}': {detail}")
        if self._dead_letter is not None:
            self._dead_letter(
                {
                    "step": "source",
                    "reason": reason,
                    "detail": detail,
                    "topic": topic,
                    "payload": payload,
                }
            )
