"""One MQTT connection that stays up: gmqtt underneath, chosen by measurement.

gmqtt is asyncio-native: messages are parsed in the event loop's protocol callback with no
thread hop. A bare counting subscriber draining a backlog reaches ~123k msgs/s at QoS 1
(~298k at QoS 0) on this machine, against paho's ~40k (~86k); see docs/benchmarks.md.
`MqttLink` adds what the gateway needs around it: readiness on enter, resubscription on
every (re)connect, capped jittered backoff while the broker is away, a reconnect count, and
a queue for publishes that wait for the broker's in-flight window.

Reconnecting is ours, not gmqtt's, because a silent partition (no RST, no FIN) defeated
gmqtt's own: its keepalive closes the socket gracefully, which waits for a write buffer
that never drains; a connect attempt has no timeout, so a SYN sent into the partition
retried for two minutes; and the packet ids of publishes the broker never acknowledged
stayed taken after a clean reconnect, so the next SUBSCRIBE died with `OverflowError: All
ids has already used` and the link stayed up but deaf. Here a watchdog aborts a
connection the broker has not spoken on for `2 x keepalive`, every attempt is bounded by
`connect_timeout`, and each CONNACK resets the packet ids to what the session still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.storage import PersistentStorage
from gmqtt.subscription import Subscription

from fogline.tls import TlsFiles, client_context
from fogline.urls import BrokerUrl

log = logging.getLogger("fogline.mqtt")
client_log = logging.getLogger("fogline.mqtt.client")
client_log.setLevel(logging.WARNING)  # gmqtt logs every SUBACK at INFO
# gmqtt's protocol module warns on every write to a socket we have just aborted on purpose.
logging.getLogger("gmqtt").setLevel(logging.ERROR)

OnMessage = Callable[[str, bytes], None]
OnPuback = Callable[[int, float, int], None]  # mid, monotonic time sent, bytes
# topic, payload, packet id, DUP flag, connection generation: a QoS 1 delivery left unacked
OnDelivery = Callable[[str, bytes, int, bool, int], None]
MAX_WAITING = 10_000  # publishes held while the broker's in-flight window is full
# Seconds for TCP, TLS and CONNACK together: on a 2 kbit/s link the handshake can wait
# behind ~12 s of the old connection's packets in the bottleneck's queue (measured).
CONNECT_TIMEOUT = 20.0
SPARE_IDS = 2  # packet ids kept free of tracked publishes, for SUBSCRIBE


REFUSED_CODES = {4: "bad user name or password", 5: "not authorized"} | {
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8C: "bad authentication method",
}


def refused_reason(exc: BaseException, url: BrokerUrl) -> str | None:
    """What to say when the broker refused our credentials (a CONNACK code), else None."""
    code = getattr(exc, "_code", None)  # gmqtt's MQTTConnectError keeps the CONNACK code
    if type(exc).__name__ != "MQTTConnectError" or code not in REFUSED_CODES:
        return None
    who = f"user {url.username!r}" if url.username else "an anonymous client"
    return (
        f"the broker refused the credentials of {who} ({REFUSED_CODES[code]}); check the "
        "user and password, or, for a gateway, provision it on the cloud with "
        "`fogline cloud gateway add <id>` and start it with that identity file "
        "(a revoked gateway is refused until it is added again)"
    )


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(
        self, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None
    ) -> None:
        self.base, self.cap, self.attempt = base, cap, 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def lean_qos1_publish(cmd: int, raw: bytes, v5: bool) -> tuple[str, bytes, int] | None:
    """(topic, payload, packet id) of a QoS 1 PUBLISH without properties, parsed in place;
    None for anything else (QoS 0 or 2, a topic alias or user properties, a malformed
    packet), which gmqtt's own parser takes. Its parser builds two format strings, a
    properties dict and a debug line per message."""
    if cmd & 0x06 != 0x02:
        return None
    try:
        end = 2 + ((raw[0] << 8) | raw[1])
        packet_id = (raw[end] << 8) | raw[end + 1]
        start = end + 2
        if v5:
            if raw[start] != 0:  # a property length
                return None
            start += 1
        topic = raw[2:end].decode()
    except (IndexError, UnicodeDecodeError):
        return None
    return (topic, raw[start:], packet_id) if topic and packet_id else None


class _Inflight(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1 publishes, watched: each PUBACK is reported."""

    def __init__(self, on_puback: OnPuback | None) -> None:
        super().__init__()
        self.sent: dict[int, tuple[float, int]] = {}  # mid -> (monotonic time, bytes)
        self.bytes = 0
        self.last_mid = 0
        self._on_puback = on_puback

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid
        if mid not in self.sent:
            self.sent[mid] = (time.monotonic(), len(raw_package))
            self.bytes += len(raw_package)

    def remove_message_by_mid(self, mid: int) -> None:
        entry = self.sent.pop(mid, None)
        super().remove_message_by_mid(mid)
        if entry is not None:
            self.bytes -= entry[1]
            if self._on_puback is not None:
                self._on_puback(mid, entry[0], entry[1])

    def clear(self) -> None:
        super().clear()
        self.sent.clear()
        self.bytes = 0


class _Client(Client):  # type: ignore[misc]
    """gmqtt's client with its reconnect handed to `MqttLink`, which bounds every attempt."""

    lost: Callable[[], None] = staticmethod(lambda: None)

    async def reconnect(self, delay: bool = False) -> None:
        self.lost()

    async def reconnect_now(self) -> None:
        """gmqtt's own reconnect (drop the old connection, open and authenticate a new one)."""
        self._connection_state.reconnecting_now = False
        await Client.reconnect(self, delay=False)


class MqttLink:
    """An MQTT client that reconnects by itself; `async with` returns once subscribed.

    `subscribed` is set while connected with every subscription granted by the broker's
    SUBACK (at once when there are none): a publish sent before that is not delivered to us,
    so readiness waits for it, not for the CONNACK.

    `on_message(topic, payload)` runs in the event loop for every message: keep it O(1).
    `on_reconnect(session_present)` runs on every connect after the first, before anything
    else is sent on it. `on_puback(mid, sent_at)` reports each QoS 1 publish the broker
    acknowledged (`publish_tracked` returns its mid), with the packet's size.
    """

    def __init__(
        self,
        url: BrokerUrl,
        client_id: str,
        *,
        name: str,
        subscriptions: list[tuple[str, int]] | None = None,
        on_message: OnMessage | None = None,
        session_expiry: int = 0,
        on_reconnect: Callable[[bool], None] | None = None,
        on_puback: OnPuback | None = None,
        on_delivery: OnDelivery | None = None,
        wait_connected: float | None = None,
        keepalive: int = 30,
        connect_timeout: float = CONNECT_TIMEOUT,
        tls: TlsFiles | None = None,
    ) -> None:
        self.url = url
        self._tls = client_context(tls) if url.tls else None
        self.name = name
        self._subscriptions = subscriptions or []
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._wait_connected = wait_connected
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self.dead_after = 2.0 * keepalive
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._subscribe_mid: int | None = None
        self.disconnected_at: float | None = time.monotonic()  # monotonic, while not
        self.errors: dict[str, int] = {}  # callback and subscribe failures, by where
        self._lost = asyncio.Event()
        self._backoff = Backoff()
        self._ever_connected = False
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._waiting: deque[tuple[str, bytes, int, bool]] = deque()
        self._retry: asyncio.TimerHandle | None = None
        self._resubscribe: asyncio.TimerHandle | None = None
        self._inflight = _Inflight(on_puback)
        self._write_now: Callable[[], None] | None = None  # sends what coalescing holds
        kwargs: dict[str, Any] = {}
        if session_expiry:
            kwargs["session_expiry_interval"] = session_expiry
        if on_delivery is not None:
            # Acks wait for a commit: let the broker send a commit's worth meanwhile. An MQTT
            # 5 broker keeps to this; mosquitto caps it by `max_inflight_messages`.
            kwargs["receive_maximum"] = 65535
        self._client = _Client(
            client_id,
            clean_session=session_expiry == 0,
            logger=client_log,
            persistent_storage=self._inflight,
            **kwargs,
        )
        self._client.lost = self._lost.set
        if url.username:
            self._client.set_auth_credentials(url.username, url.password)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_subscribe = self._granted
        self._client.on_message = self._message
        self.generation = 0  # moves with every CONNACK: packet ids belong to one connection
        if on_delivery is not None:
            self._hold_acks(on_delivery)

    # gmqtt callbacks ----------------------------------------------------------------------

    def _hold_acks(self, on_delivery: OnDelivery) -> None:
        """QoS 1 deliveries go to `on_delivery` unacknowledged; `ack` PUBACKs them later.

        gmqtt PUBACKs on receipt (or when the callback returns); the gateway acknowledges a
        reading only once its effect is committed (gateway/delivery.py).
        """
        handler = getattr(self._client, "_package_handler")  # noqa: B009 - gmqtt's, private
        full_parse = handler._handle_publish_packet  # noqa: SLF001
        state = handler._connection_state  # noqa: SLF001

        def deliver(topic: str, payload: bytes, packet_id: int, dup: bool) -> None:
            try:
                on_delivery(topic, payload, packet_id, dup, self.generation)
            except Exception:
                self._count_error("on_delivery")
                log.exception("%s: the delivery handler failed", self.name)

        def qos1(packet_id: int, payload: bytes, topic: str, properties: dict[str, Any]) -> None:
            deliver(topic, payload, packet_id, bool(properties.get("dup")))

        def publish(cmd: int, raw: bytes) -> None:
            parsed = lean_qos1_publish(cmd, raw, state.protocol_version >= MQTTv50)
            if parsed is None:
                full_parse(cmd, raw)  # calls `qos1` for a QoS 1 publish
            else:
                deliver(*parsed, dup=bool(cmd & 0x08))

        setattr(handler, "_handle_qos_1_publish_packet", qos1)  # noqa: B010
        setattr(handler, "_handle_publish_packet", publish)  # noqa: B010

    def ack(self, packet_ids: list[int], generation: int) -> None:
        """PUBACK deliveries of connection `generation`; none if it is gone (the broker
        delivers them again on the next, with DUP set)."""
        if generation != self.generation or not self.connected.is_set():
            return
        send = getattr(getattr(self._client, "_package_handler"), "_send_puback")  # noqa: B009
        for packet_id in packet_ids:
            send(packet_id)

    def _connected(self, client: Client, flags: int, rc: int, properties: Any) -> None:
        self.generation += 1
        session_present = bool(flags)
        self._reset_packet_ids(session_present)
        self._coalesce_writes()
        if self._ever_connected and self._on_reconnect is not None:
            try:
                self._on_reconnect(session_present)
            except Exception:
                self._count_error("on_reconnect")
                log.exception("%s: the reconnect handler failed", self.name)
        self._ever_connected = True
        self._subscribe()
        if not self._subscriptions:
            self.subscribed.set()
        self._backoff.reset()
        self.disconnected_at = None
        self.connected.set()
        log.info("%s: connected to %s", self.name, self.url)

    def _granted(self, client: Client, mid: int, granted: tuple[int, ...], properties: Any) -> None:
        if mid != self._subscribe_mid:
            return  # a SUBACK of a connection since lost
        pairs = zip(self._subscriptions, granted, strict=False)
        refused = [topic for (topic, _), code in pairs if code >= 128]
        if refused:
            self._count_error("subscribe_refused")
            log.error(
                "%s: %s refused the subscription to %s; check the broker's ACL for this client",
                self.name,
                self.url,
                ", ".join(refused),
            )
            return
        self.subscribed.set()

    def _disconnected(self, client: Client, packet: Any, exc: Any = None) -> None:
        if self.connected.is_set() and not self._closing:
            log.warning("%s: lost the connection to %s; reconnecting", self.name, self.url)
        self._mark_down()
        self._lost.set()

    def _message(
        self, client: Client, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        if self._on_message is not None:
            self._on_message(topic, payload)
        return 0

    def _reset_packet_ids(self, session_present: bool) -> None:
        """Free every packet id but those of publishes the broker's session still holds.

        gmqtt frees an id only on its acknowledgement, so ids of packets lost with a
        connection (publishes, a SUBSCRIBE) stay taken forever; after a handful of
        partitions no id is left and every SUBSCRIBE and publish raises OverflowError.
        """
        handler = getattr(self._client, "_package_handler", None)
        generator = getattr(handler, "id_generator", None)
        if generator is not None:
            generator._used_ids = set(self._inflight.sent) if session_present else set()  # noqa: SLF001

    def _subscribe(self) -> None:
        """Subscribe to everything in one packet; on failure, log, count and try again."""
        self._resubscribe = None
        if not self._subscriptions or not self._connected_or_connecting():
            return
        try:
            # gmqtt appends to its list on every subscribe() call: start from empty.
            self._client.subscriptions = []
            subscriptions = [Subscription(t, qos=q) for t, q in self._subscriptions]
            self._subscribe_mid = self._client.subscribe(subscriptions)
        except Exception as exc:
            self._count_error("subscribe")
            log.warning("%s: subscribing failed (%s); trying again in 1s", self.name, exc)
            self._resubscribe = asyncio.get_running_loop().call_later(1.0, self._subscribe)

    def _connected_or_connecting(self) -> bool:
        transport = self._transport()
        return transport is not None and not transport.is_closing()

    def _count_error(self, where: str) -> None:
        self.errors[where] = self.errors.get(where, 0) + 1

    def _mark_down(self) -> None:
        if self.connected.is_set() or self.disconnected_at is None:
            self.disconnected_at = time.monotonic()
        self.connected.clear()
        self.subscribed.clear()
        self._subscribe_mid = None

    # lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}.connect")
        if self._wait_connected is None:
            await self.subscribed.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.subscribed.wait()), self._wait_connected)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        for handle in (self._retry, self._resubscribe):
            if handle is not None:
                handle.cancel()
        supervisor = self._supervisor
        # Python 3.11's wait_for can swallow a cancel that lands as the connect attempt ends
        # (a stopped broker): cancel again until the task is done, and `_supervise` also
        # returns by itself once `_closing` is set.
        while supervisor is not None and not supervisor.done():
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({supervisor}, timeout=1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.disconnect(), 2)

    async def _supervise(self) -> None:
        """Connect, watch the connection, and connect again when it is lost or goes quiet."""
        first = True
        while not self._closing:
            try:
                await asyncio.wait_for(self._open(first), self._connect_timeout)
            except (Exception, TimeoutError) as exc:
                self._abort()
                self._mark_down()
                if self._closing:
                    return
                delay = self._backoff.next()
                reason = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError):
                    reason = f"no answer within {self._connect_timeout:.0f}s"
                elif (refused := refused_reason(exc, self.url)) is not None:
                    reason = refused
                    self._count_error("refused")
                log.warning(
                    "%s: cannot reach %s (%s); retrying in %.1fs",
                    self.name,
                    self.url,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            first = False
            await self._watch()
            self._abort()
            self._mark_down()
            if self._closing:
                return
            await asyncio.sleep(self._backoff.next())

    async def _open(self, first: bool) -> None:
        self._lost.clear()
        if first:
            await self._client.connect(
                self.url.host, self.url.port, ssl=self._tls or False, keepalive=self._keepalive
            )
        else:
            await self._client.reconnect_now()
        # A refused or dropped handshake sets `_lost` instead of `connected`.
        lost = asyncio.ensure_future(self._lost.wait())
        up = asyncio.ensure_future(self.connected.wait())
        try:
            await asyncio.wait({lost, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            up.cancel()
        if not self.connected.is_set():
            raise ConnectionError("the broker closed the connection during the handshake")

    async def _watch(self) -> None:
        """Return when the connection is lost, or when the broker has been silent too long.

        gmqtt pings after `0.8 x keepalive` without traffic, so a live broker always speaks
        within that; `2 x keepalive` of silence means the path is gone (a partition sends no
        RST), and the socket is aborted rather than closed, which would wait for a flush.
        """
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), 1.0)
            heard = self.last_heard
            if heard and time.monotonic() - heard > self.dead_after:
                log.warning(
                    "%s: nothing from %s for %.0fs; dropping the connection",
                    self.name,
                    self.url,
                    time.monotonic() - heard,
                )
                self._count_error("silent")
                return

    def _abort(self) -> None:
        transport = self._transport()
        if transport is not None:
            transport.abort()

    def pause_reading(self) -> None:
        """Stop reading the socket: the broker then holds the backlog (backpressure)."""
        transport = self._transport()
        if transport is not None:
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _coalesce_writes(self) -> None:
        """One send() per event-loop iteration instead of one per packet.

        gmqtt writes every packet (each PUBACK of a QoS 1 subscription, each publish) at once,
        and asyncio turns each write into a system call: the largest cost per message on
        this machine. Writes made during one loop iteration are joined and sent at the end
        of it (call_soon), which adds microseconds, not milliseconds, to any packet.
        """
        transport: Any = self._transport()
        if transport is None or getattr(transport, "_fogline_coalesced", False):
            return
        real_write = transport.write
        loop = asyncio.get_running_loop()
        parts: list[bytes] = []

        def flush() -> None:
            if not parts:
                return
            data = b"".join(parts)
            parts.clear()
            if not transport.is_closing():
                real_write(data)

        def write(data: bytes) -> None:
            if not parts:
                loop.call_soon(flush)
            parts.append(bytes(data))

        transport.write = write
        transport._fogline_coalesced = True  # noqa: SLF001
        self._write_now = flush

    def _transport(self) -> asyncio.Transport | None:
        # gmqtt has no public handle on its socket; reach it defensively.
        connection = getattr(self._client, "_connection", None)
        return getattr(connection, "_transport", None)

    async def drain(self, within: float = 5.0) -> bool:
        """Wait until every QoS 1/2 publish so far is acknowledged by the broker."""
        storage = getattr(self._client, "_persistent_storage", None)
        if storage is None:
            return False
        try:
            await asyncio.wait_for(storage.wait_empty(), within)
        except TimeoutError:
            return False
        return True

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Publish if connected; False (and nothing sent) otherwise.

        When the broker's in-flight window is full (its receive maximum: mosquitto allows 20
        unacknowledged QoS 1 publishes by default), the message waits in a bounded local
        queue and goes out, in order, as acknowledgements free the window.
        """
        if not self.connected.is_set():
            return False
        if self._waiting:
            return self._wait(topic, payload, qos, retain)
        try:
            self._client.publish(topic, payload, qos=qos, retain=retain)
        except OverflowError:
            return self._wait(topic, payload, qos, retain)
        return True

    def publish_now(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """`publish`, written to the socket at once rather than at the end of this loop
        iteration: a local action does not wait for the rest of the pipeline's pass."""
        sent = self.publish(topic, payload, qos, retain)
        if sent and self._write_now is not None:
            self._write_now()
        return sent

    # tracked QoS 1 publishes (the uplink's flow control) ------------------------------------

    @property
    def receive_maximum(self) -> int:
        """Unacknowledged QoS 1 publishes the broker allows (its CONNACK says; 65535 unsaid)."""
        handler = getattr(self._client, "_package_handler", None)
        generator = getattr(handler, "id_generator", None)
        return int(getattr(generator, "_max", 65535))

    @property
    def inflight_count(self) -> int:
        return len(self._inflight.sent)

    @property
    def inflight_bytes(self) -> int:
        """Bytes of QoS 1 publishes written and not yet acknowledged by the broker."""
        return self._inflight.bytes

    def send_quota(self) -> int:
        """How many more tracked publishes the broker's window takes now."""
        if not self.connected.is_set():
            return 0
        return max(0, self.receive_maximum - 1 - SPARE_IDS - self.inflight_count)

    def oldest_inflight(self) -> tuple[int, float] | None:
        """(mid, monotonic time sent) of the oldest publish the broker has not acknowledged."""
        for mid, (sent_at, _) in self._inflight.sent.items():
            return mid, sent_at
        return None

    @property
    def last_heard(self) -> float:
        """Monotonic time the broker last sent anything on this connection (0: never)."""
        connection = getattr(self._client, "_connection", None)
        heard = getattr(connection, "_last_data_in", 0.0)
        return float(heard) if isinstance(heard, float) else 0.0

    def ping(self) -> None:
        """Ask the broker for a PINGRESP now (best effort), to learn whether it still hears us."""
        connection = getattr(self._client, "_connection", None)
        send = getattr(connection, "_send_ping_request", None)
        if self.connected.is_set() and send is not None:
            with contextlib.suppress(Exception):
                send()

    def packet_size(self, mid: int) -> int:
        """Bytes on the wire of a tracked publish not yet acknowledged (0 once it is)."""
        entry = self._inflight.sent.get(mid)
        return 0 if entry is None else entry[1]

    def publish_tracked(self, topic: str, payload: bytes) -> int | None:
        """Publish at QoS 1 now and return its packet id, or None (nothing sent) when not
        connected or the broker's window is full. Never queues: the caller keeps the data."""
        if self.send_quota() <= 0 or self._waiting:
            return None
        try:
            self._client.publish(topic, payload, qos=1)
        except OverflowError:
            return None
        return self._inflight.last_mid

    def _wait(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        if len(self._waiting) >= MAX_WAITING:
            return False
        self._waiting.append((topic, payload, qos, retain))
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(0.002, self._send_waiting)
        return True

    def _send_waiting(self) -> None:
        self._retry = None
        while self._waiting and self.connected.is_set():
            topic, payload, qos, retain = self._waiting[0]
            try:
                self._client.publish(topic, payload, qos=qos, retain=retain)
            except OverflowError:
                break
            self._waiting.popleft()
        if self._waiting:
            delay = 0.002 if self.connected.is_set() else 0.5
            self._retry = asyncio.get_running_loop().call_later(delay, self._send_waiting)
