"""`spike`: a reading beyond both neighbours scores on its successor; steps, ramps, late and
repeated readings do not; each key learns its own spread; state survives a restore."""

from __future__ import annotations

import numpy as np
import pytest
from oplab import make_op, rec


def noisy(machine: str, n: int, level: float, sd: float, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    return [rec(machine, k, x=level + rng.normal(0, sd)) for k in range(n)]


def scores(outs: list) -> list[float]:
    return [o.fields["x_spike"] for o in outs]


def test_a_lone_reading_far_beyond_both_neighbours_scores_on_the_next_reading() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    calm = scores(run.feed(noisy("m", 40, 20.0, 0.1)))
    assert max(calm) < 8
    outs = run.feed([rec("m", 40, x=25.0), rec("m", 41, x=20.0), rec("m", 42, x=20.1)])
    assert outs[0].fields["x_spike"] == 0.0  # the spike itself is not judged yet
    assert outs[1].fields["x_spike"] > 20  # ~5 / (0.1 x sqrt 2)
    assert outs[2].fields["x_spike"] == 0.0  # its neighbour is no spike
    assert outs[1].ts == 41  # no reading held back: each comes out as it goes in


def test_a_downward_spike_counts_too() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    run.feed(noisy("m", 40, 20.0, 0.1))
    outs = run.feed([rec("m", 40, x=12.0), rec("m", 41, x=20.0)])
    assert outs[1].fields["x_spike"] > 20


@pytest.mark.parametrize(
    "shape",
    [
        [20.0, 25.0, 25.0, 25.1],  # a step up that stays (a valve opens, a leak starts)
        [15.0, 15.0, 15.1, 15.0],  # and down
        [20.0, 22.5, 25.0, 27.5],  # a fast ramp
    ],
)
def test_steps_and_ramps_are_not_spikes(shape: list[float]) -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    run.feed(noisy("m", 40, 20.0, 0.1))
    outs = run.feed([rec("m", 40 + k, x=v) for k, v in enumerate(shape)])
    assert max(scores(outs)) < 8


def test_each_key_is_judged_against_its_own_spread() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    run.feed(noisy("quiet", 40, 20.0, 0.05, seed=2) + noisy("rough", 40, 20.0, 1.0, seed=3))
    outs = run.feed(
        [
            rec("quiet", 40, x=22.0),
            rec("rough", 40, x=22.0),
            rec("quiet", 41, x=20.0),
            rec("rough", 41, x=20.0),
        ]
    )
    quiet, rough = outs[2].fields["x_spike"], outs[3].fields["x_spike"]
    assert quiet > 8 > rough


def test_warmup_and_the_floor() -> None:
    run = make_op("spike", {"fields": {"x": 0.5}, "warmup": 5})
    early = run.feed([rec("m", k, x=v) for k, v in enumerate([1.0, 9.0, 1.0])])
    assert scores(early) == [0.0, 0.0, 0.0]  # not warm: no score, whatever the jump
    run.feed([rec("m", 3 + k, x=1.0) for k in range(8)])  # a sensor that never moves
    outs = run.feed([rec("m", 20, x=3.0), rec("m", 21, x=1.0)])
    assert outs[1].fields["x_spike"] == pytest.approx(4.0)  # 2 / the floor of 0.5


def test_late_and_repeated_readings_pass_unjudged_and_are_no_neighbours() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    run.feed(noisy("m", 40, 20.0, 0.1))
    outs = run.feed(
        [
            rec("m", 40, x=20.0),
            rec("m", 40, x=20.0),  # twice
            rec("m", 38.5, x=35.0),  # late, and wild: not a neighbour of anything
            rec("m", 41, x=20.05),
        ]
    )
    assert "x_spike" not in outs[1].fields
    assert "x_spike" not in outs[2].fields
    assert outs[3].fields["x_spike"] < 8


def test_missing_and_wrong_fields() -> None:
    run = make_op("spike", {"fields": {"x": 0.01, "y": 0.01}})
    outs = run.feed([rec("m", 0, x=1.0), rec("m", 1, y=2.0), rec("m", 2, x="hot")])
    assert outs[0].fields["x_spike"] == 0.0
    assert "y_spike" not in outs[0].fields
    assert "x_spike" not in outs[1].fields
    assert outs[1].fields["y_spike"] == 0.0
    assert run.reasons == ["wrong_type"]


def test_state_survives_a_checkpoint_and_restore() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    run.feed(noisy("m", 40, 20.0, 0.1))
    run.feed([rec("m", 40, x=25.0)])
    delta = run.op.checkpoint()
    again = make_op("spike", {"fields": {"x": 0.01}})
    again.op.restore(dict(delta.put), 0.0)
    [out] = again.feed([rec("m", 41, x=20.0)])
    assert out.fields["x_spike"] > 20


def test_nothing_is_judged_across_a_moving_steady_field() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}, "steady": ["valve"]})
    rng = np.random.default_rng(4)
    run.feed([rec("m", k, x=20 + rng.normal(0, 0.1), valve=0) for k in range(40)])
    # The valve opens: one reading's transient, then the line settles.
    opening = run.feed(
        [
            rec("m", 40, x=20.0, valve=1),
            rec("m", 41, x=26.0, valve=1),
            rec("m", 42, x=20.0, valve=1),
        ]
    )
    assert max(scores(opening)) == 0.0
    # Held still again, the same shape is a spike.
    outs = run.feed([rec("m", 43, x=20.1, valve=1), rec("m", 44, x=26.0, valve=1)])
    outs += run.feed([rec("m", 45, x=20.0, valve=1)])
    assert outs[-1].fields["x_spike"] > 20


def test_a_burst_of_two_readings_scores_on_the_reading_after_it() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    calm = scores(run.feed(noisy("m", 40, 20.0, 0.1)))
    assert max(calm) < 8
    outs = run.feed([rec("m", 40 + k, x=v) for k, v in enumerate([42.6, 39.2, 20.1, 19.9])])
    assert scores(outs)[:2] == [0.0, 0.0]  # nothing said while the burst lasts
    assert outs[2].fields["x_spike"] > 20  # two readings 19 above both sides
    assert outs[3].fields["x_spike"] == 0.0


def test_a_burst_right_after_a_reading_a_little_beyond_its_neighbours_is_judged() -> None:
    """Noise puts a reading a little beyond both neighbours now and then (a small score);
    that reading is no spike, and the burst after it is judged as any other."""
    run = make_op("spike", {"fields": {"x": 0.1}})
    run.feed(noisy("m", 40, 28.0, 0.15))
    outs = run.feed(
        [rec("m", 40 + k, x=v) for k, v in enumerate([27.95, 28.14, 27.91, 67.39, 61.51, 28.02])]
    )
    assert 0 < outs[2].fields["x_spike"] < 6  # 28.14 a little above 27.95 and 27.91: noise
    assert outs[5].fields["x_spike"] > 20  # 67.39, 61.51: a burst, judged when 28.02 came


@pytest.mark.parametrize(
    "shape",
    [
        [26.0, 26.1, 26.0, 20.0],  # three readings up: a level, not a burst
        [26.0, 26.1, 20.0 + 3.0],  # back only halfway: the sides do not agree
    ],
)
def test_longer_excursions_and_unmatched_returns_are_no_burst(shape: list[float]) -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    run.feed(noisy("m", 40, 20.0, 0.1))
    outs = run.feed([rec("m", 40 + k, x=v) for k, v in enumerate(shape)])
    assert max(scores(outs)) < 8


def test_a_late_reading_between_the_two_newest_is_judged_against_them_on_itself() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    run.feed(noisy("m", 40, 20.0, 0.1))  # event times 0-39
    outs = run.feed(
        [
            rec("m", 40, x=20.02),
            rec("m", 39.5, x=35.0),  # late, between 39 and 40, and wild: a spike
            rec("m", 39.6, x=20.01),  # late, between them, and quiet
            rec("m", 41, x=20.05),
        ]
    )
    assert outs[1].fields["x_spike"] > 20
    assert outs[2].fields["x_spike"] < 6
    assert outs[3].fields["x_spike"] < 6  # nothing learnt from them, no neighbour of 41


def test_a_late_reading_scores_every_field_it_holds_even_one_that_cannot_be_judged() -> None:
    """After a spike in y, y has no reading before the newest to judge a late one against:
    it scores 0, like x's quiet reading, and is never left out (a rule reading both failed
    on it, and the alert step rejected the whole record)."""
    run = make_op("spike", {"fields": {"x": 0.01, "y": 0.01}})
    rng = np.random.default_rng(3)
    run.feed([rec("m", k, x=20 + rng.normal(0, 0.1), y=5 + rng.normal(0, 0.1)) for k in range(40)])
    outs = run.feed(
        [
            rec("m", 40, x=20.0, y=9.0),  # a spike in y
            rec("m", 41, x=20.1, y=5.0),  # judged now: y has no reading before the newest
            rec("m", 40.5, x=35.0, y=5.1),  # late, between them: x is judged, y cannot be
        ]
    )
    assert outs[1].fields["y_spike"] > 20
    assert outs[2].fields["x_spike"] > 20
    assert outs[2].fields["y_spike"] == 0.0


def test_a_state_written_before_late_readings_were_judged_restores() -> None:
    run = make_op("spike", {"fields": {"x": 0.01}})
    run.feed(noisy("m", 10, 20.0, 0.1))
    [(key, part)] = run.op.checkpoint().put
    old = make_op("spike", {"fields": {"x": 0.01}})
    assert part.endswith(b",8.0]")  # the event time before the newest, 9.0
    old.op.restore({key: part.rsplit(b",", 1)[0] + b"]"}, 0.0)
    outs = old.feed([rec("m", 8.5, x=35.0), rec("m", 10, x=20.0), rec("m", 11, x=20.0)])
    assert "x_spike" not in outs[0].fields  # the time before the newest is not known yet
    assert outs[2].fields["x_spike"] < 6
