"""Per-key state is bounded: a cap that evicts the least recently seen key, an idle expiry,
both counted per step; windows refuse a new key beyond the cap."""

from __future__ import annotations

import tracemalloc

from oplab import make_op, rec

from gateway.clock import FakeClock
from gateway.engine import Engine
from gateway.keyed import KeyedState
from gateway.metrics import Metrics
from gateway.record import Record
from gateway.spec import parse_pipeline


def counting() -> tuple[list[tuple[str, int]], KeyedState[int]]:
    events: list[tuple[str, int]] = []
    state: KeyedState[int] = KeyedState(3, 60.0, lambda reason, n: events.append((reason, n)))
    return events, state


def test_the_cap_evicts_the_least_recently_seen_key() -> None:
    events, state = counting()
    for i, key in enumerate(["a", "b", "c"]):
        state.put((key,), i, 0.0)
    assert state.get(("a",), 1.0) == 0  # a is now the most recent
    state.put(("d",), 3, 2.0)
    assert list(state) == [("c",), ("a",), ("d",)]
    assert events == [("max_keys", 1)]
    state.put(("a",), 9, 3.0)  # replacing a held key evicts nothing
    assert len(state) == 3
    assert events == [("max_keys", 1)]


def test_idle_keys_expire_from_the_old_end_only() -> None:
    events, state = counting()
    state.put(("a",), 1, 0.0)
    state.put(("b",), 2, 50.0)
    assert state.expire(59.0) == 0
    assert state.expire(61.0) == 1
    assert list(state) == [("b",)]
    assert events == [("idle", 1)]
    assert state.expire(200.0) == 1
    assert len(state) == 0


def test_keep_spares_state_from_the_idle_expiry_not_from_the_cap() -> None:
    events: list[tuple[str, int]] = []
    state: KeyedState[int] = KeyedState(
        2, 10.0, lambda r, n: events.append((r, n)), keep=lambda v: v > 0
    )
    state.put(("raised",), 1, 0.0)
    state.put(("idle",), 0, 0.0)
    assert state.expire(100.0) == 1
    assert list(state) == [("raised",)]
    state.put(("x",), 0, 101.0)
    state.put(("y",), 0, 102.0)
    assert ("raised",) not in state
    assert events == [("idle", 1), ("max_keys", 1)]


def test_a_detector_keeps_at_most_max_keys_baselines() -> None:
    clock = FakeClock()
    run = make_op("zscore", {"field": "v", "max_keys": 100, "idle_expiry": "1h"}, clock)
    evicted = run.evicted
    run.feed([rec(f"m{i}", clock.now(), v=1.0) for i in range(1000)])
    assert run.op.open_state() == 100
    assert sum(n for reason, n in evicted if reason == "max_keys") == 900
    assert len(run.out) == 1000  # every reading still scored: eviction loses history, not data
    clock.advance(3601)
    run.timer(clock.now())
    assert run.op.open_state() == 0
    assert ("idle", 100) in evicted


def test_deadband_forgets_an_idle_key_and_passes_its_next_reading() -> None:
    clock = FakeClock()
    run = make_op("deadband", {"fields": {"v": 1.0}, "idle_expiry": "10m"}, clock)
    run.feed([rec("m1", clock.now(), v=1.0), rec("m1", clock.now(), v=1.1)])
    assert len(run.out) == 1
    clock.advance(601)
    run.timer(clock.now())
    assert run.op.open_state() == 0
    run.feed([rec("m1", clock.now(), v=1.1)])
    assert len(run.out) == 2


def test_a_raised_alert_outlives_the_idle_expiry_so_its_clear_still_comes() -> None:
    clock = FakeClock()
    config = {"rules": [{"name": "hot", "raise": "t > 90"}], "idle_expiry": "1m"}
    run = make_op("alert", config, clock)
    run.feed([rec("m1", clock.now(), t=95), rec("m2", clock.now(), t=20)])
    clock.advance(120)
    run.timer(clock.now())
    [rule] = run.op._rules
    assert list(rule.episodes) == [("m1",)]  # m2's quiet episode expired, m1 is raised
    run.feed([rec("m1", clock.now(), t=20)])
    assert [r.fields["state"] for r in run.out] == ["raised", "cleared"]


def test_a_window_refuses_a_new_key_beyond_max_keys_and_counts_it() -> None:
    run = make_op("window", {"size": "10s", "max_keys": 2, "aggregates": {"v": ["mean"]}})
    run.feed([rec(f"m{i}", 1_700_000_001.0, v=1.0) for i in range(5)])
    assert run.reasons == ["too_many_keys"] * 3
    assert run.rejects[0][2] == "a window holds max_keys 2 keys already"
    assert run.op.open_state() == 2
    out = run.flush()
    assert sorted(r.key for r in out) == [("m0",), ("m1",)]


PIPELINE = """\
name: keys
key: [device]
sources:
  - mqtt: {topics: ["s/{device}/t"]}
steps:
  - deadband: {fields: {v: 0.5}, max_keys: 1000}
  - zscore: {field: v, max_keys: 1000}
  - alert: {rules: [{name: high, raise: v_z > 4}], max_keys: 1000}
  - window: {from: source, size: 10s, max_keys: 1000, aggregates: {v: [mean]}}
outputs:
  - uplink: {from: alert, kind: alert}
  - uplink: {from: window, kind: digest}
"""


class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def emit(self, records: list[Record]) -> None:
        self.records.extend(records)


def test_200k_device_ids_leave_bounded_state_and_counted_evictions() -> None:
    """Issue 9: 200k distinct ids took the gateway from 65 MB to 1 GB, never released.

    100k here (CI time); the second 50k are measured: state does not grow."""
    clock = FakeClock()
    metrics = Metrics()
    engine = Engine(parse_pipeline(PIPELINE, "p.yaml"), clock, metrics, [(["alert"], Sink())])
    batch = 5000

    def flood(first: int) -> None:
        for start in range(first, first + 50_000, batch):
            engine.process(
                [
                    Record((f"d{i}",), clock.now(), {"device": f"d{i}", "v": 1.0})
                    for i in range(start, start + batch)
                ]
            )
            clock.advance(0.01)
            engine.tick(clock.now())

    flood(0)  # warm up allocator pools before measuring
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    flood(50_000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    gauges = metrics.gauges["open_state"]()
    assert gauges[(("step", "deadband"),)] == 1000
    assert gauges[(("step", "zscore"),)] == 1000
    assert grown < 5_000_000, f"state grew by {grown} bytes"
    for step in ("deadband", "zscore", "alert"):
        assert metrics.state_evicted[(step, "max_keys")] == 99_000
    assert metrics.rejects[("window", "too_many_keys")] > 0
    assert 'fogline_state_evicted_total{step="zscore",reason="max_keys"} 99000' in metrics.render()
