"""Each reason a message is rejected, with the text that explains it."""

from __future__ import annotations

import zlib

import orjson
import pytest
from cloudkit import NOW, alert, digest, payload

from cloud.parse import RejectError, parse_message

TOPIC = "fogline/gw1/up/digest"


def reject(topic: str, body: bytes, max_bytes: int = 4096) -> RejectError:
    with pytest.raises(RejectError) as info:
        parse_message(topic, body, max_bytes)
    return info.value


def test_a_good_batch_plain_and_compressed() -> None:
    records = [(s, "line-1/m-01", digest(NOW + s)) for s in range(1, 300)]
    plain = payload("gw1", "digest", records)
    packed = payload("gw1", "digest", records, compressed=True)
    assert packed[:1] != b"{"
    assert len(packed) < len(plain)
    for body in (plain, packed):
        parsed = parse_message(TOPIC, body, 1 << 20)
        assert (parsed.gateway, parsed.kind) == ("gw1", "digest")
        assert parsed.seqs == list(range(1, 300))


@pytest.mark.parametrize(
    ("body", "reason", "text"),
    [
        (b"{not json", "corrupt", "not JSON"),
        (b"\x00\x01garbage", "corrupt", "neither JSON nor zlib"),
        (
            b'{"v": 2, "gateway": "gw1", "kind": "digest", "records": []}',
            "version",
            "unknown version 2",
        ),
        (b'{"v": 1, "gateway": "gw1", "kind": "digest"}', "schema", "field 'records'"),
        (
            b'{"v": 1, "gateway": "gw1", "kind": "digest", "records": [{"seq": "1"}]}',
            "schema",
            "records[0]",
        ),
        (b'{"v": 1, "gateway": 5, "kind": "digest", "records": []}', "schema", "field 'gateway'"),
        (b"[1, 2]", "corrupt", "neither JSON nor zlib"),  # only an object starts with {
    ],
)
def test_envelope_rejects(body: bytes, reason: str, text: str) -> None:
    exc = reject(TOPIC, body)
    assert exc.reason == reason
    assert text in exc.detail


def test_oversized_before_and_after_decompression() -> None:
    assert reject(TOPIC, b"{" + b" " * 5000 + b"}").reason == "oversized"
    bomb = zlib.compress(b'{"v": 1, "pad": "' + b"x" * 100_000 + b'"}')
    assert len(bomb) < 4096
    exc = reject(TOPIC, bomb)
    assert (exc.reason, exc.detail) == ("oversized", "larger than 4096 bytes once decompressed")


@pytest.mark.parametrize(
    ("topic", "text"),
    [
        ("fogline/gw1/down/digest", "expected fogline/<gateway>/up/<kind>"),
        ("fogline/gw1/up/model", "unknown kind 'model'"),
        ("fogline/gw2/up/digest", "batch of 'gw1'/'digest' published on 'fogline/gw2/up/digest'"),
        ("fogline/gw1/up/alert", "batch of 'gw1'/'digest'"),
    ],
)
def test_topic_rejects(topic: str, text: str) -> None:
    exc = reject(topic, payload("gw1", "digest", [(1, "d", digest())]))
    assert exc.reason == "topic"
    assert text in exc.detail


@pytest.mark.parametrize(
    ("kind", "data", "text"),
    [
        ("digest", {**digest(), "window_end": "soon"}, "field 'window_end': expected a number"),
        ("digest", {"count": 3}, "field 'window_start': expected a number, got None"),
        ("alert", {**alert("a", "raised"), "state": "open"}, "field 'state': expected 'raised'"),
        ("alert", {**alert("a", "raised"), "severity": "panic"}, "field 'severity'"),
        ("alert", {**alert("a", "raised"), "alert_id": ""}, "field 'alert_id': expected a string"),
        ("alert", alert("a", "cleared"), "field 'cleared_at': expected a number, got None"),
        ("alert", {**alert("a", "raised"), "raised_at": True}, "field 'raised_at'"),
    ],
)
def test_a_bad_record_is_a_dead_letter_and_the_rest_of_its_batch_stands(
    kind: str, data: dict[str, object], text: str
) -> None:
    good = alert("ok", "raised") if kind == "alert" else digest()
    body = payload("gw1", kind, [(1, "d", good), (2, "d", data), (3, "d", good)])
    batch = parse_message(f"fogline/gw1/up/{kind}", body, 1 << 20)
    assert batch.seqs == [1, 3]
    [(seq, device, letter)] = batch.dead
    assert (seq, device) == (2, "d")
    assert letter["event"] == "dead_letter"
    assert letter["kind"] == kind
    assert letter["reason"].startswith("records[1]: ")
    assert text in letter["reason"]
    assert letter["data"] == data
    letters = batch.dead_letters()
    assert letters is not None
    assert (letters.gateway, letters.kind, letters.seqs) == ("gw1", "event", [2])


def test_a_device_too_long_for_its_column_is_a_dead_letter_not_a_batch_reject() -> None:
    """Issue 9: one reading on a 300-character topic segment blocked its whole batch."""
    body = payload("gw1", "digest", [(1, "x" * 300, digest()), (2, "d", digest())])
    batch = parse_message(TOPIC, body, 1 << 20)
    assert batch.seqs == [2]
    [(seq, device, letter)] = batch.dead
    assert (seq, device) == (1, "x" * 256)
    assert letter["reason"] == "records[0]: device longer than 256 characters"


@pytest.mark.parametrize("seq", [0, 2**63])  # 2**63 fits JSON and orjson, not a BIGINT
def test_a_seq_outside_the_ledger_is_dropped_and_counted(seq: int) -> None:
    batch = parse_message(TOPIC, payload("gw1", "digest", [(seq, "d", digest())]), 1 << 20)
    assert (batch.entries, batch.dead, batch.dropped) == ([], [], 1)


def test_free_form_kinds_take_any_object() -> None:
    body = orjson.dumps(
        {"v": 1, "gateway": "gw1", "kind": "event", "sent_at": NOW,
         "records": [{"seq": 1, "device": "", "data": {"ts": "yesterday", "x": [1]}}]}
    )  # fmt: skip
    assert parse_message("fogline/gw1/up/event", body).seqs == [1]
