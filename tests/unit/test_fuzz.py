"""Fuzzing that stays: hypothesis targets for every parser that reads untrusted input.

Each target is bounded (examples and deadline) so that CI stays fast, a few seconds each;
`FOGLINE_FUZZ_EXAMPLES` raises the count for a longer local run. The property is always the
same: the parser answers or refuses in its own typed way, quickly; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import os
import string
import time
from typing import Any

import cbor2
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fogline.envelope import decode_ack, decode_batch
from fogline.yamldoc import YamlDocumentError, load
from gateway.decode import Decoder, TopicPatterns, cbor_problem
from gateway.expr import ExprError, compile_expr
from gateway.record import Record

EXAMPLES = int(os.environ.get("FOGLINE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_700_000_000.0

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def _envelope(records: Any) -> bytes:
    return orjson.dumps(
        {"v": 1, "gateway": "gw1", "kind": "digest", "sent_at": NOW, "records": records},
        option=orjson.OPT_NON_STR_KEYS,
    )


@FUZZ
@given(
    st.binary(max_size=512)
    | json_values.map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS))
)
def test_envelope_decoders_answer_or_refuse_with_value_error(payload: bytes) -> None:
    for decoder in (decode_batch, decode_ack):
        with contextlib.suppress(ValueError):
            decoder(payload)


@FUZZ
@given(json_values)
def test_envelope_records_of_any_shape(records: Any) -> None:
    try:
        batch = decode_batch(_envelope(records))
    except ValueError:
        return
    assert all(isinstance(r["seq"], int) for r in batch["records"])


class _Rejects:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        self.reasons.append(reason)


@FUZZ
@given(
    st.text(alphabet=string.ascii_letters + "/+#{}", max_size=300),
    st.binary(max_size=300)
    | json_values.map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)),
)
def test_the_payload_decoder_never_raises(topic: str, payload: bytes) -> None:
    rejects = _Rejects()
    decoder = Decoder(TopicPatterns(["s/{device}/t", "s/#"]), ("device",), rejects)
    out: list[Record] = []
    decoder.decode(topic, payload, NOW, out)
    decoder.decode(f"s/{topic[:64]}/t", payload, NOW, out)
    assert all(len(r.key[0]) <= 64 for r in out)


@FUZZ
@given(st.binary(max_size=300))
def test_cbor_payloads_are_plain_or_named(payload: bytes) -> None:
    try:
        data = cbor2.loads(payload)
    except Exception:
        return
    problem = cbor_problem(data)
    if problem is None:
        rejects = _Rejects()
        decoder = Decoder(TopicPatterns(["s/{device}/t"]), ("device",), rejects)
        decoder.decode_data("s/d/t", payload, data, {"device": "d"}, NOW, [])


_EXPR_ALPHABET = "xyz0123456789 +-*/%().,<>=!'\"andornotifelse" + "*" * 6


@FUZZ
@given(
    st.text(alphabet=_EXPR_ALPHABET, max_size=60),
    st.dictionaries(st.sampled_from("xyz"), json_values),
)
def test_expressions_compile_or_refuse_and_evaluate_quickly(
    source: str, record: dict[str, Any]
) -> None:
    try:
        expr = compile_expr(source)
    except ExprError:
        return
    start = time.perf_counter()
    with contextlib.suppress(ArithmeticError, TypeError, ValueError, KeyError, RecursionError):
        expr(record)
    assert time.perf_counter() - start < 0.5, source


@FUZZ
@given(st.text(max_size=300) | st.text(alphabet="&*ab: -[]{}\n'\"!<>|", max_size=200))
def test_the_yaml_loader_answers_or_locates_its_problem(text: str) -> None:
    problems = []
    try:
        load(text, "f.yaml")
    except YamlDocumentError as exc:
        problems = exc.problems
    assert all(p.file == "f.yaml" and p.line >= 1 for p in problems)
