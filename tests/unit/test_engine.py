"""The engine's pass: each output gets its records as soon as the steps it reads have run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.engine import Engine
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outputs import UplinkOutput
from gateway.record import Record
from gateway.spec import load_pipeline, parse_pipeline
from gateway.uplink import Uplink

FACTORY = Path(__file__).resolve().parents[2] / "pipelines" / "factory.yaml"


class Recorder:
    """An output that notes, per emit, how far the pass had gone (records into `windows`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.emits: list[tuple[int, int]] = []  # (records, records `windows` had taken in)

    def emit(self, records: list[Record]) -> None:
        self.emits.append((len(records), self.metrics.step_in["windows"]))


def test_a_stop_action_leaves_before_the_steps_after_its_alert_run() -> None:
    pipeline = load_pipeline(FACTORY)
    metrics = Metrics()
    recorders = [Recorder(metrics) for _ in pipeline.outputs]
    engine = Engine(
        pipeline,
        FakeClock(1_700_000_000.0),
        metrics,
        [(cfg.from_, rec) for (_, cfg), rec in zip(pipeline.outputs, recorders, strict=True)],
    )
    kinds = [kind for kind, _ in pipeline.outputs]
    action = recorders[kinds.index("action")]
    machines = [f"m-{i:02d}" for i in range(200)]
    hot = {"vibration": 1.0, "temperature": 106.0}  # machines never seen: held to 105 °C
    batch = [
        Record(("line-1", m), 1_700_000_000.0, {"line": "line-1", "machine": m, **hot})
        for m in machines
    ]
    engine.process(batch)
    assert action.emits == [(200, 0)], "200 stops, sent before `windows` took in a reading"
    assert metrics.step_in["windows"] == 200  # and the pass then went on
    # The uplink's alerts read `critical` too, and `alerts` further down: the critical
    # alerts go to the outbox at once as well.
    uplink_alerts = next(
        rec
        for (kind, cfg), rec in zip(pipeline.outputs, recorders, strict=True)
        if kind == "uplink" and "alerts" in cfg.from_
    )
    assert uplink_alerts.emits == [(200, 0)]


def test_one_record_the_outbox_cannot_write_does_not_cost_its_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A square past 64 bits is refused where it is computed; a record that still cannot be
    written (here a reading the decoder passed on) is refused alone by the outbox: the rest
    of the output batch is stored under consecutive seqs, and nothing counts as an
    output error."""
    pipeline = parse_pipeline(SQUARES, "squares.yaml")
    metrics = Metrics()
    clock = FakeClock(1_700_000_000.0)
    box = Outbox(tmp_path / "o.db")
    uplink = Uplink("gw1", box, metrics, clock)
    outputs = [(cfg.from_, UplinkOutput(cfg, uplink)) for _, cfg in pipeline.outputs]
    engine = Engine(pipeline, clock, metrics, outputs)  # type: ignore[arg-type]
    xs = [3, 2**40, 4, 5]
    batch = [Record((f"m{i}",), clock.now(), {"x": x}) for i, x in enumerate(xs)]
    engine.process(batch)
    box.flush()
    stored = box.read("event", 0, 100, 1 << 20)
    assert [(seq, data["sq"]) for seq, _, data in stored] == [(1, 9), (2, 16), (3, 25)]
    assert metrics.rejects[("squares", "expression_limit")] == 1
    assert metrics.rejects[("output", "output_error")] == 0

    with caplog.at_level(logging.WARNING, "fogline.gateway.uplink"):
        uplink.send("event", [("m7", {"sq": 49}), ("m8", {"sq": 2**70}), ("m9", {"sq": 81})])
    box.flush()
    stored = box.read("event", 3, 100, 1 << 20)
    assert [(seq, device) for seq, device, _ in stored] == [(4, "m7"), (5, "m9")]
    assert metrics.rejects[("uplink", "unserialisable")] == 1
    assert (
        "refused a record (kind event, device 'm8') that cannot be written as JSON" in caplog.text
    )
    box.close()


SQUARES = """
name: squares
key: [machine]
sources:
  - mqtt: {topics: ["f/{machine}/t"]}
steps:
  - derive: {id: squares, fields: {sq: "x * x"}}
outputs:
  - uplink: {from: squares, kind: event}
"""
