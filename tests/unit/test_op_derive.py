"""`derive`: computed fields in order, on a copy of the record."""

from __future__ import annotations

import pytest
from oplab import rec, run_op


def test_adds_fields():
    run = run_op(
        "derive",
        {"fields": {"power_kw": "voltage * current / 1000", "overheating": "temperature > 85"}},
        [rec("m1", 1.0, voltage=400, current=10, temperature=90)],
    )
    [out] = run.out
    assert out.key == ("m1",)
    assert out.ts == 1.0
    assert out.fields == {
        "machine": "m1",
        "voltage": 400,
        "current": 10,
        "temperature": 90,
        "power_kw": 4.0,
        "overheating": True,
    }


def test_chain_later_fields_use_earlier_ones():
    run = run_op(
        "derive",
        {"fields": {"a": "x + 1", "b": "a * 2", "c": "b - a"}},
        [rec("m1", 1.0, x=1), rec("m1", 2.0, x=10)],
    )
    assert [(r.fields["a"], r.fields["b"], r.fields["c"]) for r in run.out] == [
        (2, 4, 2),
        (11, 22, 11),
    ]


def test_may_overwrite_an_existing_field():
    run = run_op("derive", {"fields": {"x": "x * 10"}}, [rec("m1", 1.0, x=3)])
    assert run.out[0].fields["x"] == 30


def test_does_not_mutate_the_input_record():
    original = rec("m1", 1.0, x=1)
    before = dict(original.fields)
    run = run_op("derive", {"fields": {"y": "x + 1", "x": "0"}}, [original])
    assert original.fields == before
    assert "y" not in original.fields
    [out] = run.out
    assert out is not original
    assert out.fields is not original.fields
    assert out.fields == {"machine": "m1", "x": 0, "y": 2}


def test_two_branches_reading_the_same_record_do_not_see_each_other():
    shared = [rec("m1", 1.0, x=2)]
    left = run_op("derive", {"fields": {"y": "x * 2"}}, shared)
    right = run_op("derive", {"fields": {"z": "x * 3"}}, shared)
    assert left.out[0].fields == {"machine": "m1", "x": 2, "y": 4}
    assert right.out[0].fields == {"machine": "m1", "x": 2, "z": 6}
    assert shared[0].fields == {"machine": "m1", "x": 2}


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"voltage": 400}, "power: KeyError: 'current'"),
        ({"voltage": 400, "current": 0}, "ratio: ZeroDivisionError: division by zero"),
    ],
)
def test_expression_error_rejects_and_batch_continues(fields, detail):
    bad = rec("m1", 2.0, **fields)
    config = {"fields": {"power": "voltage * current", "ratio": "voltage / current"}}
    records = [rec("m1", 1.0, voltage=400, current=2), bad, rec("m1", 3.0, voltage=1, current=1)]
    run = run_op("derive", config, records)
    assert [(r.ts, r.fields["ratio"]) for r in run.out] == [(1.0, 200.0), (3.0, 1.0)]
    assert run.rejects == [(bad, "expression_error", detail)]
    assert bad.fields == fields | {"machine": "m1"}  # a half-derived record leaks nothing
