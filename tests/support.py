"""Test support: a real mosquitto on a free port, an MQTT collector, and polling."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


POSTGRES = os.environ.get(
    "FOGLINE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_admin() -> psycopg.Connection[Any]:
    """An autocommit connection to the FOGLINE_TEST_POSTGRES server, for making schemas:
    the same server, user and database the processes under test are pointed at."""
    from sqlalchemy import make_url  # noqa: PLC0415

    url = make_url(POSTGRES)
    try:
        return psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            dbname=url.database or "test",
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES} ({exc}); start one "
            "(apt-get install -y postgresql) or point FOGLINE_TEST_POSTGRES at one"
        )


def mid_window(size: float, now: float | None = None) -> float:
    """The middle of the next clock-aligned window of `size` seconds: readings stamped a few
    ms apart from here fall in one window, wherever the clock stands (stamped from the clock
    itself they straddle a boundary in 1-2 % of runs)."""
    now = time.time() if now is None else now
    return (math.floor(now / size) + 1.5) * size


def udp_port() -> int:
    """A port free for UDP and TCP alike: an aiocoap server may bind both."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def start_mosquitto(
    conf: Path,
    log_path: Path,
    port: int,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start mosquitto with `conf` (or `command`, a script that ends by exec'ing it) and
    return once it listens on `port`."""
    argv = command or [MOSQUITTO, "-c", str(conf)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {log_path.read_text()}") from None
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("mosquitto did not start listening")


class Broker:
    """A private mosquitto that a test can stop and start again on the same port."""

    def __init__(self, workdir: Path, extra: str = "") -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._conf = workdir / "mosquitto.conf"
        self._conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages 100000\n{extra}"
        )
        self.log = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = start_mosquitto(self._conf, self.log, self.port)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)
        self._proc = None


class Collector:
    """A paho client (independent of the gateway's own MQTT code) that records messages."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topics = topics
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("collector could not subscribe")

    def _on_connect(self, client: paho.Client, *_: object) -> None:
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])
        else:
            self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def on(self, prefix: str) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self.messages if t.startswith(prefix)]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def eventually(
    check: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> object:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class LinkProxy:
    """A TCP proxy in the test's event loop standing in for a bad link to a broker.

    `stall()` is a silent partition as the endpoints see it: nothing is forwarded either
    way, no connection is closed or reset, and new connections hang unanswered until
    `heal()`. `rate` (bytes/s, each direction) is a slow link whose queue is the sockets'
    buffers, as in front of a real bottleneck. `up_bytes` counts what reached the broker.
    The kernel's TCP retransmissions are not simulated: tests/e2e has the real thing.
    """

    def __init__(self, port: int, rate: float | None = None) -> None:
        self.target = port
        self.rate = rate
        self.up_bytes = 0
        self.down_bytes = 0
        self.connections = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    def stall(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.transport.abort()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.append(up_writer)
        self.connections += 1
        for src, dst, up in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst, up))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
        chunk = 65536 if self.rate is None else max(1, int(self.rate / 20))
        try:
            while True:
                await self._open.wait()
                data = await src.read(chunk)
                await self._open.wait()
                if not data:
                    break
                if self.rate is not None:
                    await asyncio.sleep(len(data) / self.rate)
                    await self._open.wait()
                dst.write(data)
                if up:
                    self.up_bytes += len(data)
                else:
                    self.down_bytes += len(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
