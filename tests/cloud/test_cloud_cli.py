"""`fogline cloud` as users run it: flags from FOGLINE_* variables, a real broker, a real
SQLite file, and a clean exit on SIGTERM that keeps what it acknowledged."""

from __future__ import annotations

import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cloudkit import digests
from identitykit import Pki
from support import Broker, Collector, free_port

from fogline.cli import main
from fogline.envelope import decode_ack, uplink_topic

ROOT = Path(__file__).resolve().parents[2]
CLOUD = [sys.executable, "-m", "fogline", "cloud"]


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
        (["--session-expiry", "forever"], "--session-expiry: expected a duration like 5m"),
        (["--session-expiry", "-5"], "got '-5'"),
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
        key = ["--signing-key", str(tmp_path / "cloud.key")]  # not ./fogline-cloud.key
        args = ["--broker", broker.url, "--db", f"sqlite:///{tmp_path / 'c.db'}", *key]
        assert main(["cloud", *args, "--http", f"127.0.0.1:{port}"]) == 1
    assert f"fogline cloud: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    args = ["--broker", broker.url, "--db", missing, "--http", "127.0.0.1:0", *key]
    assert main(["cloud", *args]) == 1
    # The database's own words, without SQLAlchemy's "(Background on this error at: ...)"
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("fogline")]
    assert errors == [
        f"fogline cloud: cannot use the database {missing}: unable to open database file"
    ]


def test_https_files_are_checked_before_the_cloud_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = Pki(tmp_path / "pki")
    cert, key = pki.issue("cloud", server=True)
    _, other = pki.issue("other", server=True)
    nothing = tmp_path / "nothing.pem"
    db = tmp_path / "cloud.db"
    expected = "expected a PEM certificate and its unencrypted private key, got"
    for pair, said in (
        ((nothing, key), f"--tls-cert: no such file {nothing}; expected the HTTPS certificate"),
        ((cert, nothing), f"--tls-key: no such file {nothing}; expected the HTTPS private key"),
        ((cert, other), f"--tls-cert {cert} --tls-key {other}: {expected} a key of another"),
        ((key, cert), f"--tls-cert {key} --tls-key {cert}: {expected} files it cannot read"),
    ):
        files = ["--tls-cert", str(pair[0]), "--tls-key", str(pair[1])]
        assert main(["cloud", *files, "--db", f"sqlite:///{db}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"fogline cloud: {said}"), err
        assert err.count("\n") == 1, err
    assert not db.exists(), "nothing started"


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


def session_kept(port: int, client_id: str) -> bool:
    """Whether the broker still holds a session for `client_id`. Asking takes it over, and
    the asker's own session ends as it leaves."""
    present: queue.Queue[bool] = queue.Queue()
    probe = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    probe.on_connect = lambda _c, _u, flags, _rc, _p: present.put(flags.session_present)
    probe.connect("127.0.0.1", port, clean_start=False)
    probe.loop_start()
    try:
        return present.get(timeout=5)
    finally:
        probe.disconnect()
        probe.loop_stop()


def test_a_departed_replica_is_forgotten_after_its_session_expiry(
    broker: Broker, tmp_path: Path
) -> None:
    """A replica's session (and with it its share of a shared subscription) outlives it by
    --session-expiry: 5 min by default, here 1 s; a replica renamed or removed no longer
    holds the gateways' batches for a day."""
    env = {
        **os.environ,
        "FOGLINE_BROKER": broker.url,
        "FOGLINE_DB": f"sqlite:///{tmp_path / 'cloud.db'}",
        "FOGLINE_SIGNING_KEY": str(tmp_path / "cloud.key"),
    }
    for replica, expiry in (("kept", []), ("brief", ["--session-expiry", "1"])):
        port = free_port()
        proc = subprocess.Popen(
            [*CLOUD, "--replica", replica, "--http", f"127.0.0.1:{port}", *expiry],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_healthy(port, proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert session_kept(broker.port, "fogline-cloud-kept")  # 5 min: still there
    deadline = time.monotonic() + 15
    while session_kept(broker.port, "fogline-cloud-brief"):
        assert time.monotonic() < deadline, "the session outlived --session-expiry 1"
        time.sleep(0.2)
