"""Operator state survives a crash: checkpoints committed with the outbox (gateway/state.py).

The contract, tested on the factory pipeline (windows, feature blocks, z-score and EWMA
baselines, alerts with `for:` and cooldowns, the model's escalation budget): a run killed at
any point and restarted from its last commit, with what came after that commit delivered
again, leaves exactly the outbox an uninterrupted run leaves, record for record and seq for
seq. And a changed step starts empty, reported, while the others keep their state.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.clock import FakeClock
from gateway.engine import Engine
from gateway.metrics import Metrics
from gateway.operators.window import DROPS_PER_COMMIT
from gateway.outbox import Outbox
from gateway.record import Record
from gateway.spec import Pipeline, UplinkOutputConfig, load_pipeline, parse_pipeline
from gateway.state import SCHEMA, StateStore

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "pipelines" / "factory.yaml"
MACHINES = [f"m-{i:02d}" for i in range(1, 7)]
Event = tuple[str, Any]  # ("batch", records) or ("tick", the time it moves the clock to)
WINDOW = """\
name: t
key: [device]
sources:
  - mqtt: {topics: ["s/{device}"]}
steps:
  - window: {id: w, size: 10s, aggregates: {v: [sum, count]}}
outputs:
  - uplink: {from: w, kind: digest}
"""


class OutboxOutput:
    def __init__(self, outbox: Outbox, kind: str) -> None:
        self.outbox, self.kind = outbox, kind

    def emit(self, records: list[Record]) -> None:
        for r in records:
            self.outbox.append(self.kind, "/".join(r.key), r.fields)


@dataclass
class Site:
    engine: Engine
    outbox: Outbox
    state: StateStore


def start(path: Path, pipeline: Pipeline, clock: FakeClock) -> Site:
    """What `Gateway.__init__` does with the outbox and the state, without the network."""
    outbox = Outbox(path)
    outputs: list[Any] = [
        (cfg.from_, OutboxOutput(outbox, cfg.kind))
        for _, cfg in pipeline.outputs
        if isinstance(cfg, UplinkOutputConfig)
    ]
    engine = Engine(pipeline, clock, Metrics(), outputs)
    state = StateStore(engine.stateful(), lambda: engine.passes)
    outbox.start(SCHEMA, lambda db, meta: state.restore(db, meta, clock.now()))
    outbox.participants.append(state)
    return Site(engine, outbox, state)


def readings(seed: int, seconds: int) -> list[Event]:
    """Six machines at 5 Hz, in 0.2 s batches: one heats past 95 °C and cools, one grows a
    vibration fault, one falls silent for a while; a tick every batch."""
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    t0 = 1_700_000_000.0
    base = {m: 1.0 + 0.5 * i for i, m in enumerate(MACHINES)}
    for step in range(seconds * 5):
        t = t0 + step * 0.2
        batch = []
        for m in MACHINES:
            if m == "m-03" and 43 <= step // 5 < 55:
                continue  # silent
            heat = (
                30 * np.sin(np.pi * min(1.0, max(0.0, (step / 5 - 20) / 60))) if m == "m-02" else 0
            )
            grow = 1 + 3 * max(0.0, (step / 5 - 30) / 60) if m == "m-04" else 1
            v = float(base[m] * grow * (1 + 0.05 * rng.standard_normal()))
            fields = {
                "line": "line-1",
                "machine": m,
                "ts": t + 0.01 * rng.random(),
                "vibration": v,
                "vibration_peak": v * 3.1,
                "vibration_hf": 0.1 * v,
                "vibration_1x": 0.5 * v,
                "temperature": float(70 + heat + rng.standard_normal()),
                "rpm": 1480.0,
            }
            batch.append(Record(("line-1", m), fields["ts"], fields))
        events.append(("batch", batch))
        events.append(("tick", t + 0.2))
    return events


def run(site: Site, clock: FakeClock, event: Event) -> None:
    kind, value = event
    if kind == "batch":
        site.engine.process([Record(r.key, r.ts, dict(r.fields)) for r in value])
    else:
        clock.t = value
        site.engine.tick(clock.now())


def committed(path: Path) -> list[tuple[int, int, str, Any]]:
    db = sqlite3.connect(path)
    rows = db.execute("SELECT seq, class, device, data FROM outbox ORDER BY seq").fetchall()
    db.close()
    return [(seq, cls, device, orjson.loads(data)) for seq, cls, device, data in rows]


def test_a_run_killed_anywhere_leaves_the_outbox_of_a_run_never_killed(tmp_path: Path) -> None:
    pipeline = load_pipeline(FACTORY)
    events = readings(seed=7, seconds=150)
    # Uninterrupted, committing every 5 events.
    clock = FakeClock(1_700_000_000.0)
    site = start(tmp_path / "ref.db", pipeline, clock)
    for i, event in enumerate(events):
        run(site, clock, event)
        if i % 5 == 4:
            site.outbox.flush()
    site.outbox.flush()
    reference = committed(tmp_path / "ref.db")
    kinds = {cls for _, cls, _, _ in reference}
    assert len(reference) > 80
    assert len(kinds) >= 2  # digests and alerts
    alerts = [data for _, cls, _, data in reference if cls == 0]
    rules = {a["rule"] for a in alerts}
    assert "critical_temperature" in rules
    assert len(rules) >= 3

    # Killed at 12 random moments: everything after the last commit is lost from memory, and
    # delivered again (the broker still holds what was not acknowledged).
    rng = random.Random(11)
    kills = sorted(rng.sample(range(10, len(events) - 10), 12))
    clock = FakeClock(1_700_000_000.0)
    path = tmp_path / "crash.db"
    site = start(path, pipeline, clock)
    i = last_commit = 0
    restarts = 0
    while i < len(events):
        if kills and i == kills[0]:
            kills.pop(0)
            site.outbox._db.close()  # no flush: like SIGKILL
            # The clock goes back to where the last commit left it, so that the run after the
            # restart is the very run the reference made (time lost to a crash is tested
            # end to end, tests/e2e/test_crash_consistency.py).
            site = start(path, pipeline, clock)
            assert site.state.reset == []
            assert site.state.restored_parts > 0
            restarts += 1
            i = last_commit
            clock.t = max([1_700_000_000.0] + [v for k, v in events[:i] if k == "tick"])
            continue
        run(site, clock, events[i])
        i += 1
        if i % 5 == 0:
            site.outbox.flush()
            last_commit = i
    site.outbox.flush()
    assert restarts == 12
    assert committed(path) == reference


def test_a_changed_step_starts_empty_and_says_so(tmp_path: Path, caplog: Any) -> None:
    text = """\
name: t
key: [device]
sources:
  - mqtt: {topics: ["s/{device}"]}
steps:
  - zscore: {id: z, field: v, warmup: 3}
  - window: {id: w, from: source, size: 10s, aggregates: {v: [mean]}}
outputs:
  - uplink: {from: w, kind: digest}
"""
    clock = FakeClock(1000.0)
    site = start(tmp_path / "o.db", parse_pipeline(text, "t.yaml"), clock)
    site.engine.process(
        [Record(("d",), 1001.0 + i, {"device": "d", "v": 1.0 + i}) for i in range(5)]
    )
    site.outbox.flush()
    site.outbox._db.close()

    changed = parse_pipeline(text.replace("warmup: 3", "warmup: 4"), "t.yaml")
    site = start(tmp_path / "o.db", changed, clock)
    assert site.state.reset == ["z"]
    assert "state of step(s) z does not match" in caplog.text
    assert site.engine.steps[0][3].open_state() == 0  # the z-score baseline starts again
    assert site.engine.steps[1][3].open_state() == 1  # the window kept its 5 readings
    clock.advance(20)
    site.engine.tick(clock.now())
    site.outbox.flush()
    (digest,) = [data for _, _, _, data in committed(tmp_path / "o.db")]
    assert digest["count"] == 5


@pytest.mark.parametrize("fail_at", ["state", "commit"])
def test_a_failed_commit_is_written_by_the_next(tmp_path: Path, fail_at: str) -> None:
    """Nothing taken by a checkpoint that rolled back is forgotten."""
    text = WINDOW
    clock = FakeClock(1000.0)
    pipeline = parse_pipeline(text, "t.yaml")
    site = start(tmp_path / "o.db", pipeline, clock)
    site.engine.process([Record(("d",), 1001.0, {"device": "d", "v": 1.0})])
    site.outbox.flush()
    site.engine.process([Record(("d",), 1002.0, {"device": "d", "v": 2.0})])

    class Boom:
        def pending(self) -> bool:
            return True

        def write(self, db: sqlite3.Connection) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        def done(self, ok: bool) -> None:
            pass

    if fail_at == "state":
        site.outbox.participants.append(Boom())
    else:
        site.outbox.participants.insert(0, Boom())
    with pytest.raises(sqlite3.OperationalError):
        site.outbox.flush()
    site.outbox.participants = [p for p in site.outbox.participants if not isinstance(p, Boom)]
    site.outbox.flush()
    site.outbox._db.close()
    site = start(tmp_path / "o.db", pipeline, clock)
    clock.advance(20)
    site.engine.tick(clock.now())
    site.outbox.flush()
    (digest,) = [data for _, _, _, data in committed(tmp_path / "o.db")]
    assert (digest["count"], digest["v_sum"]) == (2, 3.0)


def test_a_flood_of_keys_between_commits_keeps_the_stored_state_bounded(tmp_path: Path) -> None:
    """More keys gone than `max_keys` between two commits: the step is written whole."""
    text = """\
name: t
key: [device]
sources:
  - mqtt: {topics: ["s/{device}"]}
steps:
  - deadband: {id: d, fields: {v: 0.5}, max_keys: 3}
outputs:
  - uplink: {from: d, kind: event}
"""
    clock = FakeClock(1000.0)
    pipeline = parse_pipeline(text, "t.yaml")
    site = start(tmp_path / "o.db", pipeline, clock)
    site.engine.process([Record((k,), 1001.0, {"device": k, "v": 1.0}) for k in "abc"])
    site.outbox.flush()
    site.engine.process(
        [Record((str(i),), 1002.0, {"device": str(i), "v": 1.0}) for i in range(50)]
    )
    site.outbox.flush()
    db = sqlite3.connect(tmp_path / "o.db")
    parts = sorted(p for (p,) in db.execute("SELECT part FROM state WHERE step = 'd'"))
    db.close()
    assert parts == ['["47"]', '["48"]', '["49"]']
    site.outbox._db.close()
    site = start(tmp_path / "o.db", pipeline, clock)
    assert site.engine.steps[0][3].open_state() == 3


def test_spent_window_segments_are_deleted_a_few_a_commit_and_never_replayed(
    tmp_path: Path,
) -> None:
    """A closing window spends every segment it was stored in at once; deleting them all in
    one commit stalled the gateway, so each commit deletes a few, and a restart in between
    takes in only the live ones."""
    text = WINDOW
    clock = FakeClock(1000.0)
    site = start(tmp_path / "o.db", parse_pipeline(text, "t.yaml"), clock)

    def stored() -> int:
        (n,) = site.outbox._db.execute("SELECT count(*) FROM state WHERE step = 'w'").fetchone()
        return int(n)

    for i in range(100):  # a commit for each reading: 100 segments for the window [1000, 1010)
        site.engine.process([Record(("d",), 1000.0 + i / 10, {"device": "d", "v": 1.0})])
        site.outbox.flush()
    assert stored() == 101  # and the marks
    clock.advance(13)
    site.engine.tick(clock.now())  # the window closes: its 100 segments are spent
    site.engine.process([Record(("d",), 1021.0, {"device": "d", "v": 5.0})])
    site.outbox.flush()
    assert stored() == 101 - DROPS_PER_COMMIT + 1  # a few gone, the new reading's segment in
    site.outbox._db.close()

    site = start(tmp_path / "o.db", parse_pipeline(text, "t.yaml"), clock)
    clock.advance(20)
    site.engine.tick(clock.now())
    for _ in range(4):
        site.outbox.flush()
    digests = [data for _, _, _, data in committed(tmp_path / "o.db")]
    assert [(d["v_sum"], d["count"]) for d in digests] == [(100.0, 100), (5.0, 1)]
    assert stored() == 1  # every spent segment deleted: the marks are left


def test_windows_closed_but_not_yet_emitted_survive_a_restart(tmp_path: Path) -> None:
    """A gateway emits a boundary's windows `emit_limit` at a time; a crash between two
    shares loses none of the rest, and emits none twice."""
    text = WINDOW
    clock = FakeClock(1000.0)
    site = start(tmp_path / "o.db", parse_pipeline(text, "t.yaml"), clock)
    window = site.engine.steps[0][3]
    window.emit_limit = 100  # type: ignore[attr-defined]
    site.engine.process(
        [Record((f"d{i}",), 1001.0, {"device": f"d{i}", "v": float(i)}) for i in range(250)]
    )
    clock.advance(20)
    site.engine.tick(clock.now())
    assert site.engine.pending()
    site.outbox.flush()  # 100 digests and the state: 150 windows closed, not emitted
    assert len(committed(tmp_path / "o.db")) == 100
    site.outbox._db.close()  # the crash

    site = start(tmp_path / "o.db", parse_pipeline(text, "t.yaml"), clock)
    site.engine.steps[0][3].emit_limit = 100  # type: ignore[attr-defined]
    site.engine.tick(clock.now())
    while site.engine.pending():
        site.engine.tick(clock.now())
    site.outbox.flush()
    digests = [data for _, _, _, data in committed(tmp_path / "o.db")]
    assert sorted(d["v_sum"] for d in digests) == [float(i) for i in range(250)]
