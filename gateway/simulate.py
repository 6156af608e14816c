"""A pipeline in simulated time: the real decoder, engine and outputs; no broker, no clock.

`fogline pipeline test` and the tests feed it messages at chosen instants. Between two
messages the clock moves in the pipeline's own `tick` steps, firing timers as the gateway
would, so a window closes at the same simulated instant as it would live. What the outputs
emit and what the steps reject is kept in order, with the instant it happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.clock import FakeClock
from gateway.decode import Decoder, TopicPatterns
from gateway.engine import Engine, Output
from gateway.metrics import Metrics
from gateway.outputs import ActionOutput, record_body
from gateway.record import Record
from gateway.spec import ActionOutputConfig, Pipeline, UplinkOutputConfig

# Where simulated time starts: midnight UTC (2023-11-15), so that every clock-aligned window
# (10 s, 30 s, 1 min, 1 h, a day) starts with the simulation and `at: 35s` reads plainly.
START = 1_700_006_400.0


@dataclass(frozen=True, slots=True)
class Emitted:
    """One record an output produced: `uplink <kind>` or `action <topic>`."""

    output: str
    at: float
    data: dict[str, Any]


@dataclass(slots=True)
class _Uplink:
    kind: str
    sim: Simulation

    def emit(self, records: list[Record]) -> None:
        for record in records:
            self.sim.emitted.append(
                Emitted(f"uplink {self.kind}", self.sim.clock.now(), record_body(record))
            )


@dataclass
class Simulation:
    pipeline: Pipeline
    start: float = START
    gateway: str = "test-gw"
    clock: FakeClock = field(init=False)
    metrics: Metrics = field(init=False, default_factory=Metrics)
    emitted: list[Emitted] = field(init=False, default_factory=list)
    dead: list[dict[str, Any]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.clock = FakeClock(self.start)
        outputs: list[tuple[list[str], Output]] = []
        for i, (kind, cfg) in enumerate(self.pipeline.outputs):
            if isinstance(cfg, UplinkOutputConfig):
                outputs.append((cfg.from_, _Uplink(cfg.kind, self)))
            elif isinstance(cfg, ActionOutputConfig):
                label = f"outputs[{i}].{kind}"
                outputs.append((cfg.from_, ActionOutput(cfg, self._publish, self.metrics, label)))
        self.engine = Engine(self.pipeline, self.clock, self.metrics, outputs, self.dead.append)
        self._routes = [
            (patterns, self._decoder(patterns, cfg))
            for _, cfg in self.pipeline.sources
            for patterns in [TopicPatterns(getattr(cfg, "topics", None) or cfg.paths)]
        ]
        self._ticks = 1  # ticks are start + n * tick: summing 0.1 s drifts at epoch scale

    def _decoder(self, patterns: TopicPatterns, cfg: Any) -> Decoder:
        return Decoder(
            patterns,
            self.pipeline.key,
            self.engine.reject_raw,
            fmt=cfg.format,
            timestamp=cfg.timestamp,
            max_payload=cfg.max_payload,
            max_clock_skew=cfg.max_clock_skew,
            max_topic_length=cfg.max_topic_length,
            max_key_length=cfg.max_key_length,
        )

    def _publish(self, topic: str, payload: bytes, _qos: int, _retain: bool) -> bool:
        self.emitted.append(Emitted(f"action {topic}", self.clock.now(), orjson.loads(payload)))
        return True

    def advance_to(self, at: float) -> None:
        """Move the clock to `at`, firing every tick on the way."""
        tick = self.pipeline.header.tick
        while (due := self.start + self._ticks * tick) <= at:
            self.clock.t = due
            self.engine.tick(due)
            self._ticks += 1
        self.clock.t = max(self.clock.t, at)

    def send(self, topic: str, payload: bytes, at: float) -> None:
        """One message arriving at `at` (not before the last one)."""
        self.advance_to(at)
        records: list[Record] = []
        for patterns, decoder in self._routes:
            if patterns.match(topic) is not None:
                decoder.decode(topic, payload, self.clock.now(), records)
                break
        else:
            self.engine.reject_raw(topic, payload, "unknown_topic", "no source matches it")
        self.engine.process(records)

    def stop(self, at: float) -> None:
        """Run the clock to `at`, then shut down as the gateway does (open windows flush)."""
        self.advance_to(at)
        self.engine.flush()

    def rejects(self) -> dict[tuple[str, str], int]:
        return {k: n for k, n in self.metrics.rejects.items() if n}
