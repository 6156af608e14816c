"""The engine's pass: each output gets its records as soon as the steps it reads have run."""

from __future__ import annotations

from pathlib import Path

from gateway.clock import FakeClock
from gateway.engine import Engine
from gateway.metrics import Metrics
from gateway.record import Record
from gateway.spec import load_pipeline

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
    hot = {"vibration": 1.0, "temperature": 105.0}
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
