"""The gateway process: wires sources, engine, outputs and uplink, and shuts down cleanly.

All long-lived work runs in one TaskGroup of named tasks. On SIGINT/SIGTERM: stop intake on
every source, process what was already received, commit the records, the operator state
(open windows stay open: the next start goes on with them) and the acknowledgements they
allow, then give the uplink a moment to send, within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import sqlite3
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import orjson

from fogline import __version__, ota
from fogline.identity import Identity, gateway_key
from fogline.mqtt import MqttLink
from fogline.signing import Signer
from fogline.tls import TlsFiles
from fogline.urls import BrokerUrl
from gateway.clock import Clock, SystemClock
from gateway.datadir import claim_data_dir
from gateway.delivery import SCHEMA as DELIVERY_SCHEMA
from gateway.delivery import Delivery
from gateway.engine import Engine, Output
from gateway.metrics import Metrics, MetricsServer
from gateway.model_updates import ModelUpdates
from gateway.operators.alert import Alert, raised_alerts
from gateway.operators.infer import Infer
from gateway.operators.window import WINDOWS_PER_PASS, Window
from gateway.outbox import Durability, Outbox
from gateway.outputs import ActionOutput, UplinkOutput
from gateway.sources.mqtt import MqttSource
from gateway.spec import (
    ActionOutputConfig,
    CoapSourceConfig,
    MqttSourceConfig,
    Pipeline,
    UplinkOutputConfig,
)
from gateway.state import SCHEMA as STATE_SCHEMA
from gateway.state import StateStore
from gateway.status import show_status
from gateway.template import compile_template
from gateway.trust import DownlinkTrust
from gateway.uplink import STALL_AFTER, Uplink

log = logging.getLogger("fogline.gateway")

SESSION_EXPIRY = 3600  # seconds a broker keeps our subscriptions and queue while we are away
# Seconds between pings on the uplink when nothing else flows: a broker silent for twice
# this long is taken for gone (a silent partition), so the uplink reports and reconnects
# within about 20 s, at a cost of 4 bytes each way every 8 s.
UPLINK_KEEPALIVE = 10


@dataclass
class GatewayOptions:
    pipeline: Pipeline
    broker: BrokerUrl
    uplink: BrokerUrl
    gateway_id: str
    data_dir: Path
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    shutdown_deadline: float = 10.0
    status: bool = True
    durability: Durability = "normal"
    # on-commit: a QoS 1 reading is PUBACKed once its effect is committed (gateway/delivery.py)
    ack_readings: Literal["on-commit", "on-receipt"] = "on-commit"
    outbox_max_bytes: int = 256 * 1024 * 1024
    outbox_ttl: dict[str, float] = field(default_factory=dict)
    uplink_max_rate: float | None = None
    uplink_keepalive: int = UPLINK_KEEPALIVE
    # Seconds records may wait on a connected uplink with no ack from the cloud before
    # /healthz says degraded and the gateway warns (once) that the cloud does not answer.
    uplink_stall_after: float = STALL_AFTER
    clock: Clock = field(default_factory=SystemClock)
    # Trust (issue 9): with an identity, the uplink logs in with its credentials and acks
    # and model chunks must carry the cloud's signature; batches are always signed.
    identity: Identity | None = None
    uplink_tls: TlsFiles | None = None
    broker_tls: TlsFiles | None = None


class Gateway:
    """`async with Gateway(options) as gw:` returns once connected to the edge broker."""

    def __init__(self, options: GatewayOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        pipeline = options.pipeline
        gid = options.gateway_id
        self.ready = asyncio.Event()
        self._batch_since: float | None = None  # see ActionOutput
        self.source = MqttSource(
            [cfg for _, cfg in pipeline.sources if isinstance(cfg, MqttSourceConfig)],
            pipeline.key,
            self._reject_raw,
            self.metrics,
            pipeline.header.queue,
            options.clock.now,
            self.ready,
        )
        on_commit = options.ack_readings == "on-commit"
        coap = [cfg for _, cfg in pipeline.sources if isinstance(cfg, CoapSourceConfig)]
        if coap:  # aiocoap and cbor2 cost memory: load them only for pipelines that use CoAP
            from gateway.sources.coap import CoapSource  # noqa: PLC0415
        self.coap = (
            CoapSource(
                coap, pipeline.key, self._reject_raw, self.metrics, options.clock.now, self.ready
            )
            if coap
            else None
        )
        self.edge = MqttLink(
            options.broker,
            f"fogline-{gid}-edge",
            name="edge",
            subscriptions=self.source.subscriptions,
            on_message=self.source.on_message,
            on_delivery=self.source.on_delivery if on_commit else None,
            session_expiry=SESSION_EXPIRY,
            on_reconnect=self._edge_reconnected,
            tls=options.broker_tls,
        )
        # QoS 1 readings and CoAP requests are acknowledged once their effect is committed.
        self.delivery = Delivery(self.edge.ack)
        self.source.delivery = self.delivery
        self.metrics.gauges["redeliveries_skipped"] = lambda: {(): self.delivery.duplicates}
        self.source.pause = self.edge.pause_reading
        self.source.resume = self.edge.resume_reading
        self.outbox = Outbox(
            options.data_dir / "outbox.db",
            max_bytes=options.outbox_max_bytes,
            durability=options.durability,
            ttl=options.outbox_ttl,
        )
        self.uplink = Uplink(
            gid,
            self.outbox,
            self.metrics,
            options.clock,
            max_rate=options.uplink_max_rate,
            stall_after=options.uplink_stall_after,
        )
        self.uplink.signer = Signer(gateway_key(options.data_dir, options.identity))
        identity = options.identity
        self.trust = DownlinkTrust(
            gid, [identity.cloud_key()] if identity is not None else None, self.metrics
        )
        self.up = MqttLink(
            _with_credentials(options.uplink, identity),
            f"fogline-{gid}-uplink",
            name="uplink",
            subscriptions=[(self.uplink.ack_topic, 1), (ota.subscription(gid), 1)],
            on_message=self._downlink,
            # The broker keeps what it acknowledged and the cloud's acks across a short
            # outage, so a reconnect does not send everything again.
            session_expiry=SESSION_EXPIRY,
            wait_connected=0.0,
            on_reconnect=self._uplink_reconnected,
            on_puback=self.uplink.on_puback,
            keepalive=options.uplink_keepalive,
            tls=options.uplink_tls,
        )
        self.uplink.link = self.up
        outputs: list[tuple[list[str], Output]] = []
        for i, (kind, cfg) in enumerate(pipeline.outputs):
            if isinstance(cfg, UplinkOutputConfig):
                outputs.append((cfg.from_, UplinkOutput(cfg, self.uplink)))
            elif isinstance(cfg, ActionOutputConfig):
                outputs.append(
                    (
                        cfg.from_,
                        ActionOutput(
                            cfg,
                            self.edge.publish_now,
                            self.metrics,
                            f"outputs[{i}].{kind}",
                            lambda: self._batch_since,
                            options.clock.now,
                        ),
                    )
                )
        dead = pipeline.header.dead_letter
        self._dead_topic = compile_template(dead.topic).render({"gateway": gid}) if dead else None
        self._dead_max = dead.max_payload if dead else 0
        self.engine = Engine(
            pipeline, options.clock, self.metrics, outputs, self._dead_letter if dead else None
        )
        # Operator state is committed with the outbox and taken back here (gateway/state.py).
        self.state = StateStore(self.engine.stateful(), lambda: self.engine.passes)
        self.outbox.start(
            STATE_SCHEMA, lambda db, meta: self.state.restore(db, meta, options.clock.now())
        )
        self.outbox.start(DELIVERY_SCHEMA, self.delivery.restore)
        self.outbox.participants += [self.state, self.delivery]
        if self.coap is not None and on_commit:
            self.coap.delivery = self.delivery
        self.inference = {sid: op for sid, _, _, op in self.engine.steps if isinstance(op, Infer)}
        self.alerts = [op for _, _, _, op in self.engine.steps if isinstance(op, Alert)]
        self.models = ModelUpdates(
            gid,
            self.inference,
            options.data_dir / "models",
            lambda event: self.uplink.send("event", [("", event)]),
            self.metrics,
        )
        self.models.restore()
        self.metrics.gauges["inference_decisions"] = lambda: {
            (("step", sid), ("exit", exit_)): n
            for sid, op in self.inference.items()
            for exit_, n in op.decided.items()
        }
        self._tasks: asyncio.TaskGroup | None = None
        self._running: list[asyncio.Task[None]] = []
        self._exit = contextlib.AsyncExitStack()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._exit.__aenter__()
        try:
            if self.options.metrics_port is not None:
                self.metrics_server = await self._exit.enter_async_context(
                    MetricsServer(
                        self.metrics,
                        self.options.metrics_host,
                        self.options.metrics_port,
                        self.edge.subscribed.is_set,
                        self.health_status,
                    )
                )
            await self._exit.enter_async_context(self.up)
            await self._exit.enter_async_context(self.edge)
            if self.coap is not None:
                await self._exit.enter_async_context(self.coap)
        except BaseException:
            await self._exit.aclose()
            self.outbox.close()
            raise
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        gid = self.options.gateway_id
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "pipeline": self._pipeline_loop(),
            "ticker": self._ticker(),
            "health": self._health(),
            "uplink.commit": self.uplink.run_commits(),
            "uplink.publish": self.uplink.run_publish(self.up),
            "model_updates": self.models.run(),
        }
        if self.options.status:
            loops["status"] = show_status(self.metrics, lambda: self.uplink.pending)
        self._running = [
            self._tasks.create_task(coro, name=f"gw[{gid}].{name}") for name, coro in loops.items()
        ]
        # Everything alive now lives as long as the process: keep it out of every future
        # full collection, whose pauses would otherwise land on alert latency.
        gc.collect()
        gc.freeze()
        log.info(
            "gateway %s running pipeline '%s' (fogline %s)",
            gid,
            self.options.pipeline.name,
            __version__,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            # No await before the commit: a cancelled shutdown still keeps everything.
            self._stop_and_commit()
            await asyncio.wait_for(self._send_last(), self.options.shutdown_deadline)
        except TimeoutError:
            log.warning(
                "shutdown took longer than %.0fs; closing anyway", self.options.shutdown_deadline
            )
        finally:
            if self._tasks is not None:
                for task in self._running:
                    task.cancel()
                await self._tasks.__aexit__(None, None, None)
            await self._exit.aclose()
            self.outbox.close()
            self.stopped.set()

    def _stop_and_commit(self) -> None:
        """Stop intake on every source, process what was received, commit it all.

        Open windows are not flushed: their state is committed, and the next start goes on
        with them, so a restart neither cuts a window short nor loses one.
        """
        self.edge.pause_reading()
        if self.coap is not None:
            self.coap.closing = True
        self.engine.process(self.source.take(max_messages=1 << 30))
        if self.coap is not None:
            self.engine.process(self.coap.take())
        self.uplink.send("health", [("", self.health())])
        failed: sqlite3.Error | None = None
        try:
            self.outbox.flush()  # durable now; what is not acknowledged is sent after a restart
        except sqlite3.Error as exc:
            failed = exc
        if failed is not None:
            log.error(
                "could not commit at the stop (%s): the broker delivers the readings not "
                "acknowledged again at the next start",
                failed,
            )

    async def _send_last(self) -> None:
        """Give the uplink a moment to send what the last commit holds."""
        if self.up.connected.is_set():
            self.uplink.pump(self.up)
            await self.up.drain(within=2.0)

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.stopping.set)
        await self.stopping.wait()
        log.info("stopping: flushing windows and the uplink")

    # -- tasks ------------------------------------------------------------------------------

    async def _pipeline_loop(self) -> None:
        source, coap, engine, ready = self.source, self.coap, self.engine, self.ready
        while True:
            await ready.wait()
            ready.clear()
            self._batch_since = source.oldest()
            engine.process(source.take())
            if source.depth:
                ready.set()  # more than one batch was waiting
            if coap is not None:
                self._batch_since = coap.oldest()
                engine.process(coap.take())
            self._batch_since = None
            await asyncio.sleep(0)  # let the clients read more before the next batch

    async def _ticker(self) -> None:
        tick = self.options.pipeline.header.tick
        for _, _, _, op in self.engine.steps:  # a boundary's windows, a share a pass
            if isinstance(op, Window):
                op.emit_limit = WINDOWS_PER_PASS
        while True:
            await asyncio.sleep(tick)
            self.engine.tick(self.options.clock.now())
            self.models.expire()
            for _ in range(1000):  # bounded: a step that keeps failing cannot spin here
                if not self.engine.pending():
                    break
                await asyncio.sleep(0)  # the readings that came meanwhile go first
                self.engine.tick(self.options.clock.now())

    async def _health(self) -> None:
        every = self.options.pipeline.header.health_every
        while True:
            self.uplink.send("health", [("", self.health())])
            await asyncio.sleep(every)

    def health_status(self) -> dict[str, Any]:
        """`/healthz`: down without the edge broker, degraded when the uplink falls behind."""
        uplink = self.uplink.status()
        edge = self.edge.subscribed.is_set()
        reasons = list(uplink["reasons"])
        broker = f"edge broker {self.options.broker}"
        if not self.edge.connected.is_set():
            reasons.insert(0, f"{broker} not connected")
        elif not edge:
            reasons.insert(0, f"{broker} has not granted our subscriptions (the log says why)")
        status = "down" if not edge else uplink["status"]
        return {
            "status": status,
            "reasons": reasons,
            "gateway": self.options.gateway_id,
            "edge_connected": self.edge.connected.is_set(),
            "uplink": uplink,
        }

    def health(self) -> dict[str, Any]:
        uplink = self.uplink.status()
        return {
            "ts": self.options.clock.now(),
            "gateway": self.options.gateway_id,
            "version": __version__,
            "pipeline": self.options.pipeline.name,
            "health_every": self.options.pipeline.header.health_every,
            "status": uplink["status"] if self.edge.connected.is_set() else "down",
            "uplink": uplink,
            "edge_connected": self.edge.connected.is_set(),
            "intake_depth": self.source.depth + (self.coap.depth if self.coap else 0),
            "uplink_pending": self.uplink.pending,
            "outbox": self.outbox.stats(),
            "state": {"restored": self.state.restored_parts, "reset": self.state.reset},
            # Read at the same moment the record is numbered: the cloud closes an open
            # episode that is not listed only if its raise has a lower seq (issue 11).
            "alerts_raised": raised_alerts(self.alerts),
            **self.metrics.snapshot(),
            **(
                {"inference": {sid: op.status() for sid, op in self.inference.items()}}
                if self.inference
                else {}
            ),
        }

    # -- rejects ----------------------------------------------------------------------------

    def _reject_raw(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        self.engine.reject_raw(topic, payload, reason, detail)

    def _dead_letter(self, entry: dict[str, Any]) -> None:
        if self._dead_topic is None:
            return
        payload = entry.get("payload")
        if isinstance(payload, bytes):
            entry["payload"] = payload[: self._dead_max].decode("utf-8", "replace")
        entry["gateway"] = self.options.gateway_id
        self.edge.publish(self._dead_topic, orjson.dumps(entry, default=str), 0)

    def _downlink(self, topic: str, payload: bytes) -> None:
        if self.models.wants(topic):
            if (chunk := self.trust.chunk(payload)) is not None:
                self.models.on_message(topic, chunk)
        elif topic == self.uplink.ack_topic and (ack := self.trust.ack(payload)) is not None:
            self.uplink.on_message(topic, ack)

    def _uplink_reconnected(self, session_present: bool) -> None:
        self._count_reconnect("uplink")
        self.uplink.on_reconnect(session_present)

    def _edge_reconnected(self, session_present: bool) -> None:
        self._count_reconnect("edge")
        if not session_present:
            self.delivery.session_lost()

    def _count_reconnect(self, name: str) -> None:
        self.metrics.reconnects[name] += 1


def _with_credentials(url: BrokerUrl, identity: Identity | None) -> BrokerUrl:
    """The uplink URL with the identity's broker credentials, unless it names its own."""
    if identity is None or url.username:
        return url
    return dataclasses.replace(url, username=identity.username, password=identity.password)


async def run_gateway(options: GatewayOptions) -> int:
    """Run until SIGINT/SIGTERM; the CLI's entry point."""
    options.status = options.status and sys.stderr.isatty()
    with claim_data_dir(options.data_dir, options.gateway_id):
        async with Gateway(options) as gateway:
            await gateway.run_until_signal()
    return 0
