"""One MQTT connection that stays up: gmqtt underneath, chosen by measurement.

gmqtt is asyncio-native: messages are parsed in the event loop's protocol callback with no
thread hop. A bare counting subscriber draining a backlog reaches ~123k msgs/s at QoS 1
(~298k at QoS 0) on this machine, against paho's ~40k (~86k); see docs/benchmarks.md.
`MqttLink` adds what the gateway needs around it: readiness on enter, resubscription on
every (re)connect, capped jittered backoff while the broker is away, a reconnect count, and
a queue for publishes that wait for the broker's in-flight window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from gmqtt import Client

from fogline.urls import BrokerUrl

log = logging.getLogger("fogline.mqtt")
client_log = logging.getLogger("fogline.mqtt.client")
client_log.setLevel(logging.WARNING)  # gmqtt logs every SUBACK at INFO

OnMessage = Callable[[str, bytes], None]
MAX_WAITING = 10_000  # publishes held while the broker's in-flight window is full


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


class MqttLink:
    """An MQTT client that reconnects by itself; `async with` returns once connected.

    `on_message(topic, payload)` runs in the event loop for every message: keep it O(1).
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
        on_reconnect: Callable[[], None] | None = None,
        wait_connected: float | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self._subscriptions = subscriptions or []
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._wait_connected = wait_connected
        self.connected = asyncio.Event()
        self._backoff = Backoff()
        self._ever_connected = False
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._waiting: deque[tuple[str, bytes, int, bool]] = deque()
        self._retry: asyncio.TimerHandle | None = None
        kwargs: dict[str, Any] = {}
        if session_expiry:
            kwargs["session_expiry_interval"] = session_expiry
        self._client = Client(
            client_id, clean_session=session_expiry == 0, logger=client_log, **kwargs
        )
        if url.username:
            self._client.set_auth_credentials(url.username, url.password)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_message = self._message

    # gmqtt callbacks ----------------------------------------------------------------------

    def _connected(self, client: Client, flags: int, rc: int, properties: Any) -> None:
        self._coalesce_writes()
        if self._ever_connected and self._on_reconnect is not None:
            self._on_reconnect()
        self._ever_connected = True
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos=qos)
        self._backoff.reset()
        self.connected.set()
        log.info("%s: connected to %s", self.name, self.url)

    def _disconnected(self, client: Client, packet: Any, exc: Any = None) -> None:
        if self.connected.is_set() and not self._closing:
            log.warning("%s: lost the connection to %s; reconnecting", self.name, self.url)
        self.connected.clear()
        client.reconnect_delay = self._backoff.next()

    def _message(
        self, client: Client, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        if self._on_message is not None:
            self._on_message(topic, payload)
        return 0

    # lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._supervisor = asyncio.create_task(self._first_connect(), name=f"{self.name}.connect")
        if self._wait_connected is None:
            await self.connected.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.connected.wait()), self._wait_connected)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
        if self._supervisor is not None and not self._supervisor.done():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.disconnect(), 2)

    async def _first_connect(self) -> None:
        """Connect, retrying with backoff; after that gmqtt reconnects with our delays."""
        context = ssl.create_default_context() if self.url.tls else False
        while True:
            try:
                await self._client.connect(self.url.host, self.url.port, ssl=context, keepalive=30)
            except Exception as exc:
                delay = self._backoff.next()
                log.warning(
                    "%s: cannot reach %s (%s); retrying in %.1fs", self.name, self.url, exc, delay
                )
                await asyncio.sleep(delay)
            else:
                break
        # gmqtt reconnects by itself after a loss, sleeping `reconnect_delay` before each
        # attempt; stretching that delay while the broker stays away gives the backoff.
        while True:
            await asyncio.sleep(1.0)
            if not self.connected.is_set():
                self._client.reconnect_delay = self._backoff.next()

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
