"""A site whose uplink crosses a shaped link: the gateway and its edge broker in their own
network namespace, the uplink broker and the cloud outside, real TCP in between.

```
namespace (devices/network.py)                           outside (this process's namespace)
publisher (paho) -> edge mosquitto -> fogline gateway ==shaped link==> uplink mosquitto -> fogline cloud
                                      /metrics, /healthz                      |  monitor (paho): every batch
                                      (read through a socket made inside)     |  and ack, timed, by seq
```

Plain Python with no pytest in it, so that `bench/network_faults.py` runs the same site.
Every process runs under `ip netns exec` or beside us; `close()` stops them all and removes
the namespace, whatever failed. The cloud stores into SQLite, which the checks read directly.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from devices.network import Link
from fogline.envelope import decode_ack, decode_batch

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
EDGE_PORT = 1883  # inside the namespace: its own loopback, no clash possible
METRICS_PORT = 9108  # likewise

# 2 s windows per machine go up as digests; one reading past 95 °C raises a critical alert
# at once (and the next, cool one clears it). Health every 2 s.
PIPELINE = """
name: netfaults
key: [machine]
sources:
  - mqtt: {topics: ["nf/{machine}/t"], qos: 1, timestamp: ts}
steps:
  - validate:
      id: readings
      fields:
        temperature: {type: number}
        vibration: {type: number}
        ts: {type: number, required: false}
  - alert:
      id: critical
      rules:
        - {name: critical_temperature, raise: temperature > 95, clear: temperature < 85, severity: critical}
  - window:
      id: windows
      from: readings
      size: 2s
      lateness: 1s
      aggregates:
        temperature: [mean, min, max, p50]
        vibration: [rms, mean, max, p95]
outputs:
  - uplink: {from: windows, kind: digest}
  - uplink: {from: critical, kind: alert}
health_every: 2s
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(check: Any, timeout: float, what: str, every: float = 0.1) -> float:
    """Poll until `check()` is truthy; seconds it took. AssertionError after `timeout`."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - t0


def parse_prometheus(body: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name.removesuffix("{}")] = float(value)
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    """A family's total over its labels (0 when absent)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


# -- the monitor: what reaches the uplink broker, by seq ------------------------------------------


@dataclass
class Monitor:
    """Subscribes (outside, unshaped) to the gateway's uplink and acks: first and repeated
    arrivals of every seq, with their share of each message's bytes."""

    port: int
    gateway: str
    first: dict[int, float] = field(default_factory=dict)  # seq -> first arrival
    kind_of: dict[int, str] = field(default_factory=dict)
    repeats: list[tuple[int, float]] = field(default_factory=list)  # (seq, arrival) of copies
    acked: dict[int, float] = field(default_factory=dict)  # seq -> first ack seen
    messages: int = 0
    bytes: int = 0  # uplink payload bytes, repeats included
    unique_bytes: float = 0.0  # each message's bytes shared among its records, first copies only

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"nf-mon-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(f"fogline/{self.gateway}/up/#", 1), (f"fogline/{self.gateway}/down/ack", 1)]
        )
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("the monitor could not subscribe to the uplink broker")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        with self._lock:
            if msg.topic.endswith("/down/ack"):
                with contextlib.suppress(ValueError):
                    for lo, hi in decode_ack(msg.payload):
                        for seq in range(lo, hi + 1):
                            self.acked.setdefault(seq, now)
                return
            try:
                batch = decode_batch(msg.payload)
            except ValueError:
                return
            self.messages += 1
            self.bytes += len(msg.payload)
            seqs = [int(r["seq"]) for r in batch["records"]]
            share = len(msg.payload) / max(1, len(seqs))
            for seq in seqs:
                if seq in self.first:
                    self.repeats.append((seq, now))
                else:
                    self.first[seq] = now
                    self.kind_of[seq] = batch["kind"]
                    self.unique_bytes += share

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "messages": self.messages,
                "bytes": self.bytes,
                "unique_bytes": round(self.unique_bytes),
                "records": len(self.first),
                "repeats": len(self.repeats),
            }

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the publisher: readings from inside the namespace ---------------------------------------------


class Publisher:
    """`machines` machines at `rate` Hz, QoS 1, on the edge broker inside the namespace.

    `heat(machine)` makes that machine's next reading 97 °C (raises `critical_temperature`)
    and the one after cool again (clears it); `raised` keeps when each was published.
    """

    def __init__(self, link: Link, machines: int = 20, rate: float = 5.0, seed: int = 1) -> None:
        self.names = [f"m-{i:02d}" for i in range(machines)]
        self.rate = rate
        self.sent = 0
        self.raised: list[tuple[str, float]] = []
        self._hot: set[str] = set()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"nf-pub-{uuid.uuid4().hex[:8]}"
        )
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)

        def connect() -> None:  # the socket and paho's loop thread are made inside
            self.client.connect("127.0.0.1", EDGE_PORT)
            self.client.loop_start()

        link.namespace.call(connect)
        self._thread = threading.Thread(target=self._run, name="nf-publisher", daemon=True)
        self._thread.start()

    def heat(self, machine: str) -> None:
        with self._lock:
            self._hot.add(machine)

    def _run(self) -> None:
        period = 1.0 / self.rate
        due = time.monotonic()
        while not self._stop.is_set():
            now = time.time()
            for name in self.names:
                with self._lock:
                    hot = name in self._hot
                    self._hot.discard(name)
                temperature = 97.0 if hot else 60.0 + self._rng.uniform(-2, 2)
                vibration = 2.0 + self._rng.gauss(0, 0.1)
                payload = json.dumps(
                    {"ts": now, "temperature": round(temperature, 2), "vibration": vibration}
                )
                self.client.publish(f"nf/{name}/t", payload, qos=1)
                if hot:
                    self.raised.append((name, now))
                self.sent += 1
            due += period
            self._stop.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def close(self) -> None:
        self.stop()
        self.client.disconnect()
        self.client.loop_stop()


class ActionWatch:
    """Local actions on the edge broker, seen from inside: the truth of what was raised."""

    def __init__(self, link: Link, topic: str) -> None:
        self.actions: list[tuple[float, dict[str, Any]]] = []
        ready = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"nf-act-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message

        def connect() -> None:
            self.client.connect("127.0.0.1", EDGE_PORT)
            self.client.loop_start()

        link.namespace.call(connect)
        if not ready.wait(10):
            raise RuntimeError("could not watch the actions on the edge broker")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with contextlib.suppress(ValueError):
            body = json.loads(msg.payload)
            if isinstance(body, dict):
                self.actions.append((time.time(), body))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the site ------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One poll of the gateway's /healthz and the cloud's view of the gateway."""

    t: float  # time.time()
    http: int  # /healthz status code (0: no answer)
    health: dict[str, Any] | None  # its JSON, when it is JSON
    unexplained: int | None  # the cloud's unexplained gap count


class ShapedSite:
    """Brokers, gateway, cloud, monitor and publisher around one shaped link."""

    def __init__(
        self,
        tmp: Path,
        *,
        pipeline: str = PIPELINE,
        machines: int = 20,
        rate: float = 5.0,
        gateway_id: str | None = None,
        gateway_args: tuple[str, ...] = (),
        poll_every: float = 0.5,
        mtu: int = 1500,
        pipeline_path: Path | None = None,
        devices: list[str] | None = None,
        window_wait: float = 3.5,
        watch_actions: str | None = None,
        initial: dict[str, float] | None = None,
    ) -> None:
        """`devices`: arguments of `fogline devices` to run inside instead of the built-in
        publisher (then `pipeline_path`, e.g. pipelines/factory.yaml, says what it feeds);
        `window_wait`: how long the last windows take to close after the readings stop;
        `initial`: link conditions from the first packet on (`Link.set` keywords)."""
        self.tmp = tmp
        self.gateway_id = gateway_id or f"gw-{uuid.uuid4().hex[:6]}"
        self.pipeline_text = pipeline
        self.machines, self.rate = machines, rate
        self.gateway_args = gateway_args
        self.poll_every = poll_every
        self.mtu = mtu
        self.pipeline_path = pipeline_path
        self.devices = devices
        self.window_wait = window_wait
        self.watch_actions = watch_actions
        self.initial = initial or {}
        self.actions: ActionWatch | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.samples: list[Sample] = []
        self.link: Link | None = None
        self.monitor: Monitor | None = None
        self.publisher: Publisher | None = None
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None
        self.db_path = tmp / "cloud.db"
        self.auth: dict[str, str] = {}  # a token once the cloud is up
        self.data_dir = tmp / "gateway"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ShapedSite:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.link = link = Link.create(mtu=self.mtu)
        if self.initial:
            link.set(**self.initial)
        ns = link.namespace
        # The edge broker, inside.
        edge_conf = self.tmp / "edge.conf"
        edge_conf.write_text(
            f"listener {EDGE_PORT} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
        self._spawn("edge-broker", ns.exec_args([MOSQUITTO, "-c", str(edge_conf)]))
        wait_for(lambda: self._inside_listening(EDGE_PORT), 10, "the edge broker", 0.05)
        # The uplink broker, outside: the gateway reaches it across the link, the cloud and
        # the monitor on loopback.
        self.uplink_port, self.local_port = free_port(), free_port()
        up_conf = self.tmp / "uplink.conf"
        up_conf.write_text(
            f"listener {self.uplink_port} {link.outside_ip}\n"
            f"listener {self.local_port} 127.0.0.1\n"
            "allow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
        )
        self._spawn("uplink-broker", [MOSQUITTO, "-c", str(up_conf)])
        wait_for(lambda: _listening("127.0.0.1", self.local_port), 10, "the uplink broker", 0.05)
        self.monitor = Monitor(self.local_port, self.gateway_id)
        # The gateway is provisioned as an operator would (`fogline cloud gateway add`), so
        # the strict CLI runs signed on both sides: what crosses the link is what a
        # hardened site sends (signature and chain fields included).
        cloud_key = self.tmp / "cloud.key"
        _provision(f"sqlite:///{self.db_path}", self.gateway_id, cloud_key, self.data_dir)
        # The cloud, outside.
        self.http_port = free_port()
        self._spawn(
            "cloud",
            [
                *_fogline(),
                "cloud",
                "--broker",
                f"mqtt://127.0.0.1:{self.local_port}",
                "--db",
                f"sqlite:///{self.db_path}",
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--replica",
                "r1",
                "--signing-key",
                str(cloud_key),
            ],
        )
        wait_for(lambda: self._cloud_status() == 200, 60, "the cloud to start", 0.2)
        self.auth = _api_auth(f"sqlite:///{self.db_path}")  # every /api/ call needs a token
        # The gateway, inside; its uplink crosses the link.
        pipeline = self.pipeline_path or self.tmp / "netfaults.yaml"
        if self.pipeline_path is None:
            pipeline.write_text(self.pipeline_text)
        self._spawn(
            "gateway",
            ns.exec_args(
                [
                    *_fogline(),
                    "gateway",
                    "--pipeline",
                    str(pipeline),
                    "--id",
                    self.gateway_id,
                    "--broker",
                    f"mqtt://127.0.0.1:{EDGE_PORT}",
                    "--uplink",
                    f"mqtt://{link.outside_ip}:{self.uplink_port}",
                    "--data-dir",
                    str(self.data_dir),
                    "--metrics-port",
                    str(METRICS_PORT),
                    *self.gateway_args,
                ]
            ),
        )
        wait_for(self._gateway_up, 30, "the gateway's metrics port", 0.2)
        if self.devices is None:
            self.publisher = Publisher(link, self.machines, self.rate)
        if self.watch_actions is not None:
            self.actions = ActionWatch(link, self.watch_actions)
        self._poller = threading.Thread(target=self._poll, name="nf-poller", daemon=True)
        self._poller.start()

    def start_devices(self) -> None:
        """Start `fogline devices ...` inside the namespace, on the edge broker."""
        assert self.link is not None
        assert self.devices is not None
        args = [*_fogline(), "devices", *self.devices, "--broker", f"mqtt://127.0.0.1:{EDGE_PORT}"]
        self._spawn("devices", self.link.namespace.exec_args(args))

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.tmp / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log)

    def close(self) -> None:
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(5)
        if self.publisher is not None:
            self.publisher.close()
        if self.actions is not None:
            self.actions.close()
        for name in ("devices", "gateway", "cloud", "edge-broker", "uplink-broker"):
            proc = self.procs.get(name)
            if proc is not None:
                stop_process(proc)
        if self.monitor is not None:
            self.monitor.close()
        if self.link is not None:
            self.link.close()  # also kills anything left inside and deletes the namespace

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- the gateway, through sockets made inside ------------------------------------------

    def _inside_listening(self, port: int) -> bool:
        assert self.link is not None
        try:
            self.link.namespace.connect(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def _gateway_up(self) -> bool:
        proc = self.procs["gateway"]
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited: {self.log_tail('gateway')}")
        return self.gateway_get("/metrics")[0] == 200

    def gateway_get(self, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
        """GET from the gateway's metrics port inside the namespace: (status, body); 0 if none."""
        assert self.link is not None
        try:
            sock = self.link.namespace.connect(("127.0.0.1", METRICS_PORT), timeout=timeout)
        except OSError:
            return 0, b""
        conn = http.client.HTTPConnection("127.0.0.1", METRICS_PORT, timeout=timeout)
        conn.sock = sock
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            return 0, b""
        finally:
            conn.close()

    def healthz(self) -> tuple[int, dict[str, Any] | None]:
        status, body = self.gateway_get("/healthz")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        return status, parsed if isinstance(parsed, dict) else None

    def gateway_metrics(self) -> dict[str, float]:
        status, body = self.gateway_get("/metrics")
        return parse_prometheus(body.decode()) if status == 200 else {}

    def committed(self) -> int:
        """Highest seq the gateway's outbox has committed (its persisted next_seq - 1)."""
        with contextlib.closing(
            sqlite3.connect(f"file:{self.data_dir}/outbox.db?mode=ro", uri=True)
        ) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        return int(row[0]) - 1 if row else 0

    def outbox_depth(self) -> int:
        with contextlib.closing(
            sqlite3.connect(f"file:{self.data_dir}/outbox.db?mode=ro", uri=True)
        ) as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # -- the cloud ---------------------------------------------------------------------------

    def _cloud_status(self) -> int:
        proc = self.procs["cloud"]
        if proc.poll() is not None:
            raise RuntimeError(f"the cloud exited: {self.log_tail('cloud')}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/healthz", timeout=2
            ) as r:
                return int(r.status)
        except OSError:
            return 0

    def api(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(urllib.request.Request(url, headers=self.auth), timeout=5) as r:
            return json.loads(r.read())

    def cloud_metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return parse_prometheus(r.read().decode())

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        if not self.db_path.exists():
            return []
        with contextlib.closing(
            sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        ) as db:
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.OperationalError:  # tables not made yet
                return []

    def stored(self) -> dict[int, tuple[str, float]]:
        """seq -> (kind, received_at) of everything the cloud stored for the gateway."""
        rows = self._query(
            "SELECT seq, kind, received_at FROM received WHERE gateway_id = ?", self.gateway_id
        )
        return {int(s): (str(k), float(t)) for s, k, t in rows}

    def stored_alerts(self) -> list[dict[str, Any]]:
        """Critical raises stored: machine, raised_at (the reading's time), received_at."""
        rows = self._query(
            "SELECT a.device, a.data, r.received_at FROM alert_events a JOIN received r "
            "ON r.gateway_id = a.gateway_id AND r.seq = a.seq "
            "WHERE a.gateway_id = ? AND a.state = 'raised'",
            self.gateway_id,
        )
        out = []
        for device, data, received_at in rows:
            body = json.loads(data) if isinstance(data, str) else data
            out.append(
                {
                    "machine": device,
                    "rule": body.get("rule"),
                    "alert_id": body.get("alert_id"),
                    "raised_at": float(body.get("raised_at") or 0.0),
                    "received_at": float(received_at),
                }
            )
        return out

    def silent_alerts(self) -> list[dict[str, Any]]:
        """`gateway_silent` episodes in the cloud's /api/alerts for this gateway."""
        try:
            page = self.api(f"/api/alerts?gateway={self.gateway_id}&limit=100")
        except OSError:
            return []
        return [a for a in page.get("items", []) if a.get("rule") == "gateway_silent"]

    # -- polling -----------------------------------------------------------------------------

    def _poll(self) -> None:
        while not self._stop_polling.wait(self.poll_every):
            status, health = self.healthz()
            unexplained: int | None = None
            with contextlib.suppress(OSError, ValueError):
                unexplained = int(self.api(f"/api/gateways/{self.gateway_id}")["unexplained"])
            self.samples.append(Sample(time.time(), status, health, unexplained))

    def first_degraded(self, since: float) -> float | None:
        """Seconds from `since` (time.time()) to the first /healthz saying degraded or down."""
        for s in self.samples:
            if s.t >= since and s.health and s.health.get("status") in {"degraded", "down"}:
                return s.t - since
        return None

    # -- traffic -----------------------------------------------------------------------------

    def heat(self, machine: str) -> None:
        assert self.publisher is not None
        self.publisher.heat(machine)

    def wait_first_digests(self, timeout: float = 30) -> None:
        wait_for(
            lambda: any(k == "digest" for k, _ in self.stored().values()),
            timeout,
            "the first digests in the cloud",
            0.2,
        )

    def stop_traffic(self) -> int:
        """Stop the readings, let the last windows close; the committed seq then."""
        if self.publisher is not None:
            self.publisher.stop()
        if "devices" in self.procs:
            stop_process(self.procs["devices"])
        time.sleep(self.window_wait)  # the last windows close, a group commit follows
        return self.committed()


def _fogline() -> list[str]:
    return [sys.executable, "-m", "fogline.cli", "--log-level", "INFO"]


def _provision(db_url: str, gateway: str, cloud_key: Path, data_dir: Path) -> None:
    """`fogline cloud gateway add`: the gateway's key registered, its identity file written
    where the gateway looks for it (identity.json in its --data-dir)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *_fogline(),
            "cloud",
            "gateway",
            "add",
            gateway,
            "--db",
            db_url,
            "--signing-key",
            str(cloud_key),
            "--out",
            str(data_dir / "identity.json"),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )


def _api_auth(db_url: str) -> dict[str, str]:
    """A viewer's API token, made with the CLI as an operator would."""
    cli = [sys.executable, "-m", "fogline.cli", "cloud"]
    db = ["--db", db_url]
    subprocess.run(
        [*cli, "user", "add", "netfaults", "--role", "viewer", "--no-password", *db],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    made = subprocess.run(
        [*cli, "token", "add", "--user", "netfaults", *db],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# -- the verdict -----------------------------------------------------------------------------------


@dataclass
class Verdict:
    """Measured numbers and failed checks of one run; `problems` empty means it passed."""

    scenario: str
    numbers: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def text(self) -> str:
        lines = [f"{self.scenario}: " + json.dumps(self.numbers, default=str)]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def forced_duplicates(site: ShapedSite, grace: float) -> tuple[int, list[int]]:
    """Split the repeated arrivals into those a lost ack forced and the rest.

    A copy is forced when the cloud had acked the seq (the monitor saw the ack) and the
    gateway opened a new TCP connection (a SYN on the link) no earlier than `grace` seconds
    before that ack and before the copy: the ack may have died with the old connection.
    A copy sent before any ack, or after an ack that a live connection carried, is not.
    """
    assert site.monitor is not None
    assert site.link is not None
    syns = site.link.syn_times("up")
    forced, unforced = 0, []
    for seq, t in site.monitor.repeats:
        acked = site.monitor.acked.get(seq)
        if acked is not None and acked < t and any(acked - grace <= s <= t for s in _wall(syns)):
            forced += 1
        else:
            unforced.append(seq)
    return forced, unforced


def _wall(monotonic_times: list[float]) -> list[float]:
    offset = time.time() - time.monotonic()
    return [t + offset for t in monotonic_times]


def measure(site: ShapedSite, verdict: Verdict, committed: int) -> None:
    """The numbers every scenario reports: stored, duplicates, bytes on the wire."""
    assert site.monitor is not None
    assert site.link is not None
    stored = site.stored()
    missing = [s for s in range(1, committed + 1) if s not in stored]
    cloud = site.cloud_metrics()
    link = site.link.stats()
    mon = site.monitor.snapshot()
    gw = site.gateway_metrics()
    up = link["up"]
    payload = max(1, mon["unique_bytes"])
    verdict.numbers.update(
        committed=committed,
        stored=sum(1 for s in stored if s <= committed),
        missing=len(missing),
        outbox_end=site.outbox_depth(),
        cloud_duplicates=int(metric_sum(cloud, "fogline_cloud_duplicates_total")),
        monitor_repeats=mon["repeats"],
        uplink_messages=mon["messages"],
        payload_bytes=mon["unique_bytes"],
        app_bytes=mon["bytes"],
        wire_tcp_bytes=up.tcp_payload_bytes,
        wire_ip_bytes=up.bytes,
        tcp_retransmitted=up.tcp_retransmitted_bytes,
        wire_ratio=round(up.tcp_payload_bytes / payload, 2),
        wire_new_bytes=up.tcp_new_bytes,
        wire_new_ratio=round(up.tcp_new_bytes / payload, 2),
        app_ratio=round(mon["bytes"] / payload, 2),
        connections=up.tcp_syn,
        dropped={"loss": up.dropped_loss, "queue": up.dropped_queue, "cut": up.dropped_cut},
        gateway_wire_bytes=metric_sum(gw, "fogline_uplink_wire_bytes_total") or None,
        gateway_payload_bytes=metric_sum(gw, "fogline_uplink_payload_bytes_total") or None,
        gateway_resent_batches=metric_sum(gw, "fogline_uplink_resent_batches_total") or None,
    )
    if missing:
        verdict.numbers["missing_seqs"] = _ranges(missing)[:10]
    unexplained = [s.unexplained for s in site.samples if s.unexplained]
    verdict.numbers["max_unexplained_seen"] = max(unexplained, default=0)


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
