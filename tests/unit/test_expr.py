"""Tests for gateway.expr: the safe, compiled pipeline expression language."""

from __future__ import annotations

import math
import operator
import pickle
import time
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.expr import FUNCTIONS, Expr, ExprError, ExprLimitError, compile_expr, reject_reason

if TYPE_CHECKING:
    from collections.abc import Callable


def ev(source: str, **record: Any) -> Any:
    return compile_expr(source)(record)


def err(source: str) -> ExprError:
    with pytest.raises(ExprError) as info:
        compile_expr(source)
    return info.value


# --- evaluation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("-x ** 2", -9),
        ("(-x) ** 2", 9),
        ("2 ** 3 ** 2", 512),
        ("+x - -x", 6),
        ("x * 2 + 1 > 6", True),
        ("1e-9 * 1e9", 1.0),
        ('"ab" + "cd"', "abcd"),
    ],
)
def test_arithmetic_and_precedence(source: str, expected: Any) -> None:
    assert ev(source, x=3) == expected


@pytest.mark.parametrize(("x", "expected"), [(-1, False), (0, False), (5, True), (10, False)])
def test_chained_comparison(x: int, expected: bool) -> None:
    assert ev("0 < x < 10", x=x) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x == 3", True),
        ("x != 3", False),
        ("x < 3", False),
        ("x <= 3", True),
        ("x > 2.5", True),
        ("x >= 4", False),
        ("1 <= x <= 3 != 4", True),
    ],
)
def test_comparisons(source: str, expected: bool) -> None:
    assert ev(source, x=3) is expected


def test_boolean_logic_short_circuits() -> None:
    # 'missing' is never looked up, so no KeyError is raised.
    assert ev("x > 0 and missing > 1", x=0) is False
    assert ev("x > 0 or missing > 1", x=1) is True
    assert ev("not x", x=0) is True
    assert ev("not (a and b) or c", a=True, b=True, c=False) is False
    assert ev("a or b", a=0, b="fallback") == "fallback"


def test_example_pipeline_expressions() -> None:
    record = {"temperature_max": 90.0, "vibration_rms_z": 4.0, "flow_max": 0.6, "valve_last": 0}
    assert compile_expr("temperature_max > 85 and vibration_rms_z >= 4")(record) is True
    assert compile_expr("flow_max > 0.5 and valve_last == 0")(record) is True
    assert ev("sqrt(x**2 + y**2)", x=3, y=4) == 5.0
    assert ev("abs(a - b) / max(b, 1e-9)", a=3.0, b=4.0) == 0.25
    assert ev("abs(a - b) / max(b, 1e-9)", a=1.0, b=0.0) == pytest.approx(1e9)
    src = 'severity == "critical" and state == "raised"'
    assert ev(src, severity="critical", state="raised") is True
    assert ev(src, severity="minor", state="raised") is False


@pytest.mark.parametrize(("x", "expected"), [(5, 5), (-2, 0), (0, 0)])
def test_if_expression(x: int, expected: int) -> None:
    assert ev("x if x > 0 else 0", x=x) == expected


def test_in_with_literal_list_and_tuple() -> None:
    assert ev("state in ['raised', 'ack']", state="ack") is True
    assert ev("state in ('raised', 'ack')", state="cleared") is False
    assert ev("code not in (1, 2, -3)", code=-3) is False
    assert ev("code not in [1, 2, -3]", code=4) is True
    assert ev("v in (null, true)", v=None) is True
    assert ev("v in ()", v=1) is False


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("abs(-2.5)", 2.5),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("round(2.567, 2)", 2.57),
        ("round(2.5)", 2),
        ("sqrt(16)", 4.0),
        ("log(math_e)", 1.0),
        ("log(8, 2)", 3.0),
        ("log10(1000)", 3.0),
        ("exp(0)", 1.0),
        ("floor(-1.5)", -2),
        ("ceil(1.2)", 2),
        ("clamp(5, 0, 3)", 3),
        ("clamp(-5, 0, 3)", 0),
        ("clamp(2, 0, 3)", 2),
        ("hypot(3, 4)", 5.0),
        ("pow(2, 0.5)", math.sqrt(2)),
    ],
)
def test_functions(source: str, expected: float) -> None:
    assert ev(source, math_e=math.e) == pytest.approx(expected)


def test_functions_mapping_is_the_whitelist_and_read_only() -> None:
    assert set(FUNCTIONS) == {
        "abs",
        "ceil",
        "clamp",
        "exp",
        "floor",
        "hypot",
        "log",
        "log10",
        "max",
        "min",
        "pow",
        "round",
        "sqrt",
    }
    with pytest.raises(TypeError):
        FUNCTIONS["eval"] = eval  # type: ignore[index]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true", True),
        ("false", False),
        ("null", None),
        ("True", True),
        ("None", None),
        ("x == null", False),
        ("flag == true", True),
    ],
)
def test_literals(source: str, expected: Any) -> None:
    assert ev(source, x=1, flag=True) is expected


def test_fields_are_exact() -> None:
    expr = compile_expr("sqrt(x**2 + y**2) > limit and true and x != null")
    assert expr.fields == frozenset({"x", "y", "limit"})
    assert compile_expr("1 + 2").fields == frozenset()
    assert compile_expr("state in ('a', 'b')").fields == frozenset({"state"})
    # A field may share a name with a function or the record parameter.
    assert ev("max(sqrt, r)", sqrt=1, r=2) == 2


def test_expr_object() -> None:
    expr = compile_expr(" x + 1 ")
    assert isinstance(expr, Expr)
    assert expr.source == " x + 1 "
    assert expr({"x": 1}) == expr.fn({"x": 1}) == 2
    assert expr == compile_expr(" x + 1 ")
    with pytest.raises(AttributeError):
        expr.source = "y"  # type: ignore[misc]


def test_multiline_source_in_parentheses() -> None:
    assert ev("(a +\n b) * 2", a=1, b=2) == 6
    assert err("(a +\n b.c)").column == 7


# --- evaluation-time errors are left to the caller -------------------------------------


def test_has_tests_presence_of_an_optional_field() -> None:
    rule = compile_expr("has(battery_min) and battery_min < 3.5")
    assert rule({"moisture": 20.0}) is False  # no battery: no KeyError, no alert
    assert rule({"battery_min": 3.4}) is True
    assert rule({"battery_min": 3.6}) is False
    assert compile_expr("has(x)").fields == frozenset()  # optional: not a required field
    assert compile_expr("not has(x) or x > 1")({}) is True


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("has(1)", "has() takes a field name, e.g. has(battery)"),
        ("has(null)", "has() takes a field name, e.g. has(battery)"),
        ("has(a, b)", "has() takes one field name, e.g. has(battery), got 2 arguments"),
        ("has()", "has() takes one field name, e.g. has(battery), got 0 arguments"),
        ("has(x=a)", "keyword arguments are not allowed"),
    ],
)
def test_has_takes_one_field_name(source: str, message: str) -> None:
    with pytest.raises(ExprError) as caught:
        compile_expr(source)
    assert caught.value.message == message


def test_missing_field_raises_key_error() -> None:
    expr = compile_expr("temperature_max > 85")
    with pytest.raises(KeyError, match="temperature_max"):
        expr({"other": 1})


def test_division_by_zero_raises() -> None:
    with pytest.raises(ZeroDivisionError):
        ev("a / b", a=1, b=0)


def test_no_builtins_reachable() -> None:
    # Names are record lookups, never globals or builtins.
    assert ev("__import__", __import__="just data") == "just data"
    with pytest.raises(KeyError):
        ev("open")


# --- compile-time errors --------------------------------------------------------------

KNOWN = "abs, ceil, clamp, exp, floor, has, hypot, log, log10, max, min, pow, round, sqrt"


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("", "expected an expression, got an empty string", 0),
        ("   ", "expected an expression, got an empty string", 0),
        ("x +* 2", "invalid syntax", 3),
        ("x = 1", "invalid syntax", 2),
        ("'é' + (", "invalid syntax: '(' was never closed", 6),
        ("sqr(x)", f"unknown function 'sqr' (known: {KNOWN})", 0),
        ("__import__('os')", f"unknown function '__import__' (known: {KNOWN})", 0),
        ("x + open('f')", f"unknown function 'open' (known: {KNOWN})", 4),
        ("x.y", "'.' attribute access is not allowed", 1),
        ("().__class__", "'.' attribute access is not allowed", 2),
        ("  x.y", "'.' attribute access is not allowed", 3),
        ("'é'.upper()", "'.' attribute access is not allowed", 3),
        ("x.y()", "'.' attribute access is not allowed", 1),
        ("x[0]", "'[...]' indexing is not allowed", 1),
        ("x[1:2]", "'[...]' indexing is not allowed", 1),
        ("lambda: 1", "'lambda' is not allowed", 0),
        ("[a for a in b]", "comprehensions are not allowed", 0),
        ("x + {a for a in b}", "comprehensions are not allowed", 4),
        ("max(a for a in b)", "comprehensions are not allowed", 3),
        ("{k: 1 for k in b}", "comprehensions are not allowed", 0),
        ("round(x, ndigits=2)", "keyword arguments are not allowed", 9),
        ("max(a, **b)", "keyword arguments are not allowed", 7),
        ("sqrt(*a)", "'*' argument unpacking is not allowed", 5),
        ("f'{x}'", "f-strings are not allowed", 0),
        ("(y := 1)", "':=' assignment is not allowed", 1),
        ("await x", "'await' is not allowed", 0),
        ("(yield)", "'yield' is not allowed", 1),
        ("{1: 2}", "'dict' is not allowed", 0),
        ("{1}", "'set' is not allowed", 0),
        ("(1, 2)", "tuples are only allowed after 'in' / 'not in'", 0),
        ("x == [1]", "lists are only allowed after 'in' / 'not in'", 5),
        ("x is None", "'is' is not allowed; use '==' or '!='", 2),
        ("x is not None", "'is' is not allowed; use '==' or '!='", 2),
        ("a | b", "operator '|' is not allowed", 2),
        ("a & b", "operator '&' is not allowed", 2),
        ("a ^ b", "operator '^' is not allowed", 2),
        ("a << 2", "operator '<<' is not allowed", 2),
        ("a >> 2", "operator '>>' is not allowed", 2),
        ("a @ b", "operator '@' is not allowed", 2),
        ("~a", "operator '~' is not allowed", 0),
        ("x in y", "'in' needs a literal list or tuple on its right, e.g. x in (1, 2)", 5),
        ("x not in 'abc'", "'in' needs a literal list or tuple on its right, e.g. x in (1, 2)", 9),
        ("x in (y, 1)", "the list after 'in' may only contain constants", 6),
        ("x ** 10000", "exponent 10000 is too large (at most 1000)", 5),
        ("x ** -2000", "exponent -2000 is too large (at most 1000)", 5),
        ("b'x'", "bytes literals are not allowed", 0),
        ("1j", "complex literals are not allowed", 0),
        ("...", "ellipsis literals are not allowed", 0),
        ("sqrt(1, 2)", "sqrt() takes 1 argument, got 2", 0),
        ("min(1)", "min() takes at least 2 arguments, got 1", 0),
        ("log()", "log() takes 1 or 2 arguments, got 0", 0),
        ("clamp(x, 1)", "clamp() takes 3 arguments, got 2", 0),
        ("(a)(b)", f"unknown function 'a' (known: {KNOWN})", 1),
        ("max(a, b)(c)", "only the known functions can be called", 0),
    ],
)
def test_forbidden_constructs(source: str, message: str, column: int) -> None:
    error = err(source)
    assert error.message == message
    assert str(error) == message
    assert error.column == column
    assert isinstance(error, ValueError)


def test_too_deeply_nested() -> None:
    assert err("-" * 4000 + "1").message == "expression is too deeply nested"


def test_too_long() -> None:
    error = err("-" * 100_000 + "1")
    assert error.message == "expression is 100001 characters long (at most 4096)"


def test_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(ExprError("boom", 3)))  # noqa: S301
    assert (error.message, error.column) == ("boom", 3)


# --- property: compiled expressions agree with Python ---------------------------------

OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
numbers = st.integers(-(10**12), 10**12) | st.floats(allow_nan=False, allow_infinity=False)


@settings(database=None)
@given(a=numbers, b=numbers, op=st.sampled_from(sorted(OPERATORS)))
def test_matches_python(a: float, b: float, op: str) -> None:
    """Python's answer, or ExprLimitError for an integer result past 64 bits (signed)."""
    expected = OPERATORS[op](a, b)
    sources = [(f"a {op} b", {"a": a, "b": b}), (f"{a!r} {op} b", {"b": b})]
    for source, record in sources:
        if type(expected) is int and not -(2**63) <= expected < 2**63:
            with pytest.raises(ExprLimitError):
                compile_expr(source)(record)
        else:
            assert compile_expr(source)(record) == expected


# --- bounds: nothing a record or a literal holds may build an unbounded value ---------


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        (
            "10**10**10 > temperature",
            "operator '**': 10 ** 10000000000 would have more than 4096 bits",
            2,
        ),
        ("'a' * 10**9", "operator '*': repeating 1 items 1000000000 times exceeds 65536", 4),
        ("'%0999999d' % t", "", -1),  # a field on the right: checked at run time
        ("'%099999999d' % 3", "operator '%': format width 99999999 exceeds 65536", 14),
    ],
)
def test_literal_out_of_bounds_is_a_located_compile_error(
    source: str, message: str, column: int
) -> None:
    if not message:
        compile_expr(source)
        return
    error = err(source)
    assert (error.message, error.column) == (message, column)


@pytest.mark.parametrize(
    ("source", "record", "detail"),
    [
        ("x ** y > 0", {"x": 10, "y": 10**10}, "10 ** 10000000000 would have more than 4096 bits"),
        ("s * n", {"s": "a", "n": 10**9}, "repeating 1 items 1000000000 times exceeds 65536"),
        ("n * s", {"s": [1, 2], "n": 10**6}, "repeating 2 items 1000000 times exceeds 65536"),
        ("f % 1", {"f": "%0999999999d"}, "format width 999999999 exceeds 65536"),
        ("f % 1", {"f": "%*d"}, "format width * exceeds 65536"),
        ("round(x, n)", {"x": 5, "n": -(10**7)}, "round() to -10000000 digits (at most 400)"),
    ],
)
def test_run_time_bounds_raise_expr_limit_error(
    source: str, record: dict[str, Any], detail: str
) -> None:
    fn = compile_expr(source)
    with pytest.raises(ExprLimitError) as info:
        fn(record)
    assert str(info.value) == detail
    assert reject_reason(info.value) == "expression_limit"


@pytest.mark.parametrize(
    ("source", "record"),
    [
        ("x * x", {"x": 2**40}),
        ("x * 2", {"x": 2**62}),
        ("-x - x - 1", {"x": 2**62}),
        ("x ** 3", {"x": 2**22}),
        ("abs(x)", {"x": -(2**63)}),
        ("x + 1 if x > 0 else 0", {"x": 2**63 - 1}),
        ("x > 0 and x + 1", {"x": 2**63 - 1}),
        ("floor(x * 1e10)", {"x": 1e10}),
    ],
)
def test_an_integer_result_past_64_bits_is_a_limit_error(
    source: str, record: dict[str, Any]
) -> None:
    """orjson writes at most 64-bit integers: a larger result would stop an output batch."""
    with pytest.raises(ExprLimitError, match="does not fit in a signed 64-bit integer"):
        compile_expr(source)(record)


def test_a_literal_result_past_64_bits_is_a_compile_error() -> None:
    error = err("2 ** 70")
    assert (error.message, error.column) == (
        "result 1180591620717411303424 does not fit in a signed 64-bit integer",
        0,
    )
    assert compile_expr("2 ** 70 > x")({"x": 1}) is True


@pytest.mark.parametrize(
    ("source", "record", "expected"),
    [
        ("x ** 64 > 0", {"x": 2**63}, True),  # a 64-bit reading to the 64th: allowed
        ("x * x // 2**40", {"x": 2**40}, 2**40),  # an intermediate past 64 bits: allowed
        ("x * 2 - 1", {"x": 2**62}, 2**63 - 1),
        ("-x - x", {"x": 2**62}, -(2**63)),
        ("x", {"x": 2**70}, 2**70),  # a field as the decoder gave it: not computed here
        ("x > 0 and x", {"x": 2**70}, 2**70),
        ("x * 1.5", {"x": 2**70}, 2**70 * 1.5),  # a float may be large
        ("x ** y", {"x": 1, "y": 10**100}, 1),
        ("x ** y", {"x": 2.0, "y": 3}, 8.0),
        ("s * 3", {"s": "ab"}, "ababab"),
        ("x * 1.8 + 32", {"x": 100}, 212.0),
        ("'%5.1f' % x", {"x": 2.25}, "  2.2"),
        ("round(x, 2)", {"x": 2.675}, round(2.675, 2)),
    ],
)
def test_values_within_bounds_still_compute(
    source: str, record: dict[str, Any], expected: Any
) -> None:
    assert compile_expr(source)(record) == expected


def test_a_float_power_overflows_instead_of_growing() -> None:
    with pytest.raises(OverflowError):
        compile_expr("x ** y")({"x": 10.0, "y": 10**10})
    assert reject_reason(OverflowError()) == "expression_error"


def test_a_bounded_power_returns_quickly() -> None:
    """The attack froze the gateway; the guard answers in well under a millisecond."""
    fn = compile_expr("x ** y > t")
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(ExprLimitError):
            fn({"x": 10, "y": 10**10, "t": 1})
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize(
    ("source", "checked"),
    [
        ("x * x", True),
        ("x - y", True),
        ("abs(x)", True),
        ("x + 1 if c else 1.5", True),
        ("x if c else 1.5", False),  # a field as the record holds it
        ("x", False),
        ("x > 3", False),
        ("x / y", False),
        ("x * 1.8 + 32", False),
        ("-(x ** 0.5)", False),
        ("sqrt(x) * y", False),
        ("'%5.1f' % x", True),  # a string, but a field on the right: checked, harmlessly
    ],
)
def test_only_results_that_may_be_integers_are_checked(source: str, checked: bool) -> None:
    """The result check costs a call per evaluation; float-only expressions skip it."""
    fn = compile_expr(source).fn
    assert ("_result" in fn.__code__.co_names) is checked
