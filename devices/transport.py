"""Where encoded readings go: MQTT, CoAP, stdout, or a list (tests).

A transport is an async context manager (ready on enter) with one verb,
`send(messages) -> int`, the number it accepted; fleets and codecs never see one.

* `MqttTransport`: one `fogline.mqtt.MqttLink` for the whole fleet, so a thousand devices
  cost one connection. It subscribes to the gateway's action topics and hands each command
  to `on_command`. While disconnected, readings are counted as unsent and dropped, as a
  sensor with nowhere to put them would.
* `CoapTransport`: one aiocoap client POSTing each reading to `<base>/<topic>`.
  Confirmable requests (the default) are awaited, at most `concurrency` at a time (aiocoap
  still serializes CON exchanges to one server, RFC 7252's NSTART=1); a 4.xx/5.xx reply
  counts as unsent. Non-confirmable ones are not awaited (they count as sent): failed replies
  are counted in `failed` as they come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol, Self
from urllib.parse import urlsplit

from aiocoap import POST, Context, Message, Reliable, Unreliable

from fogline.mqtt import MqttLink
from fogline.tls import TlsFiles
from fogline.urls import BrokerUrl

log = logging.getLogger("fogline.devices")
Encoded = tuple[str, bytes]
OnCommand = Callable[[str, bytes], object]
NON_PENDING_MAX = 4096
LOG_EVERY = 10.0  # seconds between two reports of failed CoAP requests
DRAIN_WITHIN = 5.0  # seconds to wait for the broker's acks before counting readings unsent


class Transport(Protocol):
    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def send(self, messages: Sequence[Encoded]) -> int:
        """Send a batch; return how many were accepted."""
        ...


class MqttTransport:
    def __init__(
        self,
        url: BrokerUrl,
        client_id: str,
        *,
        qos: int = 0,
        command_filters: Sequence[str] = (),
        on_command: OnCommand | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.name = str(url)
        self.qos = qos
        self.link = MqttLink(
            url,
            client_id,
            name=f"devices[{client_id}]",
            subscriptions=[(f, 1) for f in command_filters],
            on_message=self._command if on_command is not None else None,
            tls=tls,
        )
        self._on_command = on_command

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        return self

    def _command(self, topic: str, payload: bytes) -> None:
        if self._on_command is not None:
            self._on_command(topic, payload)

    async def __aexit__(self, *exc: object) -> None:
        if self.qos > 0:
            await self.link.drain(within=2.0)  # the last readings are acknowledged first
        await self.link.__aexit__(*exc)

    async def send(self, messages: Sequence[Encoded]) -> int:
        done = 0
        while done < len(messages):
            done, full = self._publish_from(messages, done)
            # QoS 1 backpressure: gmqtt allows only as many unacknowledged messages as the
            # broker's Receive Maximum (mosquitto's max_inflight_messages, 20 by default);
            # past it, wait for the acks and go on. No acks within the bound: unsent.
            if not full or not await self.link.drain(within=DRAIN_WITHIN):
                break
        return done

    def _publish_from(self, messages: Sequence[Encoded], start: int) -> tuple[int, bool]:
        """Publish until done, disconnected or out of packet ids: (next index, out of ids)."""
        link, qos = self.link, self.qos
        # MqttLink joins the packets of one loop iteration into one socket write.
        for i in range(start, len(messages)):
            topic, payload = messages[i]
            try:
                if not link.publish(topic, payload, qos):
                    return i, False  # disconnected: the rest is unsent
            except OverflowError:
                return i, True
        return len(messages), False


def coap_base(url: str) -> str:
    """Check a CoAP base URL; readings go to `<base>/<topic>`."""
    parts = urlsplit(url)
    if parts.scheme not in {"coap", "coap+tcp"} or not parts.hostname:
        raise ValueError(f"expected a CoAP URL like coap://127.0.0.1:5683, got {url!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"expected a port number in {url!r}") from exc
    return url.rstrip("/")


class CoapTransport:
    def __init__(
        self,
        base: str,
        content_format: int,
        *,
        confirmable: bool = True,
        concurrency: int = 64,
        timeout: float = 10.0,
    ) -> None:
        self.name = coap_base(base)
        self.base = self.name
        self.content_format = content_format
        self.confirmable = confirmable
        self.timeout = timeout
        self.failed = 0
        self._limit = asyncio.Semaphore(concurrency)
        self._context: Any = None
        self._pending: dict[asyncio.Future[Any], None] = {}  # insertion-ordered set
        self._logged_at = -math.inf
        self._unlogged = 0

    async def __aenter__(self) -> Self:
        self._context = await Context.create_client_context()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pending, return_exceptions=True), 2)
        for future in list(self._pending):
            future.cancel()
        if self._context is not None:
            await self._context.shutdown()

    def _request(self, topic: str, payload: bytes) -> Any:
        message = Message(
            code=POST,
            transport_tuning=Reliable() if self.confirmable else Unreliable(),
            uri=f"{self.base}/{topic}",
            payload=payload,
            content_format=self.content_format,
        )
        return self._context.request(message, handle_blockwise=len(payload) > 1024).response

    async def send(self, messages: Sequence[Encoded]) -> int:
        if not self.confirmable:
            return self._send_non(messages)
        results = await asyncio.gather(*(self._post(t, p) for t, p in messages))
        return sum(results)

    async def _post(self, topic: str, payload: bytes) -> bool:
        async with self._limit:
            try:
                response = await asyncio.wait_for(self._request(topic, payload), self.timeout)
            except Exception as exc:  # timeouts, network errors, aiocoap's own: no common base
                return self._failure(topic, f"{type(exc).__name__}: {exc}")
        if not response.code.is_successful():
            return self._failure(topic, f"{response.code} {response.payload[:200]!r}")
        return True

    def _send_non(self, messages: Sequence[Encoded]) -> int:
        pending = self._pending
        for topic, payload in messages:
            future = asyncio.ensure_future(self._request(topic, payload))
            pending[future] = None
            future.add_done_callback(functools.partial(self._non_done, topic))
        # A server that never answers must not make us hold every request: forget the
        # oldest beyond the bound (the reading went out; only its reply is not awaited).
        while len(pending) > NON_PENDING_MAX:
            oldest = next(iter(pending))
            del pending[oldest]
            oldest.cancel()
        return len(messages)

    def _non_done(self, topic: str, future: asyncio.Future[Any]) -> None:
        self._pending.pop(future, None)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self._failure(topic, f"{type(exc).__name__}: {exc}")
        elif not future.result().code.is_successful():
            response = future.result()
            self._failure(topic, f"{response.code} {response.payload[:200]!r}")

    def _failure(self, topic: str, why: str) -> bool:
        """Count a failed POST; log one in every 10 s, with how many went unlogged."""
        self.failed += 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            self._unlogged += 1
            return False
        more = f" (and {self._unlogged} more since the last report)" if self._unlogged else ""
        log.warning("coap: POST %s/%s failed: %s%s", self.base, topic, why, more)
        self._logged_at, self._unlogged = now, 0
        return False


class StdoutTransport:
    """One `topic payload` line per reading (CBOR payloads in hex), for piping and looking."""

    def __init__(self, stream: IO[bytes] | None = None, *, binary: bool = False) -> None:
        self.name = "stdout"
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._binary = binary

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stream.flush()

    async def send(self, messages: Sequence[Encoded]) -> int:
        hexed = self._binary
        lines = [
            topic.encode() + b" " + (payload.hex().encode() if hexed else payload) + b"\n"
            for topic, payload in messages
        ]
        self._stream.write(b"".join(lines))
        return len(messages)


class MemoryTransport:
    """Keeps what it is sent: the transport of unit tests."""

    def __init__(self) -> None:
        self.name = "memory"
        self.messages: list[Encoded] = []
        self.batches = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, messages: Sequence[Encoded]) -> int:
        self.messages.extend(messages)
        self.batches += 1
        return len(messages)
