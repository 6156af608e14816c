"""What crash consistency costs the engine: the factory pipeline with and without its state
committed in every group commit (gateway/state.py), side by side, in one process.

    python bench/checkpoint_cost.py [--machines 1000] [--readings 200000] [--rounds 3]

Readings for `--machines` machines (10 kHz of event time in all), in micro-batches of 1000,
a timer pass after each, a group commit every 10 batches (the gateway's 100 ms at 100k
readings/s) and a WAL checkpoint every 10 commits, as the gateway runs them. Each round
runs both variants on fresh outboxes; the best round of each is reported, with their ratio.
No network: this isolates the checkpoint from MQTT (bench/gateway_throughput.py measures a
whole gateway).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.clock import FakeClock
from gateway.engine import Engine
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.record import Record
from gateway.spec import UplinkOutputConfig, load_pipeline
from gateway.state import SCHEMA, StateStore

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1000


class ToOutbox:
    def __init__(self, outbox: Outbox, kind: str) -> None:
        self.outbox, self.kind = outbox, kind

    def emit(self, records: list[Record]) -> None:
        for r in records:
            self.outbox.append(self.kind, "/".join(r.key), r.fields)


def readings(machines: int, n: int, t0: float) -> list[Record]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        machine = f"m-{i % machines:04d}"
        v = 1.0 + rng.random()
        fields = {
            "line": "line-1", "machine": machine, "ts": t0 + i / 10_000, "vibration": v,
            "vibration_peak": 3 * v, "vibration_hf": 0.1 * v, "vibration_1x": 0.5 * v,
            "temperature": 60.0 + rng.random(), "rpm": 1480.0,
        }  # fmt: skip
        out.append(Record(("line-1", machine), fields["ts"], fields))
    return out


def run(data: list[Record], with_state: bool, tmp: Path) -> float:
    """Readings per second through the engine and the outbox."""
    pipeline = load_pipeline(ROOT / "pipelines" / "factory.yaml")
    clock = FakeClock(data[0].ts)
    outbox = Outbox(tmp / f"{'state' if with_state else 'plain'}-{time.monotonic_ns()}.db")
    outputs: list[Any] = [
        (cfg.from_, ToOutbox(outbox, cfg.kind))
        for _, cfg in pipeline.outputs
        if isinstance(cfg, UplinkOutputConfig)
    ]
    engine = Engine(pipeline, clock, Metrics(), outputs)
    if with_state:
        state = StateStore(engine.stateful(), lambda: engine.passes)
        outbox.start(SCHEMA, lambda db, meta: state.restore(db, meta, clock.now()))
        outbox.participants.append(state)
    start = time.perf_counter()
    for n, at in enumerate(range(0, len(data), BATCH)):
        engine.process([Record(r.key, r.ts, dict(r.fields)) for r in data[at : at + BATCH]])
        clock.advance(BATCH / 10_000)
        engine.tick(clock.now())
        if n % 10 == 9:
            outbox.flush()
        if n % 100 == 99:
            outbox.checkpoint()
    outbox.flush()
    elapsed = time.perf_counter() - start
    outbox.close()
    return len(data) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = readings(args.machines, args.readings, 1_700_000_000.0)
    best = {False: 0.0, True: 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            for with_state in (False, True):
                rate = run(data, with_state, Path(tmp))
                best[with_state] = max(best[with_state], rate)
                label = "state committed" if with_state else "no state     "
                print(
                    f"round {round_}/{args.rounds}  {label}  {rate:>9,.0f} readings/s", flush=True
                )
    ratio = best[True] / best[False]
    print(f"\nbest: {best[False]:,.0f} without, {best[True]:,.0f} with state: {ratio:.0%}")


if __name__ == "__main__":
    main()
