"""`alert`: transitions only, with hysteresis, `for:` duration, cooldown and messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oplab import make_op, rec, run_op

from gateway.operators.alert import EVENT_FIELDS, raised_alerts

HYSTERESIS = {"name": "hot", "raise": "x > 85", "clear": "x < 80"}


def alert(rules, records):
    return run_op("alert", {"rules": rules}, records)


def series(xs, machine="m1", step=1.0):
    return [rec(machine, i * step, x=x) for i, x in enumerate(xs)]


def states(run):
    return [(r.ts, r.fields["state"]) for r in run.out]


def test_one_raise_and_one_clear_per_episode():
    xs = [70, 90, 92, 95, 91, 70, 60, 88, 89, 10]
    run = alert([{"name": "hot", "raise": "x > 85"}], series(xs))
    assert states(run) == [(1, "raised"), (5, "cleared"), (7, "raised"), (9, "cleared")]


def test_event_fields():
    run = alert(
        [{"name": "hot", "raise": "x > 85", "severity": "critical"}],
        [rec("m1", 10.0, x=90, other=1), rec("m1", 12.5, x=50, other=2)],
    )
    raised, cleared = run.out
    assert set(raised.fields) == {"machine", *EVENT_FIELDS}
    assert raised.key == ("m1",)
    assert raised.ts == 10.0
    assert raised.fields == {
        "machine": "m1",
        "rule": "hot",
        "severity": "critical",
        "state": "raised",
        "alert_id": "hot/m1/10000",
        "raised_at": 10.0,
        "cleared_at": None,
        "values": {"x": 90},
        "message": "hot raised for m1",
    }
    assert cleared.ts == 12.5
    assert cleared.fields["state"] == "cleared"
    assert cleared.fields["raised_at"] == 10.0
    assert cleared.fields["cleared_at"] == 12.5
    assert cleared.fields["values"] == {"x": 50}
    assert cleared.fields["message"] == "hot cleared for m1"


def test_alert_id_is_shared_by_raise_and_clear_and_new_per_episode():
    run = alert([HYSTERESIS], series([90, 79, 90, 79]))
    ids = [r.fields["alert_id"] for r in run.out]
    assert ids[0] == ids[1]
    assert ids[2] == ids[3]
    assert ids[0] != ids[2]


def test_hysteresis_holds_between_the_thresholds():
    xs = [84, 86, 82, 80, 84.9, 90, 79.9, 82, 85]
    run = alert([HYSTERESIS], series(xs))
    assert states(run) == [(1, "raised"), (6, "cleared")]


band = st.floats(min_value=80, max_value=85)  # neither x > 85 nor x < 80


@settings(max_examples=150, deadline=None)
@given(raised_first=st.booleans(), xs=st.lists(band, min_size=1, max_size=40))
def test_no_transition_while_the_signal_stays_between_the_thresholds(raised_first, xs):
    prefix = [90.0] if raised_first else []
    run = alert([HYSTERESIS], series([*prefix, *xs]))
    assert states(run) == ([(0.0, "raised")] if raised_first else [])
    assert run.op.open_state() == int(raised_first)


@settings(max_examples=150, deadline=None)
@given(xs=st.lists(st.floats(min_value=60, max_value=100), max_size=60))
def test_transitions_alternate_and_happen_only_past_their_thresholds(xs):
    run = alert([HYSTERESIS], series(xs))
    expected, up = [], False
    for i, x in enumerate(xs):
        if not up and x > 85:
            expected.append((float(i), "raised"))
            up = True
        elif up and x < 80:
            expected.append((float(i), "cleared"))
            up = False
    assert states(run) == expected


def test_clear_defaults_to_not_raise():
    run = alert([{"name": "hot", "raise": "x > 85"}], series([90, 86, 85, 90]))
    assert states(run) == [(0, "raised"), (2, "cleared"), (3, "raised")]


def test_for_delays_the_raise_until_the_condition_held_long_enough():
    times = [0, 10, 19.9, 20, 30]
    run = alert([{**HYSTERESIS, "for": "20s"}], [rec("m1", t, x=90) for t in times])
    assert states(run) == [(20, "raised")]
    assert run.out[0].fields["raised_at"] == 20


def test_for_resets_when_the_condition_stops_holding():
    points = [(0, 90), (10, 90), (15, 84), (20, 90), (35, 90), (40, 90)]
    run = alert([{**HYSTERESIS, "for": 20}], [rec("m1", t, x=x) for t, x in points])
    assert states(run) == [(40, "raised")]


def test_for_is_measured_in_event_time_across_batches():
    run = make_op("alert", {"rules": [{**HYSTERESIS, "for": "1m"}]})
    assert run.feed([rec("m1", 1000, x=90)]) == []
    assert run.feed([rec("m1", 1059, x=90)]) == []
    [raised] = run.feed([rec("m1", 1060, x=90)])
    assert raised.fields["state"] == "raised"


def test_for_readings_raises_on_the_nth_record_in_a_row_at_any_spacing():
    rule = {**HYSTERESIS, "for_readings": 3}
    for step in (0.5, 5.0, 60.0):
        run = alert([rule], series([90, 90, 90, 90], step=step))
        assert states(run) == [(2 * step, "raised")]


def test_for_readings_counts_again_after_a_record_that_does_not_hold():
    run = alert([{**HYSTERESIS, "for_readings": 3}], series([90, 90, 84, 90, 90, 90]))
    assert states(run) == [(5, "raised")]


def test_for_readings_and_for_must_both_hold():
    rule = {**HYSTERESIS, "for_readings": 3, "for": "10s"}
    assert states(alert([rule], series([90] * 4, step=20.0))) == [(40, "raised")]
    assert states(alert([rule], series([90] * 12, step=1.0))) == [(10, "raised")]


def test_for_readings_count_survives_a_checkpoint_and_restore():
    config = {"rules": [{**HYSTERESIS, "for_readings": 3}]}
    run = make_op("alert", config)
    assert run.feed(series([90, 90])) == []
    again = make_op("alert", config)
    again.op.restore(dict(run.op.checkpoint().put), 0.0)
    [raised] = again.feed([rec("m1", 2.0, x=90)])
    assert raised.fields["state"] == "raised"


def test_a_part_written_before_for_readings_restores():
    config = {"rules": [{**HYSTERESIS, "for": "10s"}]}
    run = make_op("alert", config)
    run.op.restore({'["hot", "m1"]': b'[0.0, null, "", null]'}, 0.0)
    [raised] = run.feed([rec("m1", 10.0, x=90)])
    assert raised.fields["state"] == "raised"


def test_cooldown_suppresses_a_re_raise_and_counts_it():
    points = [(0, 90), (10, 70), (20, 90), (100, 90), (200, 70), (250, 90), (310, 90)]
    run = alert([{**HYSTERESIS, "cooldown": "5m"}], [rec("m1", t, x=x) for t, x in points])
    assert states(run) == [(0, "raised"), (10, "cleared"), (310, "raised")]
    assert run.op.suppressed == 3


def test_cooldown_counts_from_the_clear_not_the_raise():
    # A long episode (0-200 s): 5 min after its raise has passed at 400 s, not after its clear.
    points = [(0, 90), (200, 70), (400, 90), (499, 90), (500, 90)]
    run = alert([{**HYSTERESIS, "cooldown": "5m"}], [rec("m1", t, x=x) for t, x in points])
    assert states(run) == [(0, "raised"), (200, "cleared"), (500, "raised")]
    assert run.op.suppressed == 2


def test_cooldown_is_per_key():
    records = [rec("m1", 0, x=90), rec("m1", 1, x=70), rec("m2", 2, x=90), rec("m1", 3, x=90)]
    run = alert([{**HYSTERESIS, "cooldown": 60}], records)
    assert [(r.key[0], r.fields["state"]) for r in run.out] == [
        ("m1", "raised"),
        ("m1", "cleared"),
        ("m2", "raised"),
    ]
    assert run.op.suppressed == 1


def test_message_templates_are_rendered():
    rule = {
        **HYSTERESIS,
        "message": "{machine} {state} at {x:.1f} °C ({rule}, {severity})",
        "clear_message": "{machine} {state} at {x:.1f} °C",
    }
    run = alert([rule], series([90.25, 70]))
    assert [r.fields["message"] for r in run.out] == [
        "m1 raised at 90.2 °C (hot, warning)",
        "m1 cleared at 70.0 °C",
    ]


def test_a_clear_never_repeats_the_raise_message():
    # "... stopping" on a clear told operators the machine was being stopped again.
    rule = {**HYSTERESIS, "severity": "critical", "message": "{machine} at {x:.1f} °C: stopping"}
    run = alert([rule], series([90, 70]))
    assert [r.fields["message"] for r in run.out] == [
        "m1 at 90.0 °C: stopping",
        "hot cleared for m1",
    ]


def test_message_naming_a_missing_field_falls_back():
    run = alert([{**HYSTERESIS, "message": "{machine}: {nope}"}], series([90]))
    assert run.out[0].fields["message"] == "hot raised (message template failed: no field 'nope')"


def test_values_snapshot_holds_the_fields_the_rule_reads():
    rule = {"name": "r", "raise": "x > 85 and rpm > 100", "clear": "temp < 50"}
    run = alert([rule], [rec("m1", 0, x=90, rpm=1500, other=1), rec("m1", 1, x=0, rpm=0, temp=40)])
    assert [r.fields["values"] for r in run.out] == [
        {"x": 90, "rpm": 1500, "temp": None},
        {"x": 0, "rpm": 0, "temp": 40},
    ]


def test_keys_are_independent():
    records = [
        rec("m1", 0, x=90),
        rec("m2", 0, x=70),
        rec("m2", 1, x=90),
        rec("m1", 1, x=82),
        rec("m2", 2, x=70),
        rec("m1", 2, x=70),
    ]
    run = alert([HYSTERESIS], records)
    assert [(r.key[0], r.ts, r.fields["state"]) for r in run.out] == [
        ("m1", 0, "raised"),
        ("m2", 1, "raised"),
        ("m2", 2, "cleared"),
        ("m1", 2, "cleared"),
    ]
    assert len({r.fields["alert_id"] for r in run.out}) == 2


def test_rules_are_independent():
    rules = [HYSTERESIS, {"name": "cold", "raise": "x < 0", "severity": "info"}]
    run = alert(rules, series([90, -5, 5]))
    assert [(r.fields["rule"], r.fields["state"]) for r in run.out] == [
        ("hot", "raised"),  # 90
        ("hot", "cleared"),  # -5: each rule in order, on the same record
        ("cold", "raised"),
        ("cold", "cleared"),  # 5
    ]


def test_expression_error_rejects_and_the_batch_continues():
    bad = rec("m1", 1, y=1)
    run = alert([HYSTERESIS], [rec("m1", 0, x=70), bad, rec("m1", 2, x=90)])
    assert states(run) == [(2, "raised")]
    assert run.rejects == [(bad, "expression_error", "rule hot: KeyError: 'x'")]


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "r", "raise": "x >"},
        {"name": "r", "raise": "x > 1", "message": "{x.real}"},
        {"name": "r", "raise": "x > 1", "severity": "fatal"},
        {"name": "r", "raise": "x > 1", "for": "soon"},
        {"name": "r", "raise": "x > 1", "unknown": 1},
    ],
)
def test_invalid_rules(rule):
    with pytest.raises(ValueError, match="validation error"):
        make_op("alert", {"rules": [rule]})


def test_message_with_a_format_spec_on_a_null_field_falls_back_and_keeps_the_event():
    # A reading may carry null for an optional field (validate lets `required: false`
    # fields be null). Rendering `{current:.1f}` with None raises TypeError, which must
    # fall back like a missing field does, never swallow the raise.
    rule = {**HYSTERESIS, "message": "{machine}: {current:.1f} A", "clear_message": "{current} A"}
    run = alert([rule], [rec("m1", 0, x=90, current=None), rec("m1", 1, x=70, current=2.0)])
    assert run.rejects == []
    assert states(run) == [(0, "raised"), (1, "cleared")]
    assert run.out[0].fields["message"].startswith("hot raised (message template failed: ")
    assert run.out[1].fields["message"] == "2.0 A"


def test_raised_ids_list_what_is_held_raised_and_say_when_cut():
    run = make_op("alert", {"rules": [HYSTERESIS, {"name": "cold", "raise": "x < 0"}]})
    run.feed([rec("m1", 1, x=90), rec("m2", 2, x=90), rec("m3", 3, x=-5), rec("m4", 4, x=50)])
    assert sorted(run.op.raised_ids(10)[0]) == ["cold/m3/3000", "hot/m1/1000", "hot/m2/2000"]
    run.feed([rec("m1", 5, x=70)])  # cleared: no longer listed
    assert run.op.raised_ids(10) == (["hot/m2/2000", "cold/m3/3000"], True)
    assert run.op.raised_ids(1) == (["hot/m2/2000"], False)
    other = make_op("alert", {"rules": [HYSTERESIS]})
    other.feed([rec("m9", 9, x=99)])
    assert raised_alerts([run.op, other.op]) == {
        "ids": ["hot/m2/2000", "cold/m3/3000", "hot/m9/9000"],
        "complete": True,
    }
    assert raised_alerts([run.op, other.op], limit=2) == {
        "ids": ["hot/m2/2000", "cold/m3/3000"],
        "complete": False,
    }
    assert raised_alerts([]) == {"ids": [], "complete": True}
