"""Secrets never printed: the real CLI, failing to connect, shows no password."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import Broker, free_port

from cloud.app import CloudOptions
from fogline.identity import Identity
from fogline.redact import RedactingFilter, redact, remember
from fogline.urls import parse_broker_url
from gateway.app import GatewayOptions
from gateway.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
FOGLINE = [sys.executable, "-m", "fogline.cli"]
SECRET = "S3cretPW"  # noqa: S105 - the password the test hunts for


def test_the_cloud_hides_the_database_password_when_it_cannot_connect(tmp_path: Path) -> None:
    db = f"postgresql+psycopg://fogline:{SECRET}@127.0.0.1:{free_port()}/fogline"
    result = subprocess.run(
        [*FOGLINE, "cloud", "--db", db, "--broker", f"mqtt://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "FOGLINE_HTTP": "127.0.0.1:0"},
        check=False,
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "cannot use the database postgresql+psycopg://fogline:***@127.0.0.1:" in output
    assert SECRET not in output
    said = result.stderr.split("fogline cloud: ", 1)[1]
    assert "Connection refused; Is the server running" in said  # psycopg's two lines in one
    assert said.count("\n") == 1, said  # and no "(Background on this error at: ...)"


def test_the_gateway_hides_the_uplink_password_while_it_retries(
    broker: Broker, tmp_path: Path
) -> None:
    uplink = f"mqtts://gw:{SECRET}@127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            *FOGLINE,
            "--log-level",
            "DEBUG",
            "gateway",
            "--pipeline",
            str(ROOT / "pipelines" / "factory.yaml"),
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
            "--uplink",
            uplink,
            "--data-dir",
            str(tmp_path / "data"),
            # The strict CLI wants an identity; this test is about the URL's password only.
            "--insecure-unsigned",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    watchdog = threading.Timer(30, process.kill)  # ends the read below if nothing comes
    watchdog.start()
    lines: list[str] = []
    try:
        for line in process.stdout:  # until it has failed and retried, at DEBUG
            lines.append(line)
            if sum("uplink: cannot reach" in x for x in lines) >= 2:
                break
    finally:
        watchdog.cancel()
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    output = "".join(lines) + rest
    assert output.count("uplink: cannot reach mqtts://gw:***@127.0.0.1:") >= 2, output
    assert SECRET not in output


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (
            ["gateway", "--pipeline", "pipelines/farm.yaml", "--broker", f"mqtp://u:{SECRET}@x"],
            "got 'mqtp://u:***@x'",
        ),
        (["cloud", "--db", f"mysql://u:{SECRET}@x/y"], "got 'mysql://u:***@x/y'"),
    ],
)
def test_a_malformed_url_is_echoed_without_its_password(args: list[str], shown: str) -> None:
    result = subprocess.run(
        [*FOGLINE, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert result.returncode == 2
    assert shown in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_repr_and_str_of_a_broker_url_hide_the_password() -> None:
    url = parse_broker_url(f"mqtts://gw:{SECRET}@cloud:8883")
    assert url.password == SECRET  # still usable to connect
    assert repr(url) == (
        "BrokerUrl(host='cloud', port=8883, tls=True, username='gw', password='***')"
    )
    assert str(url) == "mqtts://gw:***@cloud:8883"
    assert SECRET not in f"{url!r} {url} {[url]} { ({'u': url}) }"


def test_log_lines_and_tracebacks_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    remember("hunter2-pw")
    log = logging.getLogger("fogline.test.redact")
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    records: list[str] = []
    handler.emit = lambda record: records.append(handler.format(record))  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        try:
            raise ConnectionError("connecting to amqp://x:hunter2-pw@h failed")  # noqa: TRY301
        except ConnectionError:
            log.exception("lost %s (dsn host=h password=%s)", "postgres://a:b@c/d", "pw9")
    finally:
        log.removeHandler(handler)
    [text] = records
    assert "hunter2-pw" not in text
    assert ":b@" not in text
    assert "pw9" not in text
    assert "lost postgres://a:***@c/d (dsn host=h password=***)" in text
    assert "ConnectionError: connecting to amqp://x:***@h failed" in text
    assert redact("no secrets here: 5 passes") == "no secrets here: 5 passes"


def test_repr_of_the_cloud_and_gateway_options_hides_the_passwords(tmp_path: Path) -> None:
    """Options objects end up in logs and tracebacks (`log.debug("%r", options)`)."""
    url = parse_broker_url(f"mqtt://cloud:{SECRET}@localhost:1883")
    options = CloudOptions(
        url,
        db_url=f"postgresql+psycopg://fogline:{SECRET}@db:5432/fogline",
        db_connect_args={"password": "other-Pw7", "sslmode": "require"},
    )
    assert options.db_url.endswith(f":{SECRET}@db:5432/fogline")  # still usable
    shown = repr(options)
    assert SECRET not in shown
    assert "other-Pw7" not in shown
    assert "db_url='postgresql+psycopg://fogline:***@db:5432/fogline'" in shown
    assert "db_connect_args={'password': '***', 'sslmode': 'require'}" in shown
    assert shown.startswith("CloudOptions(broker=BrokerUrl(host='localhost', port=1883")

    identity = Identity("gw1", "gw1", SECRET, "cloud-key", "pub", "PRIVATE-KEY-TEXT")
    pipeline = load_pipeline(ROOT / "pipelines" / "factory.yaml")
    gateway = GatewayOptions(pipeline, url, url, "gw1", tmp_path, identity=identity)
    assert SECRET not in repr(gateway)
    assert "PRIVATE-KEY-TEXT" not in repr(gateway)
