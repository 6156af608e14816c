"""The cloud process: ingest, the HTTP API and console, retention, the silence watch, the
live feed and webhooks in one event loop.

`async with Cloud(options) as cloud:` returns once the database is migrated, the HTTP
socket listens (the API, the console and its live stream) and ingest has started
connecting (a broker that is away does not keep the API down; `/healthz` says so).
Leaving it stops intake, stores and acknowledges what was already received, ends the live
streams, then stops the HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import uvicorn
from fastapi import FastAPI

from cloud.auth import FIRST_ADMIN
from cloud.db import make_engine, migrate
from cloud.escalations import DEFAULT_MODELS, CloudModels
from cloud.gaps import DEFAULT_GRACE
from cloud.ingest import Ingest, IngestOptions
from cloud.live import Feed
from cloud.metrics import CloudMetrics
from cloud.model_updates import MAX_MODEL_BYTES, ModelUpdates
from cloud.notify import Notifier, NotifyOptions
from cloud.people import count_users
from cloud.provision import BrokerFiles, Provisioner
from cloud.retention import run_retention
from cloud.silence import DEFAULT_EVERY, SilenceWatch, run_silence_watch
from cloud.store import Store
from cloud.trust import CloudTrust
from cloud.web import create_app
from fogline import __version__, ota
from fogline.redact import dataclass_repr
from fogline.signing import Signer, load_or_create_key
from fogline.tls import TlsFiles
from fogline.urls import BrokerUrl

log = logging.getLogger("fogline.cloud")


@dataclass
class CloudOptions:
    broker: BrokerUrl
    db_url: str = "sqlite:///./fogline.db"
    http_host: str = "127.0.0.1"
    http_port: int = 8080  # 0: any free port (see Cloud.http_port)
    replica: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    retention_days: float = 30.0
    retention_every: float = 3600.0
    db_connect_args: dict[str, Any] | None = None
    ingest: IngestOptions = field(default_factory=IngestOptions)
    wait_broker: float | None = 0.0  # seconds to wait for the broker at start (None: forever)
    clock: Callable[[], float] = time.time
    models_dir: Path = DEFAULT_MODELS  # cloud models that decide escalations
    model_chunk_size: int = ota.CHUNK_SIZE  # bytes per retained chunk of a model sent down
    max_model_bytes: int = MAX_MODEL_BYTES
    live_interval: float = 0.25  # seconds between polls of the activity log (live console)
    notify: NotifyOptions = field(default_factory=NotifyOptions)  # webhooks
    warn_no_users: bool = True  # `fogline demo` makes its user just after the start
    silent_after: float | None = None  # seconds; None: 3 health periods of each gateway
    silence_every: float = DEFAULT_EVERY  # seconds between checks for silent gateways
    gap_grace: float = DEFAULT_GRACE  # seconds; gaps of gateways without `pending_from`
    # Trust (issue 9, cloud.trust): the key acks and model chunks are signed with (made on
    # first use; None: unsigned), and whether unprovisioned gateways are stored unchecked.
    signing_key: Path | None = None
    allow_unregistered: bool = True
    broker_tls: TlsFiles | None = None  # for an mqtts:// broker
    # The broker's password and ACL files: POST/DELETE /api/gateways provision through them
    # (cloud.provision.Provisioner); None: those answer 409, saying how to enable them.
    broker_files: BrokerFiles | None = None
    https: tuple[Path, Path] | None = None  # (certificate, key): serve HTTPS

    def __repr__(self) -> str:
        """Without the database password (`db_url`, `db_connect_args`): a repr reaches logs."""
        return dataclass_repr(self)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the process, not uvicorn, owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def parse_http(address: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8080` for IPv6) into its parts."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT like 127.0.0.1:8080, got {address!r}")
    return host.strip("[]"), int(port)


def parse_days(text: str, flag: str) -> float:
    """A positive number of days; the error names the flag."""
    try:
        days = float(text)
    except ValueError:
        days = 0.0
    if not 0 < days < float("inf"):
        raise ValueError(f"{flag}: expected a positive number of days, got {text!r}")
    return days


def parse_seconds(text: str, flag: str) -> float:
    """A positive number of seconds; the error names the flag."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{flag}: expected a positive number of seconds, got {text!r}")
    return seconds


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket we own, so that port 0 works and its number is known at once.

    `proto` must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it
    a keep-alive response waits ~40 ms for a delayed ACK (Nagle), measured here.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class Cloud:
    def __init__(self, options: CloudOptions) -> None:
        self.options = options
        self.metrics = CloudMetrics()
        self.engine = make_engine(options.db_url, options.db_connect_args)
        self.store = Store(self.engine, options.clock, CloudModels.load(options.models_dir))
        self.trust = CloudTrust(
            self.engine,
            Signer(load_or_create_key(options.signing_key)[0]) if options.signing_key else None,
            allow_unregistered=options.allow_unregistered,
        )
        self.ingest = Ingest(
            self.store,
            options.broker,
            options.replica,
            self.metrics,
            options.ingest,
            wait_connected=options.wait_broker,
            tls=options.broker_tls,
            trust=self.trust,
        )
        # Models go down on the link acks leave on: it never pauses for backpressure.
        self.model_updates = ModelUpdates(
            self.engine,
            self.ingest.acks,
            options.clock,
            options.model_chunk_size,
            options.max_model_bytes,
        )
        self.model_updates.trust = self.trust
        self.provisioner = (
            None
            if options.broker_files is None
            else Provisioner(
                self.engine,
                options.broker_files,
                self.trust.signer.key if self.trust.signer else None,
                self.trust.keys.invalidate,
            )
        )
        self.feed = Feed(self.engine, options.live_interval)
        self.notifier = Notifier(self.engine, options.notify, options.clock)
        self.silence = SilenceWatch(
            self.engine,
            options.clock,
            options.silent_after,
            self.metrics,
            hearing=self.ingest.link.connected.is_set,
        )
        self._socket: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self.app: FastAPI | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []  # run until cancelled

    @property
    def http_port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the HTTP server is not running")
        return int(self._socket.getsockname()[1])

    async def __aenter__(self) -> Self:
        options = self.options
        try:
            await asyncio.to_thread(migrate, self.engine)
            self._socket = _listen(options.http_host, options.http_port)
            app = create_app(
                self.engine,
                self.metrics,
                self.ingest.connected,
                self.model_updates,
                self.feed,
                clock=options.clock,
                gap_grace=options.gap_grace,
                provisioner=self.provisioner,
            )
            https = options.https
            self.app = app
            config = uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
                ssl_certfile=str(https[0]) if https else None,
                ssl_keyfile=str(https[1]) if https else None,
            )
            self._server = _EmbeddedServer(config)
            self._tasks = asyncio.TaskGroup()
            await self._tasks.__aenter__()
            name = f"cloud[{options.replica}]"
            self._tasks.create_task(self._server.serve(sockets=[self._socket]), name=f"{name}.http")
            self._loops.append(
                self._tasks.create_task(
                    run_retention(
                        self.store,
                        options.retention_days,
                        options.retention_every,
                        self.metrics,
                        options.clock,
                    ),
                    name=f"{name}.retention",
                )
            )
            self.silence.started = options.clock()  # silence is measured from here
            self._loops.append(
                self._tasks.create_task(
                    run_silence_watch(self.silence, options.silence_every),
                    name=f"{name}.silence",
                )
            )
            self._loops.append(self._tasks.create_task(self.feed.run(), name=f"{name}.live"))
            self._loops.append(
                self._tasks.create_task(self.notifier.run(), name=f"{name}.webhooks")
            )
            await self.ingest.__aenter__()
        except BaseException:
            await self._close()
            raise
        log.info(
            "cloud %s (fogline %s): API on %s://%s:%d, broker %s, store %s",
            options.replica,
            __version__,
            "https" if options.https else "http",
            options.http_host,
            self.http_port,
            options.broker,
            self.engine.url.render_as_string(hide_password=True),
        )
        if options.warn_no_users and await asyncio.to_thread(count_users, self.engine) == 0:
            log.warning(
                "no users yet: nobody can sign in to the console or call the API. "
                "Create the first admin with: %s",
                FIRST_ADMIN.replace(
                    "<the cloud's --db URL>", self.engine.url.render_as_string(hide_password=True)
                ),
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.ingest.__aexit__(*exc)
        finally:
            await self._close()

    async def _close(self) -> None:
        self.feed.close()  # open event streams end, so the server can stop
        if self._server is not None:
            self._server.should_exit = True  # uvicorn finishes open requests, then returns
        for task in self._loops:
            task.cancel()
        if self._tasks is not None:
            await self._tasks.__aexit__(None, None, None)
        if self._socket is not None:
            self._socket.close()
        self.engine.dispose()


async def run_cloud(options: CloudOptions) -> int:
    """Run until SIGINT/SIGTERM; the CLI's entry point."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Cloud(options):
        await stop.wait()
        log.info("stopping: storing and acknowledging what was received")
    return 0
