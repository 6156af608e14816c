# project has no copyright header yet; drop once CPY001 is ignored globally
"""Safe, fast expressions for pipeline filters and derived fields.

Pipelines carry small expressions such as ``temperature_max > 85 and vibration_rms_z >= 4``
that run once per record on the hot path. ``eval`` of arbitrary Python would be unsafe
and a tree-walking interpreter slow, so :func:`compile_expr` parses the source with
:mod:`ast`, accepts only the grammar below, rewrites every field name ``x`` to ``r["x"]``
and compiles ``lambda r: <expr>`` once to bytecode that runs without builtins.

Grammar (Python syntax and semantics):

* literals: int, float, str, ``True``/``False``/``None`` and ``true``/``false``/``null``
* field references: any other bare name, looked up in the record
* arithmetic: ``+ - * / // % **`` and unary ``+ -``
* comparisons: ``== != < <= > >=``, chainable (``0 < x < 10``), and ``x in (1, 2)`` /
  ``x not in [...]`` against a literal tuple or list of constants only
* logic: ``and``, ``or``, ``not`` (short-circuiting) and ``a if cond else b``
* calls of :data:`FUNCTIONS` with positional arguments only
* ``has(field)``: whether the record holds ``field``, so a rule can read an optional field
  (``has(battery_min) and battery_min < 3.5``) instead of failing on records without it;
  the field is not among those the expression requires

Anything else (attributes, indexing, lambdas, comprehensions, keywords, f-strings,
``:=``, ...) raises :class:`ExprError` at compile time.

Bounds. Records come from devices, so an expression must not be able to build a value
whose cost is unbounded: ``10 ** 10 ** 10`` would freeze the gateway (SIGTERM included)
and ``'a' * 10 ** 9`` allocates a gigabyte per record. ``**``, ``*`` and ``%`` therefore
run through small guards (:func:`_pow`, :func:`_mul`, :func:`_mod`) that raise
:class:`ExprLimitError` before an integer grows past :data:`MAX_INT_BITS` bits or a string
or sequence past :data:`MAX_SEQUENCE` items; the step counts the record as an
``expression_limit`` reject and goes on. Literal-only parts are evaluated through the same
guards at compile time, so ``pipeline check`` reports them with their column. A
multiplication by a float literal (``x * 1.8``) skips the guard: it cannot repeat a
sequence. The source itself is at most :data:`MAX_SOURCE` characters.

An expression's *result* is an integer of at most 64 bits (signed): intermediate values may
be larger (``x * x // 2**20``), but a value kept in a record must be one orjson can write
into the outbox, a JSON reader can parse and a SQL ``BIGINT`` can hold. A result outside
that range raises :class:`ExprLimitError` rather than becoming a float: a float would
change the field's type with its magnitude and silently drop the low digits of exact
values (counters, ids compared with ``==``), while a limit error is counted at the step
that made the value, with its path. A comparison, ``not``, ``has()`` or a bare field is
not checked: it cannot compute a new integer.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "FUNCTIONS",
    "MAX_INT_BITS",
    "MAX_SEQUENCE",
    "MAX_SOURCE",
    "RESULT_INT_RANGE",
    "Expr",
    "ExprError",
    "ExprLimitError",
    "compile_expr",
    "reject_reason",
]

MAX_INT_BITS = 4096
"""Largest integer a power may produce, in bits (a 64-bit reading to the 64th power)."""
MAX_SEQUENCE = 65536
"""Longest string or sequence a repetition or ``%`` formatting may produce (max_payload)."""
MAX_SOURCE = 4096
"""Longest expression source, in characters."""
RESULT_INT_RANGE = (-(2**63), 2**63 - 1)
"""Smallest and largest integer an expression may return (signed 64-bit)."""
_MAX_EXPONENT = 1000  # a literal exponent; computed ones meet MAX_INT_BITS at run time


class ExprLimitError(ArithmeticError):
    """An operation refused at run time because its result would exceed a bound."""


def reject_reason(exc: BaseException) -> str:
    """The reject reason a step counts for an exception its expression raised."""
    return "expression_limit" if isinstance(exc, ExprLimitError) else "expression_error"


def _pow(base: Any, exponent: Any) -> Any:
    """``base ** exponent``, refusing integer results of more than MAX_INT_BITS bits."""
    if exponent.__class__ is float or base.__class__ is float:
        return base**exponent  # floats overflow (OverflowError) instead of growing
    if isinstance(exponent, int) and isinstance(base, int) and exponent > 1:
        bits = abs(base).bit_length()
        if bits > 1 and (bits - 1) * exponent > MAX_INT_BITS:
            msg = f"{base} ** {exponent} would have more than {MAX_INT_BITS} bits"
            raise ExprLimitError(_short(msg))
    return base**exponent


def _mul(a: Any, b: Any) -> Any:
    """``a * b``, refusing a repeated string or sequence longer than MAX_SEQUENCE."""
    ta, tb = a.__class__, b.__class__
    if (ta is float or ta is int) and (tb is float or tb is int):
        return a * b  # the common case first: two numbers (bool takes the long way)
    if isinstance(a, str | bytes | list | tuple) and isinstance(b, int):
        _check_repeat(len(a), b)
    elif isinstance(b, str | bytes | list | tuple) and isinstance(a, int):
        _check_repeat(len(b), a)
    return a * b


def _check_repeat(length: int, times: int) -> None:
    if length * times > MAX_SEQUENCE:
        msg = f"repeating {length} items {times} times exceeds {MAX_SEQUENCE}"
        raise ExprLimitError(_short(msg))


_WIDTH = re.compile(r"%[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")


def _mod(a: Any, b: Any) -> Any:
    """``a % b``; a string on the left is printf formatting, whose widths are bounded."""
    if isinstance(a, str | bytes):
        text = a if isinstance(a, str) else a.decode("latin-1")
        for match in _WIDTH.finditer(text):
            for width in match.groups():
                if width == "*" or (width is not None and int(width) > MAX_SEQUENCE):
                    msg = f"format width {width} exceeds {MAX_SEQUENCE}"
                    raise ExprLimitError(msg)
    return a % b


_INT_LO, _INT_HI = RESULT_INT_RANGE


def _result(value: Any) -> Any:
    """An expression's value, refused when it is an integer beyond signed 64 bits."""
    if value.__class__ is int and not _INT_LO <= value <= _INT_HI:
        msg = f"result {value} does not fit in a signed 64-bit integer"
        raise ExprLimitError(_short(msg))
    return value


_FLOAT_FUNCTIONS = frozenset({"exp", "hypot", "log", "log10", "pow", "sqrt"})


def _never_int(node: ast.expr) -> bool:
    """A rewritten expression whose value cannot be an integer (a float, a string from
    `%`, or an error): `/`, a float literal operand, math functions. Its result needs no
    check (the check costs about 50 ns an evaluation)."""
    match node:
        case ast.Constant(value=value):
            return value.__class__ is float
        case ast.BinOp(op=ast.Div()):
            return True
        case ast.BinOp(left=left, right=right):
            return _never_int(left) or _never_int(right)
        case ast.UnaryOp(op=ast.USub() | ast.UAdd(), operand=operand):
            return _never_int(operand)
        case ast.Call(func=ast.Name(id=name), args=args) if name in _GUARD_FUNCTIONS:
            return any(_never_int(arg) for arg in args)  # _pow, _mul, _mod
        case ast.Call(func=ast.Name(id=name)):
            return name in _FLOAT_FUNCTIONS
        case ast.IfExp(body=body, orelse=orelse):
            return _never_int(body) and _never_int(orelse)
    return False


def _may_compute_int(node: ast.expr) -> bool:
    """Whether a rewritten expression can return an integer no record held (see above)."""
    if _never_int(node):
        return False
    match node:
        case ast.Compare() | ast.UnaryOp(op=ast.Not()) | ast.Subscript():
            return False
        case ast.BoolOp(values=values):
            return any(_may_compute_int(value) for value in values)
        case ast.IfExp(body=body, orelse=orelse):
            return _may_compute_int(body) or _may_compute_int(orelse)
        case ast.Constant(value=value):
            return value.__class__ is int and not _INT_LO <= value <= _INT_HI
    return True


def _check_constant_result(node: ast.expr) -> None:
    """A literal-only expression whose value is out of range fails at compile time, where
    ``pipeline check`` shows it, not on the first record."""
    if not _constant_only(node):
        return
    try:
        value = _fold(node)
    except (ArithmeticError, TypeError, ValueError):
        return  # a located guard error follows from the checker, or a run-time error
    try:
        _result(value)
    except ExprLimitError as exc:
        raise ExprError(str(exc), 0) from None


def _short(text: str) -> str:
    """Messages may quote huge operands: keep them readable."""
    return text if len(text) <= 160 else text[:100] + "..." + text[-40:]


_GUARDS: dict[type[ast.operator], str] = {ast.Pow: "_pow", ast.Mult: "_mul", ast.Mod: "_mod"}
_GUARD_FUNCTIONS: dict[str, Callable[[Any, Any], Any]] = {
    "_pow": _pow,
    "_mul": _mul,
    "_mod": _mod,
}


def _clamp(x: float, lo: float, hi: float) -> float:
    """Return ``x`` limited to the closed range ``[lo, hi]``."""
    return min(max(x, lo), hi)


def _round(x: Any, ndigits: Any = None) -> Any:
    """``round``, with digits bounded: ``round(5, -10**7)`` builds 10**(10**7) first."""
    if ndigits is not None and isinstance(ndigits, int) and abs(ndigits) > _MAX_DIGITS:
        msg = f"round() to {_short(str(ndigits))} digits (at most {_MAX_DIGITS})"
        raise ExprLimitError(msg)
    return round(x, ndigits)


_MAX_DIGITS = 400  # beyond float's range either way


# name -> (function, min and max positional arguments; max None = unbounded)
_SPECS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "abs": (abs, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "clamp": (_clamp, 3, 3),
    "exp": (math.exp, 1, 1),
    "floor": (math.floor, 1, 1),
    "hypot": (math.hypot, 1, None),
    "log": (math.log, 1, 2),
    "log10": (math.log10, 1, 1),
    "max": (max, 2, None),
    "min": (min, 2, None),
    "pow": (math.pow, 2, 2),
    "round": (_round, 1, 2),
    "sqrt": (math.sqrt, 1, 1),
}
FUNCTIONS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {name: spec[0] for name, spec in _SPECS.items()},
)
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_CONSTANT_TYPES = (int, float, str, bool, type(None))
_NOT_LITERAL = object()
_BAD_OPS: dict[type[ast.AST], str] = {
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
}  # unary '~' is rejected by _Checker.reject
_FORBIDDEN: dict[type[ast.AST], str] = {
    **dict.fromkeys(
        (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp),
        "comprehensions are not allowed",
    ),
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "':=' assignment is not allowed",
    ast.Tuple: "tuples are only allowed after 'in' / 'not in'",
    ast.List: "lists are only allowed after 'in' / 'not in'",
}  # anything else, e.g. ast.Lambda, is reported as "'lambda' is not allowed"


class ExprError(ValueError):
    """A syntax error or a forbidden construct in an expression."""

    message: str
    column: int  # 0-based character offset in the expression source

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message, column)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled expression; call it with a record (a mapping of field to value).

    Evaluation errors propagate unchanged: ``KeyError`` for a field missing from the
    record, ``ZeroDivisionError``, ``TypeError`` for mismatched types and
    ``ValueError``/``OverflowError`` from math functions. In the tightest loops call
    ``expr.fn`` directly to save one Python call.
    """

    source: str
    fields: frozenset[str]
    fn: Callable[[Mapping[str, Any]], Any] = field(repr=False, compare=False)

    def __call__(self, record: Mapping[str, Any]) -> Any:
        return self.fn(record)


def _literal(node: ast.expr) -> Any:
    """Return the value of a constant (``-1``, ``null``, ...) or ``_NOT_LITERAL``."""
    match node:
        case ast.Constant(value=value) if isinstance(value, _CONSTANT_TYPES):
            return value
        case ast.Name(id=name) if name in _LITERALS:
            return _LITERALS[name]
        case ast.UnaryOp(op=ast.USub() | ast.UAdd(), operand=ast.Constant(value=value)):
            if isinstance(value, int | float) and not isinstance(value, bool):
                return -value if isinstance(node.op, ast.USub) else value
    return _NOT_LITERAL


def _constant_only(node: ast.expr) -> bool:
    """True for a tree of literals and arithmetic only (no fields, no calls)."""
    match node:
        case ast.BinOp(left=left, right=right):
            return _constant_only(left) and _constant_only(right)
        case ast.UnaryOp(op=ast.USub() | ast.UAdd(), operand=operand):
            return _constant_only(operand)
    return _literal(node) is not _NOT_LITERAL


_FOLD: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Pow: _pow,
    ast.Mult: _mul,
    ast.Mod: _mod,
}


def _fold(node: ast.expr) -> Any:
    """The value of a literal-only tree, computed through the guards."""
    if isinstance(node, ast.BinOp):
        return _FOLD[type(node.op)](_fold(node.left), _fold(node.right))
    if isinstance(node, ast.UnaryOp):
        value = _fold(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    return _literal(node)


class _Checker:
    """Validates a parsed expression and rewrites field names to record lookups."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0, *(m.end() for m in re.finditer(r"\r\n|\r|\n", text))]
        self.fields: set[str] = set()

    def col(self, lineno: int | None, offset: int | None) -> int:
        """Convert an ast (line, UTF-8 byte offset) position to a character offset."""
        start = self.starts[min(lineno or 1, len(self.starts)) - 1]
        line = self.text[start:].encode()[: offset or 0]
        return start + len(line.decode(errors="ignore"))

    def find(self, symbol: str, after: ast.expr, before: ast.expr | None = None) -> int:
        """Locate ``symbol`` in the source between two nodes (operator positions)."""
        lo = self.col(after.end_lineno, after.end_col_offset)
        hi = self.col(before.lineno, before.col_offset) if before else len(self.text)
        index = self.text.find(symbol, lo, hi)
        return index if index >= 0 else lo

    def error(self, message: str, where: ast.expr | ast.keyword | int) -> ExprError:
        if not isinstance(where, int):
            where = self.col(where.lineno, where.col_offset)
        return ExprError(message, where)

    def visit(self, node: ast.expr) -> ast.expr:
        match node:
            case ast.Constant(value=value) if isinstance(value, _CONSTANT_TYPES):
                pass
            case ast.Name(id=name):
                if name in _LITERALS:
                    return ast.copy_location(ast.Constant(_LITERALS[name]), node)
                self.fields.add(name)
                record = ast.Name("r", ast.Load())
                lookup = ast.Subscript(record, ast.Constant(name), ast.Load())
                return ast.copy_location(lookup, node)
            case ast.BoolOp():
                node.values = [self.visit(value) for value in node.values]
            case ast.UnaryOp(op=op) if not isinstance(op, ast.Invert):
                node.operand = self.visit(node.operand)
            case ast.BinOp():
                self.check_operator(node)
                self.check_constant(node)
                node.left, node.right = self.visit(node.left), self.visit(node.right)
                return self.guard(node)
            case ast.Compare():
                node.comparators = [self.compared(node, i) for i in range(len(node.ops))]
                node.left = self.visit(node.left)
            case ast.IfExp():
                node.test = self.visit(node.test)
                node.body, node.orelse = self.visit(node.body), self.visit(node.orelse)
            case ast.Call():
                return self.call(node)
            case _:
                raise self.reject(node)
        return node

    def reject(self, node: ast.expr) -> ExprError:
        """Return the error for a construct outside the grammar."""
        if isinstance(node, ast.Attribute):
            where = self.find(".", node.value)
            return self.error("'.' attribute access is not allowed", where)
        if isinstance(node, ast.Subscript):
            return self.error("'[...]' indexing is not allowed", self.find("[", node.value))
        if isinstance(node, ast.UnaryOp):
            msg = "operator '~' is not allowed"
        elif isinstance(node, ast.Constant):
            msg = f"{type(node.value).__name__} literals are not allowed"
        else:
            name = type(node).__name__.lower()
            msg = _FORBIDDEN.get(type(node), f"'{name}' is not allowed")
        return self.error(msg, node)

    def check_operator(self, node: ast.BinOp) -> None:
        """Reject bitwise operators and huge literal exponents."""
        if symbol := _BAD_OPS.get(type(node.op)):
            where = self.find(symbol, node.left, node.right)
            raise self.error(f"operator '{symbol}' is not allowed", where)
        power = _literal(node.right) if isinstance(node.op, ast.Pow) else 0
        if isinstance(power, int | float) and abs(power) > _MAX_EXPONENT:
            msg = f"exponent {power} is too large (at most {_MAX_EXPONENT})"
            raise self.error(msg, node.right)

    def check_constant(self, node: ast.BinOp) -> None:
        """Evaluate a literal-only operation through the guards: a bound it breaks is a
        compile-time error at its column, not a surprise on the first record."""
        if type(node.op) not in _GUARDS or not _constant_only(node):
            return
        try:
            _fold(node)
        except ExprLimitError as exc:
            symbol = {ast.Pow: "**", ast.Mult: "*", ast.Mod: "%"}[type(node.op)]
            where = self.find(symbol, node.left, node.right)
            raise self.error(f"operator '{symbol}': {exc}", where) from None
        except (ArithmeticError, TypeError, ValueError):
            pass  # e.g. 1 % 0: an evaluation error like any other, at run time

    def guard(self, node: ast.BinOp) -> ast.expr:
        """Route ``**``, ``*`` and ``%`` through their bounded twins."""
        name = _GUARDS.get(type(node.op))
        if name is None:
            return node
        if isinstance(node.op, ast.Mult) and any(
            isinstance(side, ast.Constant) and type(side.value) is float
            for side in (node.left, node.right)
        ):
            return node  # a float factor cannot repeat a sequence
        call = ast.Call(ast.Name(name, ast.Load()), [node.left, node.right], [])
        return ast.copy_location(call, node)

    def compared(self, node: ast.Compare, i: int) -> ast.expr:
        """Check and rewrite the right operand of the ``i``-th comparison."""
        op, right = node.ops[i], node.comparators[i]
        if isinstance(op, ast.Is | ast.IsNot):
            where = self.find("is", node.comparators[i - 1] if i else node.left, right)
            raise self.error("'is' is not allowed; use '==' or '!='", where)
        if not isinstance(op, ast.In | ast.NotIn):
            return self.visit(right)
        if not isinstance(right, ast.Tuple | ast.List):
            msg = "'in' needs a literal list or tuple on its right, e.g. x in (1, 2)"
            raise self.error(msg, right)
        values = [_literal(item) for item in right.elts]
        if _NOT_LITERAL in values:
            bad = right.elts[values.index(_NOT_LITERAL)]
            raise self.error("the list after 'in' may only contain constants", bad)
        items: list[ast.expr] = [ast.Constant(value) for value in values]
        return ast.copy_location(ast.Tuple(items, ast.Load()), right)

    def call(self, node: ast.Call) -> ast.expr:
        """Check a call of a whitelisted function; its name stays a global lookup."""
        if not isinstance(node.func, ast.Name):
            self.visit(node.func)  # raises the specific error, e.g. attribute access
            raise self.error("only the known functions can be called", node.func)
        name = node.func.id
        if name == "has":
            return self.has(node)
        if name not in _SPECS:
            known = ", ".join(sorted([*_SPECS, "has"]))
            msg = f"unknown function '{name}' (known: {known})"
            raise self.error(msg, node.func)
        if node.keywords:
            raise self.error("keyword arguments are not allowed", node.keywords[0])
        if starred := [arg for arg in node.args if isinstance(arg, ast.Starred)]:
            raise self.error("'*' argument unpacking is not allowed", starred[0])
        node.args = [self.visit(arg) for arg in node.args]
        _, lo, hi = _SPECS[name]
        count = len(node.args)
        if count < lo or (hi is not None and count > hi):
            wanted = f"{lo} or {hi}" if hi and hi > lo else str(lo) if hi else f"at least {lo}"
            msg = f"{name}() takes {wanted} argument{'s' * (hi != 1)}, got {count}"
            raise self.error(msg, node)
        return node

    def has(self, node: ast.Call) -> ast.expr:
        """``has(x)`` -> ``"x" in r``: a presence test, not a lookup."""
        if node.keywords:
            raise self.error("keyword arguments are not allowed", node.keywords[0])
        arg = node.args[0] if len(node.args) == 1 else None
        if not isinstance(arg, ast.Name) or arg.id in _LITERALS:
            raise self.error(
                f"has() takes one field name, e.g. has(battery), got {len(node.args)} "
                f"argument{'s' * (len(node.args) != 1)}"
                if len(node.args) != 1
                else "has() takes a field name, e.g. has(battery)",
                node,
            )
        test = ast.Compare(ast.Constant(arg.id), [ast.In()], [ast.Name("r", ast.Load())])
        return ast.copy_location(test, node)


def compile_expr(source: str) -> Expr:
    """Check ``source`` against the whitelisted grammar and compile it to an :class:`Expr`.

    Raises :class:`ExprError` (with ``message`` and 0-based ``column``) on a syntax error
    or a forbidden construct. A field missing at evaluation time raises ``KeyError``.
    """
    text = source.strip()
    lead = len(source) - len(source.lstrip())
    if not text:
        raise ExprError("expected an expression, got an empty string", 0)
    if len(text) > MAX_SOURCE:
        raise ExprError(f"expression is {len(text)} characters long (at most {MAX_SOURCE})", lead)
    checker = _Checker(text)
    try:
        # The newline makes an unexpected end of input point at the end, not at column 0.
        tree = ast.parse(text + "\n", "<expr>", mode="eval")
        _check_constant_result(tree.body)
        body = checker.visit(tree.body)
        if _may_compute_int(body):
            body = ast.copy_location(ast.Call(ast.Name("_result", ast.Load()), [body], []), body)
        arguments = ast.arguments([], [ast.arg("r")], None, [], [], None, [])
        func = ast.Expression(ast.copy_location(ast.Lambda(arguments, body), body))
        code = compile(ast.fix_missing_locations(func), "<expr>", "eval")
    except SyntaxError as exc:
        column = checker.col(exc.lineno, 0) + (exc.offset or 1) - 1 if exc.lineno else 0
        detail = exc.msg.removeprefix("invalid syntax").lstrip(". ")
        msg = "invalid syntax" + (f": {detail}" * bool(detail))
        raise ExprError(msg, lead + column) from None
    except ExprError as exc:
        raise ExprError(exc.message, lead + exc.column) from None
    except (RecursionError, MemoryError):
        raise ExprError("expression is too deeply nested", lead) from None
    namespace: dict[str, Any] = {"__builtins__": {}, **FUNCTIONS, **_GUARD_FUNCTIONS}
    namespace["_result"] = _result
    fn = eval(code, namespace)  # noqa: S307 - only whitelisted, rewritten ast is compiled
    return Expr(source, frozenset(checker.fields), fn)
