"""`python -m devices` as users run it (the same parser `fogline devices` gets)."""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from support import Broker, Collector

from devices.cli import add_parser

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FOGLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "devices", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**clean, **(env or {})},
        check=False,
    )


def test_stdout_lines_at_the_asked_rate() -> None:
    result = run("factory", "--stdout", "--count", "3", "--rate", "4", "--duration", "0.5s")
    assert result.returncode == 0, result.stderr
    lines = [line.split(" ", 1) for line in result.stdout.splitlines()]
    assert Counter(topic for topic, _ in lines) == {
        f"factory/line-1/m-0{i}/telemetry": 2 for i in (1, 2, 3)
    }
    assert {"vibration", "temperature", "current", "rpm"} <= set(orjson.loads(lines[0][1]))
    assert result.stderr.splitlines()[-1].startswith(
        "factory: 6 readings from 3 devices to stdout in 0.5s"
    )


@pytest.mark.parametrize(
    "disorder", [["--site", "seed:5", "--disorder", "0.3"], ["--site", "seed:5,disorder=0.3"]]
)
def test_a_site_drawn_from_a_seed_with_disorder(disorder: list[str]) -> None:
    result = run("factory", "--stdout", "--count", "2", "--rate", "20", "--duration", "1s",
                 *disorder)  # fmt: skip
    assert result.returncode == 0, result.stderr
    stamps: dict[str, list[float]] = {}
    for line in result.stdout.splitlines():
        topic, payload = line.split(" ", 1)
        stamps.setdefault(topic, []).append(orjson.loads(payload)["ts"])
    assert any(b < a for ts in stamps.values() for a, b in itertools.pairwise(ts))


def test_every_flag_from_the_environment() -> None:
    env = {
        "FOGLINE_STDOUT": "1",
        "FOGLINE_COUNT": "2",
        "FOGLINE_RATE": "10",
        "FOGLINE_SPEED": "10",
        "FOGLINE_DURATION": "200ms",
        "FOGLINE_FORMAT": "json",
        "FOGLINE_SEED": "9",
    }
    result = run("farm", env=env)
    assert result.returncode == 0, result.stderr
    payloads = [orjson.loads(line.split(" ", 1)[1]) for line in result.stdout.splitlines()]
    assert len(payloads) == 2 * 10 * 10 * 0.2  # devices x rate x speed x duration
    assert set(payloads[0]) == {"ts", "moisture", "valve", "flow", "pressure", "battery"}
    # The flag on the command line wins over the variable.
    again = run("farm", "--count", "1", env=env)
    assert again.returncode == 0, again.stderr
    topics = Counter(line.split(" ", 1)[0] for line in again.stdout.splitlines())
    assert topics == {"farm/north/plot-1/telemetry": 20}


def test_bad_values_are_named_with_what_was_expected() -> None:
    cases = [
        (
            ("factory", "--faults", "bearing:m-11@60s,bear:m-01@1s"),
            [
                "fogline devices factory: --faults item 1 'bearing:m-11@60s': unknown device 'm-11'; expected m-01 .. m-10 (did you mean 'm-10'?)",
                "fogline devices factory: --faults item 2 'bear:m-01@1s': unknown fault 'bear'; expected one of: bearing, dropout, imbalance, overheating, spikes, stuck",
            ],
        ),
        (
            ("farm", "--rate", "fast"),
            ["fogline devices farm: --rate: expected a number, got 'fast'"],
        ),
        (
            ("farm", "--count", "0"),
            ["fogline devices farm: --count: expected an integer of at least 1, got '0'"],
        ),
        (
            ("factory", "--raw", "--format", "senml"),
            ["fogline devices factory: --raw: the raw block travels only as JSON, not senml"],
        ),
        (
            ("factory", "--broker", "http://x"),
            [
                "fogline devices factory: --broker: expected a broker URL like mqtt://host:1883 or mqtts://user:pass@host:8883, got 'http://x'"
            ],
        ),
        (
            ("farm", "--coap", "udp://x"),
            [
                "fogline devices farm: --coap: expected a CoAP URL like coap://127.0.0.1:5683, got 'udp://x'"
            ],
        ),
        (
            ("farm", "--sim-start", "noon"),
            [
                "fogline devices farm: --sim-start: expected an ISO 8601 time like 2026-06-01T05:00:00Z or epoch seconds, got 'noon'"
            ],
        ),
        (
            ("factory", "--sample-rate", "800"),
            [
                "fogline devices factory: --sample-rate: sample rate: expected more than 1000 Hz (twice the 500 Hz start of the high band), got 800"
            ],
        ),
        (
            ("farm", "--labels", "/nonexistent/dir/l.jsonl"),
            [
                "fogline devices farm: --labels: expected a file in an existing directory, got '/nonexistent/dir/l.jsonl'"
            ],
        ),
        (
            ("farm", "--site", "sandi"),
            [
                "fogline devices farm: --site: unknown site 'sandi'; expected one of reference, field, rough-hall, slow-line, sandy, low-pressure or seed:N (did you mean 'sandy'?)"
            ],
        ),
        (
            ("factory", "--disorder", "0.9"),
            ["fogline devices factory: --disorder: expected a share of at most 0.5, got '0.9'"],
        ),
    ]
    for args, expected in cases:
        result = run(*args)
        assert (result.returncode, result.stderr.splitlines()) == (2, expected), args


def test_mqtt_run_with_faults_writes_labels(broker: Broker, tmp_path: Path) -> None:
    watch = Collector(broker.port, ["farm/+/+/telemetry"])
    try:
        labels = tmp_path / "truth.jsonl"
        started = time.time()
        result = run(
            "farm",
            "--broker",
            broker.url,
            "--count",
            "3",
            "--rate",
            "5",
            "--duration",
            "1s",
            "--faults",
            "leak:plot-2@0.4s,dropout:plot-3@0.2s+0.4s",
            "--labels",
            str(labels),
        )
        finished = time.time()
        assert result.returncode == 0, result.stderr
        assert "farm: 12 readings from 3 devices to mqtt://127.0.0.1:" in result.stderr
        assert "fault started: leak on plot-2" in result.stderr
        deadline = time.monotonic() + 10  # the broker may still be delivering the last ones
        while len(watch.on("farm/")) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert Counter(t for t, _ in watch.on("farm/")) == {
            "farm/north/plot-1/telemetry": 5,
            "farm/north/plot-2/telemetry": 5,
            "farm/north/plot-3/telemetry": 2,
        }
    finally:
        watch.close()
    rows = [orjson.loads(line) for line in labels.read_bytes().splitlines()]
    assert [(r["fault"], r["device"], r["key"]) for r in rows] == [
        ("leak", "plot-2", {"farm": "north", "plot": "plot-2"}),
        ("dropout", "plot-3", {"farm": "north", "plot": "plot-3"}),
    ]
    leak, dropout = rows
    assert started < leak["start"] < started + 5
    assert leak["start"] == leak["sim_start"]
    # Open-ended: closed at the stop, 1 s after the start, so 0.6 s after the leak began
    # (less when the leak began late); a loaded machine only makes the stop later.
    assert started + 1 <= leak["end"] <= finished
    assert leak["end"] - leak["start"] > 0.5
    assert dropout["end"] - dropout["start"] == pytest.approx(0.4)


def test_add_parser_plugs_into_another_cli() -> None:
    parser = argparse.ArgumentParser(prog="fogline")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["devices", "factory", "--count", "5", "--raw"])
    assert (args.command, args.fleet, args.count, args.raw, args.format) == (
        "devices",
        "factory",
        "5",
        True,
        "json",
    )


def test_duration_bounds_the_run_when_the_broker_is_unreachable() -> None:
    started = time.monotonic()
    done = run("factory", "--broker", "mqtt://127.0.0.1:1", "--count", "2", "--duration", "2s")
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    assert (
        "could not reach mqtt://127.0.0.1:1 within --duration 2s; nothing was sent" in done.stderr
    )
