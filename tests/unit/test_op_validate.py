"""`validate`: typed, ranged, enumerated fields; every reject has a reason and a detail."""

from __future__ import annotations

import pytest
from oplab import rec, run_op

CONFIG = {
    "fields": {
        "vibration": {"type": "number", "min": 0, "max": 50},
        "temperature": {"type": "number", "min": -40, "max": 250},
        "status": {"type": "string", "required": False, "one_of": ["ok", "degraded"]},
        "cycles": {"type": "integer", "required": False},
        "running": {"type": "boolean", "required": False},
    }
}


def good(**overrides: object) -> dict[str, object]:
    return {"vibration": 2.5, "temperature": 61.0, **overrides}


def test_accepts_good_records_unchanged():
    records = [
        rec("m1", 1.0, **good()),
        rec("m2", 2.0, **good(status="ok", cycles=3, running=True)),
        rec("m1", 3.0, **good(vibration=0, temperature=250)),  # the bounds are inclusive
        rec("m1", 4.0, **good(vibration=7)),  # an int is a number
    ]
    run = run_op("validate", CONFIG, records)
    assert run.out == records
    assert all(a is b for a, b in zip(run.out, records, strict=True))
    assert run.rejects == []


def test_optional_field_missing_passes():
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good())])
    assert len(run.out) == 1
    assert run.rejects == []


def test_optional_field_null_passes():
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(status=None))])
    assert len(run.out) == 1


def test_missing_required_field():
    record = rec("m1", 1.0, vibration=1.0)
    run = run_op("validate", CONFIG, [record])
    assert run.out == []
    assert run.rejects == [(record, "missing_field", "field 'temperature' is missing")]


def test_required_field_null_is_missing():
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(vibration=None))])
    assert run.reasons == ["missing_field"]


def test_wrong_type_string_for_number():
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(vibration="2.5"))])
    assert run.out == []
    [(_, reason, detail)] = run.rejects
    assert reason == "wrong_type"
    assert detail == "field 'vibration': expected a number, got '2.5'"


@pytest.mark.parametrize("value", [True, False])
def test_wrong_type_bool_for_number(value):
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(temperature=value))])
    [(_, reason, detail)] = run.rejects
    assert reason == "wrong_type"
    assert detail == f"field 'temperature': expected a number, got {value!r}"


@pytest.mark.parametrize(
    ("field", "value"),
    [("cycles", 2.0), ("cycles", True), ("running", 1), ("status", 3)],
)
def test_wrong_type_other_kinds(field, value):
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(**{field: value}))])
    assert run.reasons == ["wrong_type"]


def test_wrong_type_names_the_expected_type():
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(running="yes"))])
    [(_, _, detail)] = run.rejects
    assert detail == "field 'running': expected a bool, got 'yes'"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_not_finite(value):
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(vibration=value))])
    assert run.out == []
    [(_, reason, detail)] = run.rejects
    assert reason == "not_finite"
    assert detail == f"field 'vibration': expected a finite number, got {value}"


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("vibration", -0.1, "field 'vibration': expected 0.0..50.0, got -0.1"),
        ("vibration", 50.5, "field 'vibration': expected 0.0..50.0, got 50.5"),
        ("temperature", -41, "field 'temperature': expected -40.0..250.0, got -41"),
        ("temperature", 251, "field 'temperature': expected -40.0..250.0, got 251"),
    ],
)
def test_out_of_range(field, value, detail):
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(**{field: value}))])
    assert run.out == []
    assert [(r, d) for _, r, d in run.rejects] == [("out_of_range", detail)]


def test_only_min_or_only_max():
    config = {"fields": {"x": {"min": 0}, "y": {"max": 10}}}
    run = run_op(
        "validate",
        config,
        [rec("m1", 1.0, x=1e9, y=-1e9), rec("m1", 2.0, x=-1, y=0), rec("m1", 3.0, x=0, y=11)],
    )
    assert [r.ts for r in run.out] == [1.0]
    assert [d for _, _, d in run.rejects] == [
        "field 'x': expected 0.0..None, got -1",
        "field 'y': expected None..10.0, got 11",
    ]


def test_not_allowed():
    run = run_op("validate", CONFIG, [rec("m1", 1.0, **good(status="broken"))])
    assert run.out == []
    [(_, reason, detail)] = run.rejects
    assert reason == "not_allowed"
    assert detail == "field 'status': expected one of ['degraded', 'ok'], got 'broken'"


def test_numeric_one_of():
    config = {"fields": {"gear": {"type": "integer", "one_of": [1, 2, 3]}}}
    run = run_op("validate", config, [rec("m1", 1.0, gear=2), rec("m1", 2.0, gear=4)])
    assert [r.fields["gear"] for r in run.out] == [2]
    assert run.reasons == ["not_allowed"]


def test_first_problem_in_declaration_order_wins():
    run = run_op("validate", CONFIG, [rec("m1", 1.0, vibration=-5, temperature="hot")])
    assert run.reasons == ["out_of_range"]


def test_batch_continues_after_rejects():
    records = [
        rec("m1", 1.0, **good()),
        rec("m1", 2.0, vibration=1.0),
        rec("m1", 3.0, **good(vibration=float("nan"))),
        rec("m1", 4.0, **good()),
    ]
    run = run_op("validate", CONFIG, records)
    assert [r.ts for r in run.out] == [1.0, 4.0]
    assert run.reasons == ["missing_field", "not_finite"]
    assert [r.ts for r, _, _ in run.rejects] == [2.0, 3.0]
