"""`frozen`: runs of readings within a band, across any window; a flicker within the band
stays frozen; late and repeated readings are not counted; state survives a restore."""

from __future__ import annotations

import numpy as np
from oplab import make_op, rec


def runs(outs: list, field: str = "x") -> list[int]:
    return [o.fields[f"{field}_frozen"] for o in outs]


def test_a_stuck_sensor_counts_up_and_noise_starts_again() -> None:
    run = make_op("frozen", {"fields": {"x": 0.025}})
    rng = np.random.default_rng(3)
    healthy = run.feed([rec("p", k, x=20 + rng.normal(0, 0.15)) for k in range(200)])
    assert max(runs(healthy)) <= 3  # noise of 0.15 seldom stays within 0.025 for long
    stuck = run.feed([rec("p", 200 + k, x=v) for k, v in enumerate([21.37, 21.38, 21.37, 21.36])])
    assert runs(stuck) == [1, 2, 3, 4]  # the last digit flickers: still frozen
    [moved] = run.feed([rec("p", 204, x=21.5)])
    assert moved.fields["x_frozen"] == 1


def test_the_band_is_the_run_s_whole_spread_not_each_step() -> None:
    run = make_op("frozen", {"fields": {"x": 0.02}})
    outs = run.feed([rec("p", k, x=10 + 0.01 * k) for k in range(5)])  # a slow creep
    assert runs(outs) == [1, 2, 3, 1, 2]


def test_late_and_repeated_readings_are_not_counted_again() -> None:
    run = make_op("frozen", {"fields": {"x": 0.01}})
    outs = run.feed(
        [rec("p", 0, x=5.0), rec("p", 1, x=5.0), rec("p", 1, x=5.0), rec("p", 0.5, x=5.0)]
    )
    assert runs(outs) == [1, 2, 2, 2]


def test_keys_and_fields_run_apart_missing_fields_are_skipped_and_junk_rejected() -> None:
    run = make_op("frozen", {"fields": {"x": 0.01, "y": 0.01}})
    outs = run.feed(
        [
            rec("a", 0, x=1.0, y=2.0),
            rec("b", 0, x=1.0),
            rec("a", 1, x=1.0, y=3.0),
            rec("a", 2, x="stuck"),
            rec("a", 3, x=None, y=3.0),
        ]
    )
    assert [o.fields.get("x_frozen") for o in outs] == [1, 1, 2, None]
    assert [o.fields.get("y_frozen") for o in outs] == [1, None, 1, 2]
    assert run.rejects[0][1:] == ("wrong_type", "field 'x': expected a number, got 'stuck'")


def test_state_survives_a_checkpoint_and_restore() -> None:
    run = make_op("frozen", {"fields": {"x": 0.01}})
    run.feed([rec("p", k, x=7.0) for k in range(3)])
    delta = run.op.checkpoint()
    again = make_op("frozen", {"fields": {"x": 0.01}})
    again.op.restore(dict(delta.put), 0.0)
    [out] = again.feed([rec("p", 3, x=7.0)])
    assert out.fields["x_frozen"] == 4
