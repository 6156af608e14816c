"""The long soak (issue 11): a factory site under power cuts, broker restarts, cloud kills
and a network cut, then per machine: was every accepted reading counted exactly once?

One run starts its own world: an edge mosquitto (persistence on, `max_inflight_messages 0`,
as a gateway that PUBACKs on commit needs), an uplink mosquitto behind a TCP proxy that can
stall (a silent network cut), two cloud replicas on PostgreSQL (a fresh schema, dropped at
the end) or SQLite (`--db sqlite`), a gateway process, and a fleet of machines publishing at
QoS 1 through one paho client that counts, per machine, what the broker PUBACKed.

The pipeline is pipelines/factory.yaml with one step added and one output moved, so that the
cloud can see the baselines: an `ewma` on `vibration_rms` after the `zscore`, and the digest
uplinked from it (so each digest carries `vibration_p50_z` and `vibration_rms_ewma_z` as well
as every window aggregate). Windows, alerts, model and actions are the factory's.

The fleet: each machine reads 60 °C; once every 2 minutes it runs hot (90 °C) for three
whole windows, so `over_temperature` raises once and clears once per hot spell. One reading
in 499 is invalid (vibration -1): dead-lettered, never counted. Before an edge broker restart
the fleet pauses until the broker has acknowledged everything in flight, so "accepted by the
broker" stays exact; the last minute is cool, so every condition has cleared by the end.

The schedule comes from `--seed`: gateway SIGKILLs at random moments, some inside the 2 s
lateness after a window ends, some staying down 2-8 s, one during start-up; edge and uplink
broker restarts; cloud replica SIGKILLs; one network cut of the uplink. Then the backlog
drains and, per machine:

- readings counted in stored digests == valid readings the broker accepted at QoS 1;
- no (machine, window_start) stored twice;
- every `over_temperature` episode raised once and cleared once, one per hot spell;
  no alert id raised twice, whatever the rule;
- baselines continue: `vibration_p50_z` is 0.0 only during the first 12 windows (its warm-up)
  and `vibration_rms_ewma_z` only during the first 3, not again after a kill;
- `/api/gateways/gw1`: no missing seq, nothing unexplained.

    python bench/soak.py                      # 13 minutes, PostgreSQL, prints the table
    python bench/soak.py --quick              # about 4 minutes
    python bench/soak.py --seed 7 --db sqlite --minutes 5

Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "tests"), str(ROOT)]

import paho.mqtt.client as paho  # noqa: E402
from sitekit import Site  # noqa: E402
from support import Broker, LinkProxy  # noqa: E402

POSTGRES = os.environ.get(
    "FOGLINE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
WINDOW = 10.0  # the factory's window size, s
LATENESS = 2.0
BASELINE_WARMUP = 12  # windows before a machine's own baseline judges it
CYCLE = 120.0  # a machine's hot spell comes every CYCLE seconds ...
HOT = 30.0  # ... and lasts three whole windows
INVALID_EVERY = 499  # prime to the fleet's size: the invalid readings go round the machines
Z_WARMUP, EWMA_WARMUP = 12, 3
START = time.monotonic()
DONE = (  # what the schedule did, in the report's order
    "gateway SIGKILL",
    "  of which during start-up",
    "  of which inside a window's lateness",
    "  of which down 2-8 s before the restart",
    "edge broker restart",
    "uplink broker restart",
    "cloud replica SIGKILL",
    "network cut (s)",
)


def log(text: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {text}", flush=True)


def soak_pipeline() -> str:
    """factory.yaml with the baselines made visible in the digests (see the module doc)."""
    text = (ROOT / "pipelines" / "factory.yaml").read_text()
    model = str(ROOT / "models" / "factory-vibration.tflite")
    edits = [
        ("model: ../models/factory-vibration.tflite", f"model: {model}"),
        (
            "  - zscore:\n      field: vibration_p50\n",
            "  - zscore:\n      id: zscore\n      field: vibration_p50\n",
        ),
        (
            "      exclude_above: 4\n\n  # Rules",
            (
                "      exclude_above: 4\n  - ewma: {id: baseline_rms, field: vibration_rms,"
                " alpha: 0.1, warmup: 3}\n\n  # Rules"
            ),
        ),
        ("uplink: {from: windows, kind: digest}", "uplink: {from: baseline_rms, kind: digest}"),
    ]
    for old, new in edits:
        if old not in text:
            raise SystemExit(f"pipelines/factory.yaml changed: cannot find {old!r}")
        text = text.replace(old, new)
    return text


class EdgeBroker(Broker):
    """The edge mosquitto as a gateway that acknowledges on commit needs it: sessions and
    QoS 1 messages kept across a restart, no cap on a subscriber's unacknowledged messages."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\n"
            "max_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true\n"
        )


# -- the fleet ---------------------------------------------------------------------------------


class Fleet:
    """Machines m-00.. on one paho client; a reading counts once the broker PUBACKs it."""

    def __init__(self, port: int, count: int, rate: float, seed: int) -> None:
        self.machines = [f"m-{i:02d}" for i in range(count)]
        self.rate = rate
        self.valid: Counter[str] = Counter()  # PUBACKed by the broker
        self.invalid: Counter[str] = Counter()
        self.cool_from = math.inf  # no hot spell starts at or after this
        self.hot_from = math.inf
        self._rng = random.Random(seed)
        self._pending: dict[int, tuple[str, bool]] = {}
        self._early: set[int] = set()  # PUBACKed before `publish` returned its mid
        self._lock = threading.Lock()
        self._paused = threading.Event()
        self._pass = threading.Lock()  # held while one reading per machine goes out
        self._stop = threading.Event()
        self._n = 0
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"soak-fleet-{uuid.uuid4().hex[:6]}",
            clean_session=False,
        )
        self.client.max_inflight_messages_set(0)  # 0: no cap
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)

    def _on_publish(self, _c: Any, _u: Any, mid: int, *_: Any) -> None:
        with self._lock:
            done = self._pending.pop(mid, None)
            if done is None:
                self._early.add(mid)
            else:
                (self.valid if done[1] else self.invalid)[done[0]] += 1

    def hot(self, machine: int, ts: float) -> bool:
        """Machine i is hot for HOT seconds from (i * WINDOW) mod CYCLE in every cycle."""
        if not self.hot_from <= ts < self.cool_from + HOT:
            return False
        start = ts - (ts - machine * WINDOW) % CYCLE
        return start >= self.hot_from and start < self.cool_from and ts - start < HOT

    def spells(self, machine: int) -> int:
        """Hot spells machine i went through: each must raise and clear one episode."""
        first = math.ceil((self.hot_from - machine * WINDOW) / CYCLE)
        last = math.ceil((self.cool_from - machine * WINDOW) / CYCLE)
        return max(0, last - first)

    def start(self) -> None:
        now = time.time()
        # `over_temperature` judges a machine against its own baseline (pipelines/factory.yaml,
        # step `normal`: 12 windows to warm up), so hot spells start once it is warm.
        self.hot_from = now - now % WINDOW + (BASELINE_WARMUP + 2) * WINDOW
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.rate
        tick = time.monotonic()
        while not self._stop.is_set():
            if self._paused.is_set():
                time.sleep(0.01)
                tick = time.monotonic()
                continue
            with self._pass:
                self._publish_all(time.time())
            tick += period
            time.sleep(max(0.0, tick - time.monotonic()))

    def _publish_all(self, ts: float) -> None:
        for i, machine in enumerate(self.machines):
            self._n += 1
            ok = self._n % INVALID_EVERY != 0
            temperature = (90.0 if self.hot(i, ts) else 60.0) + self._rng.gauss(0, 0.3)
            vibration = 2.0 + 0.1 * i / len(self.machines) + self._rng.gauss(0, 0.05)
            body = (
                f'{{"ts": {ts:.3f}, "vibration": {vibration if ok else -1.0:.4f}, '
                f'"vibration_peak": {1.5 * vibration:.4f}, "vibration_hf": 0.2, '
                f'"vibration_1x": {0.6 * vibration:.4f}, '
                f'"temperature": {temperature:.2f}, "current": 12.0, "rpm": 1480}}'
            )
            # Not under self._lock: paho calls on_publish holding its own lock.
            info = self.client.publish(f"factory/line-1/{machine}/telemetry", body, qos=1)
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    (self.valid if ok else self.invalid)[machine] += 1
                else:
                    self._pending[info.mid] = (machine, ok)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop publishing until the broker acknowledged all in flight (an exact count)."""
        self._paused.set()
        with self._pass:
            wait_for(lambda: self.in_flight() == 0, 30, "the broker to ack the fleet's readings")
        try:
            yield
            wait_for(self.client.is_connected, 30, "the fleet to reconnect")
        finally:
            self._paused.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        wait_for(lambda: self.in_flight() == 0, 60, "the broker to ack the fleet's last readings")
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


# -- the uplink cut: LinkProxy on its own event loop ------------------------------------------


class Cut:
    """tests/support.py's LinkProxy in a thread: `stall()` is a silent network partition."""

    def __init__(self, target: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = LinkProxy(target)
        threading.Thread(target=self.loop.run_forever, name="proxy", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    def stall(self) -> None:
        self.loop.call_soon_threadsafe(self.proxy.stall)

    def heal(self) -> None:
        self.loop.call_soon_threadsafe(self.proxy.heal)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


# -- the schedule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    at: float  # seconds after the fleet starts
    kind: str  # kill | kill-lateness | kill-startup | kill-down | edge | uplink | cloud | cut
    arg: float = 0.0  # an outage's length, s


def schedule(seed: int, minutes: float) -> list[Event]:
    """The issue's soak scaled to `minutes`: per 13 minutes, 32 gateway kills, 3 edge and 5
    uplink broker restarts, 5 cloud replica kills and one 2-minute network cut."""
    rng = random.Random(seed)
    span = minutes * 60.0
    quiet = max(45.0, 2 * WINDOW + LATENESS + 20.0)  # the end: nothing but cool readings
    lo, hi = 15.0, span - quiet
    scale = minutes / 13.0

    def n(per13: int) -> int:
        return max(1, round(per13 * scale))

    kills = n(32)
    # A quarter inside a window's lateness, a quarter staying down 2-8 s (a backlog builds
    # up at the broker, older than the lateness by the time the gateway is back).
    kinds = [("kill", "kill-lateness", "kill", "kill-down")[i % 4] for i in range(kills)]
    kinds[len(kinds) // 2] = "kill-startup"
    kinds += ["edge"] * n(3) + ["uplink"] * n(5) + ["cloud"] * n(5)
    events = [Event(rng.uniform(lo, hi), k, rng.uniform(2.0, 8.0)) for k in kinds]
    cut = min(120.0, 0.15 * span)
    events.append(Event(rng.uniform(lo, max(lo, hi - cut)), "cut", cut))
    return sorted(events, key=lambda e: e.at)


# -- the soak ----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path, db_url: str) -> None:
        self.args = args
        self.tmp = tmp
        (tmp / "edge").mkdir()
        (tmp / "uplink").mkdir()
        self.edge = EdgeBroker(tmp / "edge")
        self.uplink = Broker(tmp / "uplink")
        self.edge.start()
        self.uplink.start()
        self.cut = Cut(self.uplink.port)
        self.site = Site(tmp, self.edge, self.uplink, db_url)
        self.site.pipeline.write_text(soak_pipeline())
        self.done: Counter[str] = Counter()
        self.cut_until = 0.0
        self.gateway_down = 0.0

    # processes -----------------------------------------------------------------------------

    def gateway_args(self) -> tuple[str, ...]:
        # argparse keeps the last --uplink: the gateway reaches the cloud through the proxy
        return ("--uplink", self.cut.proxy.url, "--ack-readings", self.args.ack_readings)

    def start_gateway(self) -> None:
        self.site.gateway = None
        self.site.start_gateway_nowait(*self.gateway_args())
        wait_for(self.site._healthy, 60, "the gateway to be ready")  # noqa: SLF001

    def kill_gateway(self) -> None:
        self.site.kill_gateway()
        self.done["gateway SIGKILL"] += 1

    def run_event(self, event: Event, rng: random.Random) -> None:
        if event.kind in ("kill", "kill-lateness", "kill-startup", "kill-down"):
            if event.kind == "kill-lateness":  # just after a window's end, inside its lateness
                time.sleep(WINDOW - time.time() % WINDOW + rng.uniform(0.05, LATENESS - 0.1))
            down = time.monotonic()
            self.kill_gateway()
            if event.kind == "kill-startup":
                self.site.gateway = None
                self.site.start_gateway_nowait(*self.gateway_args())
                time.sleep(rng.uniform(0.1, 1.2))
                self.kill_gateway()
                self.done["  of which during start-up"] += 1
            elif event.kind == "kill-lateness":
                self.done["  of which inside a window's lateness"] += 1
            elif event.kind == "kill-down":
                time.sleep(event.arg)
                self.done["  of which down 2-8 s before the restart"] += 1
            self.start_gateway()
            self.gateway_down += time.monotonic() - down
        elif event.kind == "edge":
            with self.fleet.paused():
                self.edge.stop()
                self.edge.start()
            self.done["edge broker restart"] += 1
        elif event.kind == "uplink":
            self.uplink.stop()
            time.sleep(event.arg)
            self.uplink.start()
            self.done["uplink broker restart"] += 1
        elif event.kind == "cloud":
            replica = rng.choice(sorted(self.site.clouds or {}))
            self.site.stop_cloud(replica, signal.SIGKILL)
            time.sleep(event.arg)
            self.site.start_cloud(replica)
            self.done["cloud replica SIGKILL"] += 1
        elif event.kind == "cut":
            self.cut.stall()
            self.cut_until = time.monotonic() + event.arg
            self.done["network cut (s)"] += round(event.arg)

    def run(self) -> dict[str, Any]:
        args = self.args
        span = args.minutes * 60.0
        self.site.provision()
        for replica in ("r1", "r2"):
            self.site.start_cloud(replica)
        self.start_gateway()
        log(f"cloud r1, r2 and the gateway are up ({args.db}); pipeline {self.site.pipeline}")
        self.fleet = Fleet(self.edge.port, args.count, args.rate, args.seed)
        events = schedule(args.seed, args.minutes)
        self.fleet.start()
        started = time.monotonic()
        self.fleet.cool_from = time.time() + span - 45.0
        self.fleet.cool_from -= self.fleet.cool_from % WINDOW
        rng = random.Random(args.seed + 1)
        log(f"{len(events)} events over {span / 60:g} min (seed {args.seed}), fleet started")
        last_progress = 0.0
        for event in [*events, Event(span, "end")]:
            while (now := time.monotonic() - started) < event.at:
                if self.cut_until and time.monotonic() >= self.cut_until:
                    self.cut.heal()
                    self.cut_until = 0.0
                    log("network cut healed")
                if now - last_progress >= 10:
                    last_progress = now
                    self.progress(now)
                time.sleep(min(0.2, event.at - now))
            if event.kind == "end":
                break
            lasts = event.kind in ("cut", "uplink", "cloud", "kill-down")
            what = event.kind + (f" ({event.arg:.0f} s)" if lasts else "")
            log(f"event: {what}")
            self.run_event(event, rng)
        if self.cut_until:
            self.cut.heal()
            log("network cut healed")
        # Stop at a window's end: a machine silent for most of a last window is `sensor_gap`.
        time.sleep(WINDOW - time.time() % WINDOW - 0.05)
        self.fleet.stop()
        log(
            f"fleet stopped: {sum(self.fleet.valid.values()):,} valid and "
            f"{sum(self.fleet.invalid.values()):,} invalid readings accepted by the broker"
        )
        return self.drain_and_check()

    def progress(self, now: float) -> None:
        counted = sum(self.counted().values())
        sent = sum(self.fleet.valid.values())
        kills = self.done["gateway SIGKILL"]
        cut = " [uplink cut]" if self.cut_until else ""
        log(
            f"t={now:5.0f}s  accepted {sent:,}  counted in digests {counted:,}  "
            f"gateway kills {kills}  alerts stored {len(self.site.stored('alert'))}{cut}"
        )

    # checks --------------------------------------------------------------------------------

    def digests(self) -> list[dict[str, Any]]:
        from sqlalchemy import select  # noqa: PLC0415

        from cloud.models import Digest  # noqa: PLC0415

        query = select(Digest.device, Digest.window_start, Digest.metrics)
        with self.site.engine.connect() as conn:
            rows = conn.execute(query.where(Digest.gateway_id == "gw1")).all()
        # The device is the key, `line-1/m-00`; the fleet names machines `m-00`.
        return [{**m, "machine": d.rsplit("/", 1)[-1], "window_start": s} for d, s, m in rows]

    def counted(self) -> Counter[str]:
        per: Counter[str] = Counter()
        for d in self.digests():
            per[str(d["machine"])] += int(d["count"])
        return per

    def drain_and_check(self) -> dict[str, Any]:
        sent = {m: self.fleet.valid[m] for m in self.fleet.machines}
        # The last window closes WINDOW + LATENESS after the last reading, then the drain.
        deadline = time.monotonic() + self.args.drain_timeout
        last, stable = -1, time.monotonic()
        while time.monotonic() < deadline:
            counted = self.counted()
            total = sum(counted.values())
            if all(counted[m] >= sent[m] for m in sent):
                break
            if total != last:
                last, stable = total, time.monotonic()
                log(f"draining: {total:,} of {sum(sent.values()):,} counted")
            elif time.monotonic() - stable > 60:
                log("no progress for 60 s: checking what is stored")
                break
            time.sleep(1.0)
        try:
            wait_for(self.gateway_settled, 60, "the cloud to hold every seq of the gateway")
        except RuntimeError as e:
            log(str(e))
        return self.check(sent)

    def gateway_settled(self) -> bool:
        detail = self.site.api("/api/gateways/gw1")
        return int(detail["in_flight"]) == 0

    def check(self, sent: dict[str, int]) -> dict[str, Any]:
        digests = self.digests()
        counted: Counter[str] = Counter()
        windows: Counter[tuple[str, Any]] = Counter()
        z_zero: Counter[str] = Counter()
        ewma_zero: Counter[str] = Counter()
        by_machine: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for d in digests:
            machine = str(d["machine"])
            counted[machine] += int(d["count"])
            windows[(machine, d["window_start"])] += 1
            by_machine[machine].append(d)
        late_zero: Counter[str] = Counter()  # a zero score after the warm-up windows
        for machine, rows in by_machine.items():
            rows.sort(key=lambda r: str(r["window_start"]))
            for i, r in enumerate(rows):
                if r.get("vibration_p50_z") == 0.0:
                    z_zero[machine] += 1
                    late_zero[machine] += i >= Z_WARMUP
                if r.get("vibration_rms_ewma_z") == 0.0:
                    ewma_zero[machine] += 1
                    late_zero[machine] += i >= EWMA_WARMUP
        doubled = Counter(m for (m, _), k in windows.items() if k > 1)
        alerts = [d for _, d in self.site.stored("alert")]
        transitions = Counter((a["alert_id"], a["state"]) for a in alerts)
        twice = {a for (a, _), k in transitions.items() if k > 1}
        episodes: defaultdict[str, dict[str, set[str]]] = defaultdict(
            lambda: {"raised": set(), "cleared": set()}
        )
        rules: Counter[str] = Counter()
        for a in alerts:
            if a["state"] in ("raised", "cleared"):
                rules[f"{a['rule']} {a['state']}"] += 1
            if a["rule"] == "over_temperature" and a["state"] in ("raised", "cleared"):
                episodes[str(a["machine"])][a["state"]].add(a["alert_id"])
        detail = self.site.api("/api/gateways/gw1")
        rows = []
        ok = True
        for i, machine in enumerate(self.fleet.machines):
            ep = episodes[machine]
            row = {
                "machine": machine,
                "accepted": sent[machine],
                "invalid": self.fleet.invalid[machine],
                "counted": counted[machine],
                "windows": len(by_machine[machine]),
                "doubled": doubled[machine],
                "spells": self.fleet.spells(i),
                "raised": len(ep["raised"]),
                "cleared": len(ep["cleared"] & ep["raised"]),
                "z0": z_zero[machine],
                "ewma0": ewma_zero[machine],
                "late0": late_zero[machine],
            }
            row["ok"] = (
                row["counted"] == row["accepted"]
                and row["doubled"] == 0
                and row["raised"] == row["spells"] == row["cleared"]
                and row["late0"] == 0
            )
            ok &= bool(row["ok"])
            rows.append(row)
        gap_ok = int(detail["missing"]) == 0 and int(detail["unexplained"]) == 0
        ok &= gap_ok and not twice
        return {
            "rows": rows,
            "ok": ok,
            "twice": sorted(twice),
            "rules": dict(rules),
            "gateway": {k: detail[k] for k in ("missing", "unexplained", "evicted", "in_flight")},
            "gaps": detail["gaps"][:5],
            "done": dict(self.done),
            "gateway_down": self.gateway_down,
        }

    def close(self) -> None:
        self.site.close()
        with contextlib.suppress(Exception):
            self.cut.close()
        self.uplink.stop()
        self.edge.stop()


def report(result: dict[str, Any], args: argparse.Namespace, command: str, took: float) -> str:
    cols = ["machine", "accepted", "invalid", "counted", "windows", "doubled"]
    cols += ["spells", "raised", "cleared", "z0", "ewma0", "late0", "ok"]
    lines = [
        (
            f"`{command}`: {args.count} machines at {args.rate:g} Hz, QoS 1, "
            f"`--ack-readings {args.ack_readings}`, cloud on {args.db}, {took / 60:.1f} min "
            f"in all; load average at the end {Path('/proc/loadavg').read_text().split()[0]} "
            "(2 cores, shared)."
        ),
        "",
        "| what happened | count |",
        "| --- | --- |",
        *(f"| {k} | {result['done'][k]} |" for k in DONE if k in result["done"]),
        f"| gateway down in all (kill to ready) | {result['gateway_down']:.0f} s |",
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in result["rows"]]
    total = {c: sum(int(r[c]) for r in result["rows"]) for c in cols[1:-1]}
    lines.append(
        "| all | "
        + " | ".join(str(total[c]) for c in cols[1:-1])
        + f" | {sum(bool(r['ok']) for r in result['rows'])}/{len(result['rows'])} |"
    )
    lines += [
        "",
        f"- `/api/gateways/gw1`: {result['gateway']}"
        + (f", first gaps {result['gaps']}" if result["gaps"] else ""),
        f"- alert transitions stored, by rule: {result['rules']}",
        f"- alert ids with a transition stored twice: {len(result['twice'])}"
        + (f" ({result['twice'][:5]})" if result["twice"] else ""),
        f"- verdict: **{'all checks passed' if result['ok'] else 'FAILED'}**",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'cloud.db'}"
        return
    import psycopg  # noqa: PLC0415

    schema = f"soak_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True
    ) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--minutes", type=float, default=13.0, help="length of the chaos (13)")
    p.add_argument("--quick", action="store_true", help="about 4 minutes in all")
    p.add_argument("--seed", type=int, default=20261203, help="the schedule's seed")
    p.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument("--count", type=int, default=20, help="machines (20)")
    p.add_argument("--rate", type=float, default=10.0, help="readings/s per machine (10)")
    p.add_argument("--ack-readings", choices=["on-commit", "on-receipt"], default="on-commit")
    p.add_argument("--drain-timeout", type=float, default=300.0, help="s to wait at the end")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at the end")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes = 4.0  # past the baselines' warm-up, so some machines run hot
    return args


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt  # so that SIGTERM too stops every process this soak started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    command = "python bench/soak.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="fogline-soak-"))
    log(f"work dir {tmp}")
    with database(args.db, tmp) as db_url:
        soak = Soak(args, tmp, db_url)
        try:
            result = soak.run()
        finally:
            soak.close()
    text = report(result, args, command, time.monotonic() - START)
    print()
    print(text)
    (tmp / "report.md").write_text(text)
    if not args.keep and result["ok"]:
        import shutil  # noqa: PLC0415

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log(f"logs kept in {tmp}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
