"""`fogline cloud` as users run it: flags from FOGLINE_* variables, a real broker, a real
SQLite file, and a clean exit on SIGTERM that keeps what it acknowledged."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cloudkit import digests
from support import Broker, Collector, free_port

from fogline.cli import main
from fogline.envelope import decode_ack, uplink_topic

ROOT = Path(__file__).resolve().parents[2]


def wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("fogline cloud did not become healthy")


def test_cloud_command_stores_acks_and_stops_on_sigterm(broker: Broker, tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "cloud.db"
    env = {
        **os.environ,
        "FOGLINE_BROKER": broker.url,
        "FOGLINE_DB": f"sqlite:///{db}",
        "FOGLINE_HTTP": f"127.0.0.1:{port}",
        "FOGLINE_SIGNING_KEY": str(tmp_path / "cloud.key"),
        "FOGLINE_ALLOW_UNREGISTERED": "1",  # the test publishes as an unprovisioned gw1
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fogline.cli", "cloud", "--replica", "cli"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = Collector(broker.port, ["fogline/+/down/ack"])
    try:
        wait_healthy(port, proc)
        watch.publish(uplink_topic("gw1", "digest"), digests("gw1", range(1, 21)))
        deadline = time.monotonic() + 10
        while not watch.on("fogline/gw1/down/ack") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [decode_ack(p) for _, p in watch.on("fogline/gw1/down/ack")] == [[(1, 20)]]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        watch.client.disconnect()
        watch.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert f"API on http://127.0.0.1:{port}" in stderr
    assert "stopping: storing and acknowledging what was received" in stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM digests").fetchone() == (20,)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--http", "8080"], "expected HOST:PORT like 127.0.0.1:8080, got '8080'"),
        (["--broker", "http://x"], "expected a broker URL like mqtt://host:1883"),
        (["--db", "mysql://x/y"], "expected a database URL like sqlite:///./fogline.db"),
        (["--db", "sqlite://"], "expected a SQLite file URL"),
        (["--retention-days", "a month"], "--retention-days: expected a positive number of days"),
        (["--retention-days", "0"], "got '0'"),
        (["--silent-after", "soon"], "--silent-after: expected a positive number of seconds"),
        (["--silent-after", "-5"], "got '-5'"),
    ],
)
def test_cloud_command_rejects_bad_flags(
    args: list[str], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cloud", *args]) == 2
    assert text in capsys.readouterr().err


def test_cloud_command_reports_a_busy_port_and_a_missing_database(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["--broker", broker.url, "--db", f"sqlite:///{tmp_path / 'c.db'}"]
        assert main(["cloud", *args, "--http", f"127.0.0.1:{port}"]) == 1
    assert f"fogline cloud: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    assert main(["cloud", "--broker", broker.url, "--db", missing, "--http", "127.0.0.1:0"]) == 1
    assert f"fogline cloud: cannot use the database {missing}" in capsys.readouterr().err


@pytest.mark.parametrize("moment", ["importing", "running"])
def test_ctrl_c_stops_the_cloud_quietly_at_any_moment(
    moment: str, broker: Broker, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "FOGLINE_BROKER": broker.url,
        "FOGLINE_DB": f"sqlite:///{tmp_path / 'cloud.db'}",
        "FOGLINE_HTTP": f"127.0.0.1:{port}",
        "FOGLINE_SIGNING_KEY": str(tmp_path / "cloud.key"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fogline", "cloud"],  # `python -m fogline` is the command
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a shell's foreground job
    )  # fmt: skip
    try:
        if moment == "importing":
            time.sleep(0.3)  # the moment of the Ctrl-C is what is tested, not a wait
        else:
            wait_healthy(port, proc)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in {0, 130}, stderr
    assert "Traceback" not in stderr
