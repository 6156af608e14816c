"""The --faults parser: what it accepts, and the exact words it uses to refuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from devices.factory import FAULTS as FACTORY
from devices.factory import FactoryConfig, machine_names
from devices.farm import FAULTS as FARM
from devices.faults import FaultSchedule, FaultSpec, FaultSpecError, parse_faults

MACHINES = machine_names(FactoryConfig(10))[0]
PLOTS = [f"plot-{i}" for i in range(1, 11)]


def test_good_specs() -> None:
    spec = "bearing:m-03@60s+120s, overheating:m-07@30s,imbalance:m-01@1.5m+90,stuck:m-10@0,"
    assert parse_faults(spec, FACTORY, MACHINES) == [
        FaultSpec("bearing", "m-03", 60.0, 120.0),
        FaultSpec("overheating", "m-07", 30.0, None),
        FaultSpec("imbalance", "m-01", 90.0, 90.0),
        FaultSpec("stuck", "m-10", 0.0, None),
    ]
    assert parse_faults("", FACTORY, MACHINES) == []
    assert parse_faults("leak:plot-7@30s,dryout:plot-2@500ms+5m", FARM, PLOTS) == [
        FaultSpec("leak", "plot-7", 30.0, None),
        FaultSpec("dryout", "plot-2", 0.5, 300.0),
    ]


def test_every_bad_item_is_reported_with_what_was_expected() -> None:
    spec = (
        "bearing:m-11@60s,bear:m-03@1m,overheating:m-07,imbalance:m-01@soon,"
        "stuck:m-02@10s+0s,dropout:m-02@10s+later,bearing:m-03@-5"
    )
    with pytest.raises(FaultSpecError) as caught:
        parse_faults(spec, FACTORY, MACHINES)
    assert caught.value.problems == [
        "item 1 'bearing:m-11@60s': unknown device 'm-11'; expected m-01 .. m-10 (did you mean 'm-10'?)",
        "item 2 'bear:m-03@1m': unknown fault 'bear'; expected one of: bearing, dropout, imbalance, overheating, spikes, stuck",
        "item 3 'overheating:m-07': expected FAULT:DEVICE@START[+DURATION][*STRENGTH], like bearing:m-03@60s+120s",
        "item 4 'imbalance:m-01@soon': start: expected a duration like 10s, 500ms or 5m, got 'soon'",
        "item 5 'stuck:m-02@10s+0s': duration: expected more than 0s, got '0s'",
        "item 6 'dropout:m-02@10s+later': duration: expected a duration like 10s, 500ms or 5m, got 'later'",
        "item 7 'bearing:m-03@-5': start: expected a duration of zero or more, got -5.0",
    ]
    assert str(caught.value).count("\n") == 6


def test_a_device_is_named_by_its_number_whatever_the_padding() -> None:
    """The README's `m-03` names machine 3 of a 200-machine fleet (m-001 .. m-200)."""
    big = machine_names(FactoryConfig(200))[0]
    assert big[2] == "m-003"
    spec = "bearing:m-03@60s+120s,overheating:m-7@30s,stuck:m-103@1s"
    assert [f.device for f in parse_faults(spec, FACTORY, big)] == ["m-003", "m-007", "m-103"]
    assert [f.device for f in parse_faults("leak:plot-07@1s", FARM, PLOTS)] == ["plot-7"]
    with pytest.raises(FaultSpecError) as caught:
        parse_faults("bearing:m-0201@1s", FACTORY, big)
    assert "unknown device 'm-0201'; expected m-001 .. m-200" in caught.value.problems[0]


def test_a_fault_of_the_other_fleet_is_named_as_unknown() -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_faults("bearing:plot-2@1s,leak:m-03@1s", FARM, PLOTS)
    assert caught.value.problems == [
        "item 1 'bearing:plot-2@1s': unknown fault 'bearing'; expected one of: battery, blocked, dropout, dryout, leak, spikes, stuck",
        "item 2 'leak:m-03@1s': unknown device 'm-03'; expected plot-1 .. plot-10",
    ]


def test_schedule_in_simulated_time_with_ramps() -> None:
    specs = [FaultSpec("bearing", "m-03", 10.0, 20.0), FaultSpec("stuck", "m-01", 5.0, None)]
    schedule = FaultSchedule.from_specs(specs, FACTORY, MACHINES, speed=2.0)
    bearing = schedule.faults[0]
    # Wall seconds x speed; the 30 s ramp is capped at 70 % of the 40 s it lasts.
    assert (bearing.start, bearing.end, bearing.ramp) == (20.0, 60.0, 28.0)
    assert schedule.faults[1].end == math.inf
    assert schedule.severity("bearing", 19.9)[2] == 0.0
    assert schedule.severity("bearing", 34.0)[2] == pytest.approx(0.5)
    assert schedule.severity("bearing", 59.0)[2] == 1.0
    assert schedule.severity("bearing", 60.0)[2] == 0.0
    np.testing.assert_array_equal(schedule.active("stuck", 1e6), [i == 0 for i in range(10)])
    assert [f.device for f in schedule.active_faults(30.0)] == ["m-03", "m-01"]


def test_a_strength_scales_the_fault_and_is_checked() -> None:
    parsed = parse_faults("imbalance:m-01@10s+60s*0.25,bearing:m-02@5s*1", FACTORY, MACHINES)
    assert parsed == [
        FaultSpec("imbalance", "m-01", 10.0, 60.0, 0.25),
        FaultSpec("bearing", "m-02", 5.0, None, 1.0),
    ]
    with pytest.raises(FaultSpecError) as caught:
        parse_faults("imbalance:m-01@10s*2,bearing:m-02@5s*weak", FACTORY, MACHINES)
    assert caught.value.problems == [
        "item 1 'imbalance:m-01@10s*2': strength: expected a number in (0, 1], got '2'",
        "item 2 'bearing:m-02@5s*weak': strength: expected a number in (0, 1], got 'weak'",
    ]
