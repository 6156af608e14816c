"""End to end: real gateway and cloud processes, two real brokers, a real database."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from support import Broker, Collector, free_port

ROOT = Path(__file__).resolve().parents[2]
FOGLINE = [sys.executable, "-m", "fogline.cli", "--log-level", "WARNING"]

# Every reading goes up as an `event`; a temperature above 90 raises `hot`, below 80 clears.
PIPELINE = """
name: sf
key: [machine]
sources:
  - mqtt: {topics: ["sf/{machine}/t"], qos: 1}
steps:
  - validate:
      id: readings
      fields: {n: {type: integer}, temperature: {type: number}}
  - alert:
      id: alerts
      rules: [{name: hot, raise: temperature > 90, clear: temperature < 80, severity: critical}]
outputs:
  - uplink: {from: readings, kind: event}
  - uplink: {from: alerts, kind: alert}
health_every: 1s
"""


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Site:
    """One test's world: edge and uplink brokers, a gateway process, cloud processes."""

    tmp: Path
    edge: Broker
    uplink: Broker
    db_url: str
    gateway: subprocess.Popen[bytes] | None = None
    clouds: dict[str, subprocess.Popen[bytes]] | None = None
    gateway_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.clouds = {}
        self.http: dict[str, int] = {}
        self.pipeline = self.tmp / "sf.yaml"
        self.pipeline.write_text(PIPELINE)
        self.device = Collector(self.edge.port, [])
        self.metrics_port = free_port()
        self._engine: Engine | None = None
        self._token: str | None = None

    # -- processes ----------------------------------------------------------------------

    def provision(self) -> None:
        """`fogline cloud gateway add gw1`, as an operator would: signed from the start."""
        identity = self.tmp / "gw1" / "identity.json"
        if identity.exists():
            return
        identity.parent.mkdir(parents=True, exist_ok=True)
        key, out = str(self.tmp / "cloud.key"), str(identity)
        command = ["cloud", "gateway", "add", "gw1", "--db", self.db_url]
        subprocess.run(
            [*FOGLINE, *command, "--signing-key", key, "--out", out],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )

    def start_gateway(self, *extra: str) -> None:
        self.start_gateway_nowait(*extra)
        self.wait(self._healthy, 20, "the gateway to start")

    def start_gateway_nowait(self, *extra: str) -> None:
        self.provision()
        args = extra or self.gateway_args
        self.gateway_args = args
        with (self.tmp / "gateway.log").open("ab") as log:  # the child keeps its own copy
            self.gateway = subprocess.Popen(
                [
                    *FOGLINE,
                    "gateway",
                    "--pipeline",
                    str(self.pipeline),
                    "--id",
                    "gw1",
                    "--broker",
                    self.edge.url,
                    "--uplink",
                    self.uplink.url,
                    "--data-dir",
                    str(self.tmp / "gw1"),
                    "--metrics-port",
                    str(self.metrics_port),
                    *args,
                ],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        _stop(self.gateway, signal.SIGKILL)

    def start_cloud(self, replica: str = "r1") -> None:
        assert self.clouds is not None
        http = free_port()
        self.provision()
        args = ["--broker", self.uplink.url, "--db", self.db_url, "--http", f"127.0.0.1:{http}"]
        args += ["--signing-key", str(self.tmp / "cloud.key")]
        with (self.tmp / f"cloud-{replica}.log").open("ab") as log:  # the child keeps a copy
            self.clouds[replica] = subprocess.Popen(
                [*FOGLINE, "cloud", *args, "--replica", replica], cwd=ROOT, stdout=log, stderr=log
            )
        self.wait(lambda: self._get(http, "/healthz") == 200, 30, f"cloud {replica} to start")
        self.http[replica] = http

    @property
    def token(self) -> str:
        """An admin's API token, made once with the CLI as an operator would."""
        if self._token is None:
            db = ["--db", self.db_url]
            subprocess.run(
                [*FOGLINE, "cloud", "user", "add", "e2e", "--role", "admin", "--no-password", *db],
                check=True,
                cwd=ROOT,
                capture_output=True,
            )
            made = subprocess.run(
                [*FOGLINE, "cloud", "token", "add", "--user", "e2e", *db],
                check=True,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            self._token = made.stdout.strip()
        return self._token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def api(self, path: str, replica: str = "r1") -> Any:
        """GET the cloud's API: the parsed JSON."""
        url = f"http://127.0.0.1:{self.http[replica]}{path}"
        with urllib.request.urlopen(urllib.request.Request(url, headers=self.auth), timeout=5) as r:
            return json.loads(r.read())

    def stop_cloud(self, replica: str = "r1", sig: int = signal.SIGTERM) -> None:
        assert self.clouds is not None
        _stop(self.clouds.pop(replica), sig)

    def close(self) -> None:
        for proc in [self.gateway, *(self.clouds or {}).values()]:
            if proc is not None:
                _stop(proc)
        self.device.close()
        if self._engine is not None:
            self._engine.dispose()

    # -- traffic and checks -------------------------------------------------------------

    def publish(self, numbers: range, hot_every: int = 1) -> None:
        """Reading n is hot when (n // hot_every) is even, so alerts raise and clear."""
        for n in numbers:
            temperature = 95.0 if (n // hot_every) % 2 == 0 else 60.0
            self.device.publish("sf/m1/t", f'{{"n": {n}, "temperature": {temperature}}}'.encode())

    def gateway_metric(self, line_start: str, *, required: bool = False) -> float:
        """The first sample whose line starts so; 0 when absent, unless `required`."""
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ).read()
        for line in body.decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        assert not required, f"the gateway reports no {line_start}"
        return 0.0

    def cloud_metric(self, replica: str, line_start: str) -> float:
        """A sample from one cloud replica's /metrics; the metric must be there."""
        url = f"http://127.0.0.1:{self.http[replica]}/metrics"
        for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"cloud {replica} reports no {line_start}")

    def committed(self) -> bool:
        """Everything the gateway appended to its outbox is in a group commit."""
        return self.gateway_metric("fogline_outbox_uncommitted", required=True) == 0

    def processed(self) -> float:
        return self.gateway_metric('fogline_step_records_in_total{step="readings"}')

    def _healthy(self) -> bool:
        assert self.gateway is not None
        if self.gateway.poll() is not None:
            raise AssertionError(
                f"the gateway exited: {(self.tmp / 'gateway.log').read_text()[-2000:]}"
            )
        return self._get(self.metrics_port, "/readyz") == 200

    @staticmethod
    def _get(port: int, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return int(r.status)
        except OSError:
            return 0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url)
        return self._engine

    def stored(self, kind: str) -> list[tuple[int, dict[str, object]]]:
        """(seq, data) of the gateway's records of a kind in the cloud store, by seq."""
        from cloud.models import AlertEvent, Event  # noqa: PLC0415

        model = {"event": Event, "alert": AlertEvent}[kind]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(model.seq, model.data).where(model.gateway_id == "gw1").order_by(model.seq)
            ).all()
        return [(int(seq), dict(data)) for seq, data in rows]

    @staticmethod
    def wait(check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)

    def assert_exactly_once_in_order(self, count: int) -> None:
        """Every reading 0..count-1 stored once as an event, and once as an alert transition.
        On a timeout, says what is missing: records lost and records late look alike."""
        try:
            self.wait(
                lambda: len(self.stored("event")) >= count and len(self.stored("alert")) >= count,
                60,
                f"{count} events and alert transitions in the cloud",
            )
        except pytest.fail.Exception as exc:
            events = sorted(int(d["n"]) for _, d in self.stored("event"))
            missing = sorted(set(range(count)) - set(events))
            alerts = len(self.stored("alert"))
            raise AssertionError(
                f"{exc}: {len(events)} events stored (missing n = {missing[:20]}), "
                f"{alerts} alert transitions"
            ) from exc
        events = self.stored("event")
        assert sorted(int(d["n"]) for _, d in events) == list(range(count)), "lost or doubled"
        # Order per kind: seq increases with the reading number.
        assert [int(d["n"]) for _, d in events] == list(range(count))
        alerts = self.stored("alert")
        assert len(alerts) == count
        states = [d["state"] for _, d in alerts]
        assert states == ["raised", "cleared"] * (count // 2) + ["raised"] * (count % 2)
