"""The `fogline` command as users run it: real processes, real broker, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from support import Broker, Collector, mid_window

from fogline.envelope import decode_batch

ROOT = Path(__file__).resolve().parents[2]
FOGLINE = [sys.executable, "-m", "fogline.cli"]

THREE_MISTAKES = """\
name: bad
key: [machine]
sources:
  - mqtt: {topics: ["f/{machine}/t"]}
steps:
  - validate:
      fields: {temperature: {type: number}}
  - windw: {size: 10s}
  - window:
      id: w
      from: validate
      size: 10 sec
      aggregates: {temperature: [max]}
  - filter: {from: validate, when: temprature > 3}
outputs:
  - uplink: {from: filter, kind: event}
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FOGLINE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_check_accepts_the_demo_pipelines() -> None:
    result = run("pipeline", "check", *sorted(str(p) for p in (ROOT / "pipelines").glob("*.yaml")))
    assert result.returncode == 0, result.stderr
    assert "pipeline 'factory', key (line, machine)" in result.stdout
    assert "step    spikes = spike <- readings" in result.stdout
    assert "step    stuck_alerts = alert <- still" in result.stdout
    assert "step    windows = window <- still" in result.stdout


def test_check_reports_three_located_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(THREE_MISTAKES)
    result = run("pipeline", "check", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "3 problems found"
    assert lines[0] == (
        f"{bad}:8:5 steps[1].windw: expected one of: absence, alert, baseline, deadband, "
        "derive, ewma, features, filter, frozen, infer, spike, validate, window, zscore; "
        "got unknown step type 'windw'"
    )
    size = "steps[2].window.size: expected a duration like 10s, 500ms or 5m, got '10 sec'"
    assert lines[1] == f"{bad}:12:7 {size}"
    assert lines[2].startswith(
        f"{bad}:14:30 steps[3].filter.when: expected fields that stream 'validate'"
    )
    assert "got 'temprature' which no step produces; did you mean 'temperature'?" in lines[2]


def test_check_names_a_missing_file() -> None:
    result = run("pipeline", "check", "nope.yaml")
    assert result.returncode == 1
    assert "nope.yaml:1:1 cannot read the file: No such file or directory" in result.stderr


def test_schema_and_reference_are_current() -> None:
    schema = run("pipeline", "schema")
    assert schema.returncode == 0
    assert orjson.loads(schema.stdout) == orjson.loads(
        (ROOT / "pipelines" / "schema.json").read_bytes()
    ), "pipelines/schema.json is stale: fogline pipeline schema > pipelines/schema.json"
    docs = run("pipeline", "docs")
    assert docs.stdout == (ROOT / "docs" / "operators.md").read_text(), (
        "docs/operators.md is stale: fogline pipeline docs > docs/operators.md"
    )


def test_gateway_process_end_to_end(broker: Broker, tmp_path: Path) -> None:
    """The acceptance run: readings by mosquitto_pub-like publishes, garbage, SIGTERM, and a
    restart that goes on with the window the stop kept."""
    watch = Collector(broker.port, ["fogline/gw1/up/#", "factory/+/+/actions"])
    env = {
        **os.environ,
        "FOGLINE_BROKER": broker.url,
        "FOGLINE_DATA_DIR": str(tmp_path),
        "FOGLINE_INSECURE_UNSIGNED": "1",  # no cloud here to provision it
    }

    def gateway() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*FOGLINE, "gateway", "--pipeline", "pipelines/factory.yaml", "--id", "gw1"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    proc = gateway()
    try:
        deadline = time.monotonic() + 20
        while not watch.on("fogline/gw1/up/health"):  # the first health record: it is up
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        now = mid_window(10.0)  # both readings in one 10 s window
        watch.publish(
            "factory/l1/m-01/telemetry",
            # A machine never seen before, near the limit it is held to until its usual is
            # learnt (105 °C): one reading at 106 °C after 60 °C would be a sensor spike,
            # which does not stop a machine; after 104 °C it is the real thing.
            orjson.dumps({"ts": now, "vibration": 2.0, "temperature": 104.0}),
        )
        watch.publish("factory/l1/m-01/telemetry", b"\xff\xfe garbage")
        watch.publish(
            "factory/l1/m-01/telemetry",
            orjson.dumps({"ts": now + 0.1, "vibration": 2.1, "temperature": 106.0}),
        )
        while not (watch.on("factory/l1/m-01/actions") and watch.on("fogline/gw1/up/alert")):
            assert time.monotonic() < deadline, "no action and alert for the overheating machine"
            time.sleep(0.05)
        action = orjson.loads(watch.on("factory/l1/m-01/actions")[0][1])
        assert action["command"] == "stop"
        assert action["reason"] == "critical_temperature"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        _, err = proc.communicate(timeout=5)
        assert not watch.on("fogline/gw1/up/digest")  # the open window was kept, not cut
        # The next start goes on with it: once the window ends, its digest holds both.
        proc = gateway()
        deadline = time.monotonic() + 30
        while not watch.on("fogline/gw1/up/digest"):
            assert time.monotonic() < deadline, "no digest after the restart"
            time.sleep(0.05)
        digest = decode_batch(watch.on("fogline/gw1/up/digest")[0][1])["records"][0]["data"]
        assert digest["count"] == 2
        assert digest["temperature_max"] == 106.0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)
        watch.close()
    assert "rejected a message on 'factory/l1/m-01/telemetry'" in err


def test_gateway_says_what_to_do_with_a_bad_url() -> None:
    result = run("gateway", "--pipeline", "pipelines/factory.yaml", "--broker", "http://x")
    assert result.returncode == 2
    assert "expected a broker URL like mqtt://host:1883" in result.stderr


def test_gateway_refuses_a_data_dir_it_cannot_write_in_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for where, expected in (
        (str(a_file), f"--data-dir {a_file}: exists and is not a directory"),
        ("/proc/fogline", "--data-dir /proc/fogline: cannot write there"),
    ):
        result = run("gateway", "--pipeline", "pipelines/factory.yaml", "--data-dir", where)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr


def one_error_line(stderr: str, prefix: str) -> str:
    """The error a command printed: one line (log lines aside), no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, stderr
    return errors[0]


GATEWAY = ["gateway", "--pipeline", "pipelines/factory.yaml", "--insecure-unsigned"]


def test_a_metrics_address_the_gateway_cannot_have_is_one_line(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run(*GATEWAY, *data, "--metrics-port", str(port))
    assert taken.returncode == 1
    assert one_error_line(taken.stderr, "fogline gateway:") == (
        f"fogline gateway: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "choose another --metrics-port, or a --metrics-host of this machine"
    )
    elsewhere = run(*GATEWAY, *data, "--metrics-port", "9108", "--metrics-host", "192.0.2.1")
    assert elsewhere.returncode == 1
    assert one_error_line(elsewhere.stderr, "fogline gateway:").startswith(
        "fogline gateway: cannot listen on 192.0.2.1:9108: Cannot assign requested address;"
    )


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1"])
def test_a_metrics_port_that_is_no_port_is_named(port: str) -> None:
    result = run(*GATEWAY, f"--metrics-port={port}")
    assert result.returncode == 2
    assert one_error_line(result.stderr, "fogline gateway:") == (
        f"fogline gateway: --metrics-port: expected a port number 1-65535, got '{port}'"
    )


def test_the_gateway_checks_its_flags_before_it_makes_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "var" / "lib" / "fogline"
    result = run(*GATEWAY, "--data-dir", str(data), "--ca", str(tmp_path / "no-ca.pem"))
    assert result.returncode == 2
    assert one_error_line(result.stderr, "fogline gateway:") == (
        f"fogline gateway: --ca: no such file {tmp_path / 'no-ca.pem'}"
    )
    assert not (tmp_path / "var").exists()


def test_a_data_dir_is_held_by_one_gateway_and_owned_by_one_id(
    broker: Broker, tmp_path: Path
) -> None:
    """A second process on a running gateway's directory is refused, so is another --id on
    a stopped one's (it would send that gateway's outbox as its own); a `kill -9` leaves no
    lock behind."""
    data = tmp_path / "data"
    watch = Collector(broker.port, ["fogline/+/up/health"])

    def gateway(gid: str) -> list[str]:
        return [*GATEWAY, "--broker", broker.url, "--data-dir", str(data), "--id", gid]

    log = tmp_path / "gateway.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen([*FOGLINE, *gateway("gw-a")], cwd=ROOT, stderr=out)
        seen = len(watch.on("fogline/gw-a/up/health"))
        deadline = time.monotonic() + 20
        while len(watch.on("fogline/gw-a/up/health")) == seen:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "gw-a did not start"
            time.sleep(0.05)
        return proc

    try:
        first = start()
        twin = run(*gateway("gw-a"))
        assert twin.returncode == 2
        assert one_error_line(twin.stderr, "fogline gateway:") == (
            f"fogline gateway: --data-dir {data}: another gateway (pid {first.pid}) is "
            "running there; stop it first, or give this one its own --data-dir"
        )
        assert first.poll() is None  # and the running one goes on
        first.kill()
        first.wait(10)
        other = run(*gateway("gw-b"))
        assert other.returncode == 2
        assert one_error_line(other.stderr, "fogline gateway:") == (
            f"fogline gateway: --data-dir {data} belongs to gateway 'gw-a' and holds its "
            "outbox; start that gateway with --id gw-a, or give 'gw-b' its own --data-dir"
        )
        assert watch.on("fogline/gw-b/up/health") == []
        again = start()  # the killed process's lock went with it
        again.terminate()
        assert again.wait(20) == 0
    finally:
        watch.close()


PRINTING = [
    ["pipeline", "schema"],
    ["pipeline", "docs"],
    ["pipeline", "check", "pipelines/factory.yaml"],
    ["model", "info", "models/factory-vibration.tflite"],
    ["--help"],
    ["gateway", "--help"],
    ["devices", "factory", "--help"],
    ["--version"],
]


@pytest.mark.parametrize("args", PRINTING, ids=" ".join)
def test_a_reader_that_stops_early_ends_the_command_quietly(args: list[str]) -> None:
    """`fogline pipeline schema | head`: the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*FOGLINE, *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
            cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr
    assert "Broken pipe" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
    # argparse's --help and --version drop what the pipe refused and exit 0
    assert result.returncode in {0, 128 + signal.SIGPIPE}


def test_pipeline_test_runs_the_demo_tests_and_fails_on_a_broken_one(tmp_path: Path) -> None:
    result = run("pipeline", "test", "pipelines/factory.yaml", "pipelines/farm.test.yaml")
    assert result.returncode == 0, result.stderr
    assert "ok    pipelines/factory.test.yaml: a machine heating 10 °C past its usual" in (
        result.stdout
    )
    assert result.stdout.splitlines()[-1] == "12 passed, 0 failed"
    here = tmp_path / "pipelines"
    here.mkdir()
    for name in ("factory.yaml", "factory.test.yaml"):
        text = (ROOT / "pipelines" / name).read_text()
        (here / name).write_text(text.replace("temperature > 95", "temperature > 99"))
    (tmp_path / "models").symlink_to(ROOT / "models")  # the pipeline names ../models/...
    broken = run("pipeline", "test", str(here / "factory.yaml"))
    assert broken.returncode == 1
    assert "FAIL  " in broken.stdout
    assert f"{here}/factory.test.yaml:28:9 tests[0].expect[0]: expected uplink alert at 19s" in (
        broken.stderr
    )
    missing = run("pipeline", "test", str(tmp_path / "nope.yaml"))
    assert (missing.returncode, missing.stderr.strip()) == (
        1, f"{tmp_path}/nope.test.yaml:1:1 no test file: write one beside the pipeline"
    )  # fmt: skip
