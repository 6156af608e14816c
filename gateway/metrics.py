"""Counters kept as plain ints on the hot path, rendered for Prometheus only when scraped.

A client library's per-increment locking costs more than the work it counts here, so
the engine bumps dict entries and this module turns them into the text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import orjson

from fogline.envelope import KINDS
from fogline.prometheus import Exposition, Histogram, Labels

log = logging.getLogger("fogline.gateway.metrics")


class RateLimitedLog:
    """At most one log line per reason every `every` seconds, with a count of the rest."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self._log = logger
        self._every = every
        self._last: dict[str, float] = {}
        self._suppressed: defaultdict[str, int] = defaultdict(int)

    def warning(self, reason: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) < self._every:
            self._suppressed[reason] += 1
            return
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        self._log.warning(
            "%s%s", text, f" ({more} more like this since the last report)" if more else ""
        )


UPLINK_COUNTERS = {
    "records_sent": "Records sent to the cloud for the first time.",
    "records_resent": "Records sent again because their ack was overdue.",
    "payload_bytes": "Bytes of batches sent for the first time (compressed JSON).",
    "wire_bytes": "Bytes of MQTT publish packets written, first sends and resends.",
    "replayed_bytes": "Bytes the MQTT client sent again after a reconnect.",
    "resent_batches": "Batches sent again because the cloud's ack was overdue.",
    "ack_timeouts": "Cloud acks that did not come within the timeout.",
    "acked_records": "Records the cloud acknowledged as stored.",
    "stale_acks": "Acks naming seqs that were not waiting (repeated, stale or forged).",
    "bad_acks": "Acks that could not be read.",
    "commit_failures": "Outbox commits that failed (a full disk, an I/O error), then retried.",
}

RECORDS_OUT = (*KINDS, "action")  # the `outputs` keys that are records out
# Seconds from a reading read off the socket to the action it decided (the time it waited in
# the socket while the event loop was busy is not seen; the critical stop's target is 20 ms
# at the 99th percentile): fine below 50 ms, where the target is judged.
ACTION_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class Metrics:
    """Everything the gateway counts. Keys are label tuples, values plain numbers."""

    messages_in: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_in: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejects: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    step_in: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    step_out: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    step_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    step_batches: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    outputs: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    queue_dropped: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    late: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    reconnects: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    uplink: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    state_evicted: defaultdict[tuple[str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    action_latency: Histogram = field(default_factory=lambda: Histogram(ACTION_BUCKETS))
    gauges: dict[str, Callable[[], dict[Labels, float]]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def total_in(self) -> int:
        return sum(self.messages_in.values())

    def total_rejects(self) -> int:
        return sum(self.rejects.values())

    def total_out(self) -> int:
        """Records out: sent to the cloud, or published as actions. `outputs` also counts
        what did not go out (an action while the broker was away, a model swapped in)."""
        return sum(self.outputs.get(kind, 0) for kind in RECORDS_OUT)

    def snapshot(self) -> dict[str, object]:
        """A compact summary for the health record."""
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "messages_in": dict(self.messages_in),
            "rejects": {f"{step}:{reason}": n for (step, reason), n in self.rejects.items()},
            "outputs": dict(self.outputs),
            "late": dict(self.late),
            "queue_dropped": dict(self.queue_dropped),
            "reconnects": dict(self.reconnects),
            "state_evicted": {f"{step}:{why}": n for (step, why), n in self.state_evicted.items()},
        }

    def render(self) -> str:
        exposition = Exposition("fogline_")
        family = exposition.family

        family(
            "messages_in_total",
            "counter",
            "Messages received, per source.",
            {(("source", k),): v for k, v in self.messages_in.items()},
        )
        family(
            "bytes_in_total",
            "counter",
            "Payload bytes received, per source.",
            {(("source", k),): v for k, v in self.bytes_in.items()},
        )
        family(
            "rejects_total",
            "counter",
            "Rejected readings, per step and reason.",
            {(("step", s), ("reason", r)): v for (s, r), v in self.rejects.items()},
        )
        family(
            "step_records_in_total",
            "counter",
            "Records into each step.",
            {(("step", k),): v for k, v in self.step_in.items()},
        )
        family(
            "step_records_out_total",
            "counter",
            "Records out of each step.",
            {(("step", k),): v for k, v in self.step_out.items()},
        )
        family(
            "step_seconds_total",
            "counter",
            "Time spent in each step.",
            {(("step", k),): round(v, 6) for k, v in self.step_seconds.items()},
        )
        family(
            "step_batches_total",
            "counter",
            "Micro-batches through each step.",
            {(("step", k),): v for k, v in self.step_batches.items()},
        )
        family(
            "outputs_total",
            "counter",
            "Records sent, per output kind.",
            {(("kind", k),): v for k, v in self.outputs.items()},
        )
        family(
            "late_total",
            "counter",
            "Late readings, per window step.",
            {(("step", k),): v for k, v in self.late.items()},
        )
        family(
            "queue_dropped_total",
            "counter",
            "Readings dropped by a full queue.",
            {(("queue", k),): v for k, v in self.queue_dropped.items()},
        )
        family(
            "reconnects_total",
            "counter",
            "Broker reconnections, per client.",
            {(("client", k),): v for k, v in self.reconnects.items()},
        )
        family(
            "state_evicted_total",
            "counter",
            "Per-key operator state dropped, per step and reason (max_keys, idle).",
            {(("step", s), ("reason", r)): v for (s, r), v in self.state_evicted.items()},
        )
        exposition.histogram(
            "action_latency_seconds",
            "From the oldest reading of an action's micro-batch off the socket to the publish.",
            self.action_latency,
        )
        for name, help_text in UPLINK_COUNTERS.items():
            family(f"uplink_{name}_total", "counter", help_text, {(): self.uplink.get(name, 0)})
        for name, read in self.gauges.items():
            family(name, "gauge", name.replace("_", " ").capitalize() + ".", read())
        family(
            "uptime_seconds",
            "gauge",
            "Seconds since start.",
            {(): round(time.time() - self.started, 3)},
        )
        return exposition.text()


class ListenError(Exception):
    """The metrics server cannot have its address (a port in use, a host not this
    machine's): a mistake in the flags, which the CLI says in one line."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host, self.port, self.reason = host, port, reason


def os_reason(exc: OSError) -> str:
    """`Address already in use`, not asyncio's `[Errno 98] error while attempting to bind
    on address ('127.0.0.1', 9108): address already in use`."""
    if exc.errno is not None and exc.errno > 0:  # a resolver's errors are negative
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


class MetricsServer:
    """`/metrics` (Prometheus text) and three health answers over a minimal HTTP server.

    `/livez`: the process answers (what a supervisor should restart on; restarting never
    cures a bad link). `/readyz`: readings are being taken (the edge broker granted our
    subscriptions). `/healthz`: everything, as JSON, 200 when `ok` and 503 when `degraded`
    (the uplink does not keep up: its reasons say why) or `down` (no edge broker).
    """

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        ready: Callable[[], bool],
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._ready = ready
        self._health = health or (lambda: {"status": "ok" if ready() else "down", "reasons": []})
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None  # noqa: S101
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(self._handle, self._host, self._port)
        except OSError as exc:
            raise ListenError(self._host, self._port, os_reason(exc)) from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = request.split(b" ", 2)
            path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
            path = path.split("?", 1)[0]
            if path == "/metrics":
                status, ctype, body = "200 OK", "text/plain; version=0.0.4", self._metrics.render()
            elif path == "/healthz":
                health = self._health()
                ok = health.get("status") == "ok"
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "application/json", orjson.dumps(health).decode() + "\n"
            elif path == "/readyz":
                ok = self._ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype = "text/plain"
                body = "ready\n" if ok else "not ready: not subscribed to the edge broker\n"
            elif path == "/livez":
                status, ctype, body = "200 OK", "text/plain", "alive\n"
            else:
                status, ctype = "404 Not Found", "text/plain"
                body = "try /metrics, /healthz, /readyz or /livez\n"
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
