"""Detection scoring: the matcher on hand-made alerts, and short real runs through the pipelines."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest

from devices.dataset import TASKS, label_windows
from devices.evaluate import (
    DEMOS,
    START,
    Interval,
    Raise,
    Score,
    combine,
    detectable_times,
    intervals_from_labels,
    outcomes,
    random_faults,
    score,
    simulate,
)
from devices.faults import FaultSpec

A, B, C = ("l1", "m-01"), ("l1", "m-02"), ("l1", "m-03")
DETECTORS = {
    "bearing": ("vibration_anomaly",),
    "imbalance": ("vibration_anomaly",),
    "overheating": ("critical_temperature", "over_temperature"),
}


def r(rule: str, key: tuple[str, str], ts: float, emitted: float | None = None) -> Raise:
    return Raise(rule, key, ts, ts + 2 if emitted is None else emitted)


def test_recall_precision_time_to_detect_and_false_alarms_by_hand() -> None:
    faults = [
        Interval("bearing", A, 100.0, 200.0),
        Interval("bearing", B, 300.0, 400.0),  # never detected
        Interval("overheating", C, 50.0, 150.0),
    ]
    raises = [
        r("vibration_anomaly", A, 130.0, 132.0),  # detects A's bearing: 32 s
        r("vibration_anomaly", A, 215.0, 217.0),  # still A's bearing, within the grace of 20 s
        r("vibration_anomaly", A, 260.0),  # after the grace: a false alarm
        r("vibration_anomaly", B, 250.0),  # before B's fault: a false alarm
        r("over_temperature", C, 60.0, 62.0),  # detects C: 12 s
        r("critical_temperature", C, 70.0, 70.0),  # detects C again, later: does not move TTD
        r("critical_temperature", A, 150.0),  # during A's bearing: wrong kind, a false alarm
    ]
    scores = score(raises, faults, DETECTORS, grace=20.0, device_hours=10.0)

    bearing = scores["bearing"]
    assert (bearing.faults, bearing.detected, bearing.recall) == (2, 1, 0.5)
    assert (bearing.raises, bearing.matched, bearing.false) == (4, 2, 2)
    assert bearing.precision == 0.5
    assert bearing.ttd == [32.0]
    assert bearing.false_per_device_hour == pytest.approx(0.2)

    heat = scores["overheating"]
    assert (heat.faults, heat.detected, heat.recall) == (1, 1, 1.0)
    assert (heat.raises, heat.matched, heat.false) == (3, 2, 1)
    assert heat.precision == pytest.approx(2 / 3)
    assert heat.ttd == [12.0]

    # No imbalance fault: nothing to recall; A's raises matched bearing, the shared rule's
    # other kind, so they are neither right nor wrong for imbalance; the two strays are false.
    imbalance = scores["imbalance"]
    assert imbalance.faults == 0
    assert math.isnan(imbalance.recall)
    assert (imbalance.raises, imbalance.matched, imbalance.false) == (2, 0, 2)
    assert imbalance.precision == 0.0


def test_time_to_detect_percentiles_and_pooling_across_runs() -> None:
    one = Score("spikes", ("sensor_spikes",), 2, 2, 3, 3, 0, 5.0, [10.0, 30.0])
    two = Score("spikes", ("sensor_spikes",), 2, 1, 2, 1, 1, 5.0, [20.0])
    total = combine([{"spikes": one}, {"spikes": two}])["spikes"]
    assert (total.faults, total.detected, total.raises, total.matched, total.false) == (
        4,
        3,
        5,
        4,
        1,
    )
    assert total.recall == 0.75
    assert total.precision == 0.8
    assert total.false_per_device_hour == 0.1
    assert total.ttd_percentile(50) == 20.0
    assert total.ttd_percentile(95) == pytest.approx(29.0)
    assert math.isnan(Score("x", ()).ttd_percentile(95))
    with pytest.raises(ValueError, match="cannot add"):
        _ = one + Score("stuck", ("sensor_stuck",))


def test_outcomes_say_what_each_rule_hit() -> None:
    faults = [Interval("bearing", A, 100.0, 200.0), Interval("spikes", B, 0.0, 500.0)]
    raises = [
        r("vibration_anomaly", A, 150.0),
        r("critical_temperature", B, 40.0),
        r("critical_temperature", C, 40.0),
    ]
    out = outcomes(raises, faults, DETECTORS, grace=20.0)
    assert out["vibration_anomaly"] == {"detected": 1}
    assert out["critical_temperature"] == {"during spikes": 1, "healthy": 1}


def test_label_rows_become_intervals_with_open_ends_closed_at_the_stop() -> None:
    rows = [
        {"fault": "leak", "key": {"farm": "north", "plot": "plot-7"}, "start": 10.0, "end": 70.0},
        {"fault": "stuck", "key": {"farm": "north", "plot": "plot-2"}, "start": 5.0, "end": None},
    ]
    assert intervals_from_labels(rows, ("farm", "plot"), stop=99.0) == [
        Interval("leak", ("north", "plot-7"), 10.0, 70.0),
        Interval("stuck", ("north", "plot-2"), 5.0, 99.0),
    ]


def test_detectability_waits_for_a_weak_slow_fault_to_show() -> None:
    demo = DEMOS["farm"]
    faults = [
        FaultSpec("battery", "plot-1", 900.0, 1200.0, 0.3),
        FaultSpec("dropout", "plot-2", 900.0, 600.0),
    ]
    shows = detectable_times(demo, 3, faults, seconds=2400.0, count=3)
    assert START + 900.0 < shows[0] < START + 1500.0
    assert shows[1] == START + 900.0
    healthy = detectable_times(demo, 3, faults[1:], seconds=2400.0, count=3)
    assert healthy == shows[1:]


def test_random_faults_one_per_device_within_the_run_and_reproducible() -> None:
    devices = [f"m-{i:02d}" for i in range(1, 21)]
    kwargs = {"duration": 3600.0, "per_kind": 3, "warmup": 600.0, "length": (300.0, 900.0)}
    specs = random_faults(["bearing", "stuck", "dropout"], devices, 5, tail=300.0, **kwargs)
    assert len(specs) == 9
    assert len({s.device for s in specs}) == 9
    assert sorted(s.kind for s in specs) == ["bearing"] * 3 + ["dropout"] * 3 + ["stuck"] * 3
    for s in specs:
        assert s.duration is not None
        assert 300.0 <= s.duration <= 900.0
        assert s.start >= 600.0
        assert s.start + s.duration <= 3600.0 - 300.0
    assert specs == random_faults(["bearing", "stuck", "dropout"], devices, 5, tail=300.0, **kwargs)
    assert specs != random_faults(["bearing", "stuck", "dropout"], devices, 6, tail=300.0, **kwargs)
    with pytest.raises(ValueError, match="9 faults need 9 devices, the fleet has 4"):
        random_faults(["bearing", "stuck", "dropout"], devices[:4], 5, tail=300.0, **kwargs)


def test_several_faults_a_device_never_one_kind_twice() -> None:
    devices = [f"m-{i}" for i in range(6)]
    kwargs = {"duration": 3600.0, "per_kind": 4, "warmup": 600.0, "length": (300.0, 900.0)}
    for seed in range(20):
        specs = random_faults(
            ["bearing", "stuck", "dropout"], devices, seed, tail=300.0, per_device=2, **kwargs
        )
        assert len(specs) == 12
        pairs = [(s.device, s.kind) for s in specs]
        assert len(set(pairs)) == 12  # one device, one kind: at most once
        assert max(Counter(d for d, _ in pairs).values()) <= 2


def test_a_bearing_fault_and_a_stuck_sensor_are_detected_through_the_factory_pipeline() -> None:
    """Four machines for six simulated minutes: after the z-score's two-minute warm-up, m-02's
    bearing wears and m-04's sensor freezes; each raises its own alert, nothing else does."""
    faults = [
        FaultSpec("bearing", "m-02", 180.0, 120.0),
        FaultSpec("stuck", "m-04", 200.0, 100.0),
    ]
    run = simulate(DEMOS["factory"], 3, faults, seconds=360.0, devices=4)
    assert run.readings == 4 * 360  # a stuck sensor still sends, the same values
    raised = {(x.rule, x.key[1]) for x in run.raises}
    # The z-score sees the change; the model names it.
    assert raised == {
        ("vibration_anomaly", "m-02"),
        ("bearing_fault", "m-02"),
        ("sensor_stuck", "m-04"),
    }
    scores = run.score()
    assert scores["bearing"].recall == 1.0
    assert scores["bearing"].precision == 1.0
    assert scores["stuck"].recall == 1.0
    assert 0 < scores["bearing"].ttd[0] <= 40.0
    assert 0 < scores["stuck"].ttd[0] <= 2 * run.window + 2.0
    bearing, stuck = run.intervals
    assert (bearing.kind, bearing.key, bearing.start, bearing.end) == (
        "bearing",
        ("line-1", "m-02"),
        START + 180.0,
        START + 300.0,
    )
    # The bearing wears in over 30 s; it shows in the high band within seconds of onset. A
    # stuck sensor has no signature field: it counts from its first reading after onset.
    assert bearing.start < bearing.shows <= bearing.start + 15.0
    assert stuck.shows == stuck.start == START + 200.0
    assert run.device_hours == pytest.approx(0.4)


def test_a_leak_is_detected_and_the_valve_closed_through_the_farm_pipeline() -> None:
    faults = [FaultSpec("leak", "plot-2", 60.0)]
    run = simulate(DEMOS["farm"], 3, faults, seconds=300.0, devices=3)
    assert {(x.rule, x.key) for x in run.raises} == {
        ("leak_valve_closed", ("north", "plot-2")),
        ("model_leak", ("north", "plot-2")),
    }
    assert run.commands == 1  # the critical alert's close command reached the plot
    leak = run.score()["leak"]
    assert (leak.faults, leak.detected, leak.matched, leak.false) == (1, 1, 2, 0)
    assert leak.ttd[0] <= 3 * run.window


def test_a_frozen_sensor_that_is_also_silent_shows_when_it_reports_again() -> None:
    faults = [FaultSpec("stuck", "m-01", 60.0, 240.0), FaultSpec("dropout", "m-01", 50.0, 100.0)]
    stuck, dropout = detectable_times(DEMOS["factory"], 3, faults, seconds=300.0, count=2)
    assert dropout == START + 50.0  # silence is its own effect: at onset
    assert stuck == pytest.approx(START + 150.0, abs=1.0)  # not at 60 s: nothing was heard


def test_a_dried_out_plot_stays_dry_after_the_fault_and_its_windows_say_so() -> None:
    faults = [FaultSpec("dryout", "plot-1", 60.0, 600.0)]
    run = simulate(DEMOS["farm"], 3, faults, seconds=1500.0, devices=2, taps=["features"])
    [dry] = run.intervals
    # Moisture fell toward 4 % for ten minutes; one 20-minute irrigation does not bring it
    # back within 2 % of where it was: the plot is still dry when the run ends.
    assert dry.end == START + 660.0
    assert dry.recovered == START + 1500.0
    assert dry.over == dry.recovered
    after = [r for r in run.tapped["features"] if r.key[1] == "plot-1" and r.ts > dry.end + 60.0]
    labels = label_windows(after, run.intervals, TASKS["farm"].classes)
    assert after
    assert set(labels.tolist()) == {TASKS["farm"].labels.index("dry_soil")}
    assert run.score()["dryout"].false == 0


def test_a_silent_probe_is_seen_by_the_liveness_window() -> None:
    faults = [FaultSpec("dropout", "plot-1", 95.0, 120.0)]
    run = simulate(DEMOS["farm"], 3, faults, seconds=300.0, devices=2)
    assert [(x.rule, x.key[1]) for x in run.raises] == [("probe_silent", "plot-1")]
    assert run.score()["dropout"].ttd[0] <= 2 * run.window


def test_detectors_must_name_rules_of_the_pipeline() -> None:
    bad = dataclasses.replace(DEMOS["factory"], detectors={"bearing": ("bearing_wear",)})
    with pytest.raises(ValueError, match="no alert rule named bearing_wear"):
        simulate(bad, 1, [], seconds=10.0, devices=1)
