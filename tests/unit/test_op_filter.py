"""`filter`: keep records whose expression is true; a failing expression rejects one record."""

from __future__ import annotations

import pytest
from oplab import rec, run_op
from pydantic import ValidationError


def test_keeps_and_drops_by_expression():
    records = [
        rec("m1", 1.0, status="ok", rpm=1500),
        rec("m1", 2.0, status="maintenance", rpm=1500),
        rec("m2", 3.0, status="ok", rpm=50),
        rec("m2", 4.0, status="ok", rpm=101),
    ]
    run = run_op("filter", {"when": "status != 'maintenance' and rpm > 100"}, records)
    assert run.out == [records[0], records[3]]
    assert run.out[0] is records[0]
    assert run.rejects == []


def test_truthiness_of_non_boolean_results():
    records = [rec("m1", 1.0, n=0), rec("m1", 2.0, n=3), rec("m1", 3.0, n=None)]
    run = run_op("filter", {"when": "n"}, records)
    assert [r.ts for r in run.out] == [2.0]


def test_in_list_and_key_field():
    records = [rec("m1", 1.0), rec("m2", 2.0), rec("m3", 3.0)]
    run = run_op("filter", {"when": "machine in ('m1', 'm3')"}, records)
    assert [r.key for r in run.out] == [("m1",), ("m3",)]


@pytest.mark.parametrize(
    ("when", "fields", "detail"),
    [
        ("rpm > 100", {"speed": 5}, "when: KeyError: 'rpm'"),
        ("1 / rpm > 0", {"rpm": 0}, "when: ZeroDivisionError: division by zero"),
    ],
)
def test_expression_error_rejects_and_batch_continues(when, fields, detail):
    bad = rec("m1", 2.0, **fields)
    records = [rec("m1", 1.0, rpm=500), bad, rec("m1", 3.0, rpm=200)]
    run = run_op("filter", {"when": when}, records)
    assert [r.ts for r in run.out] == [1.0, 3.0]
    assert run.rejects == [(bad, "expression_error", detail)]


def test_type_error_is_an_expression_error():
    run = run_op("filter", {"when": "rpm > 100"}, [rec("m1", 1.0, rpm="fast")])
    assert run.out == []
    assert run.reasons == ["expression_error"]
    assert run.rejects[0][2].startswith("when: TypeError: ")


def test_invalid_expression_fails_config():
    with pytest.raises(ValidationError, match="column"):
        run_op("filter", {"when": "rpm >"}, [])
