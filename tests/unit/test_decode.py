"""Decoder: topic fields, JSON / JSON array / SenML, timestamps, key, and every reject."""

from __future__ import annotations

import cbor2
import orjson
import pytest

from gateway.decode import Decoder, TopicPatterns, cbor_problem
from gateway.record import Record

NOW = 1_700_000_000.0
TOPIC = "factory/l1/m1/telemetry"
TOPIC_FIELDS = {"line": "l1", "machine": "m1"}


class Harness:
    def __init__(
        self, patterns=("factory/{line}/{machine}/telemetry",), key=("line", "machine"), **kw
    ):
        self.rejects: list[tuple[str, bytes, str, str]] = []
        self.patterns = TopicPatterns(list(patterns))
        self.decoder = Decoder(self.patterns, key, lambda *args: self.rejects.append(args), **kw)

    def __call__(self, payload, topic=TOPIC, now=NOW) -> list[Record]:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        out: list[Record] = []
        self.decoder.decode(topic, raw, now, out)
        return out

    @property
    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.rejects]

    @property
    def details(self) -> list[str]:
        return [detail for _, _, _, detail in self.rejects]


@pytest.fixture
def decode():
    return Harness()


# -- plain JSON ----------------------------------------------------------------------------


def test_json_object(decode):
    out = decode({"ts": NOW - 1.5, "vibration": 2.4, "status": "ok"})
    assert out == [
        Record(
            ("l1", "m1"),
            NOW - 1.5,
            {"ts": NOW - 1.5, "vibration": 2.4, "status": "ok", **TOPIC_FIELDS},
        )
    ]
    assert decode.rejects == []


def test_topic_fields_win_over_payload_fields(decode):
    [r] = decode({"machine": "spoofed", "v": 1})
    assert r.key == ("l1", "m1")
    assert r.fields["machine"] == "m1"


def test_json_array_of_readings(decode):
    out = decode([{"ts": NOW - 2, "v": 1}, {"ts": NOW - 1, "v": 2}, {"v": 3}])
    assert [(r.ts, r.fields["v"]) for r in out] == [(NOW - 2, 1), (NOW - 1, 2), (NOW, 3)]
    assert all(r.key == ("l1", "m1") for r in out)


def test_empty_array_is_nothing(decode):
    assert decode([]) == []
    assert decode.rejects == []


def test_timestamp_in_milliseconds(decode):
    [r] = decode({"ts": 1_700_000_000_250, "v": 1})
    assert r.ts == pytest.approx(1_700_000_000.25)
    assert type(r.ts) is float


def test_integer_seconds_become_float(decode):
    [r] = decode({"ts": 1_699_999_999, "v": 1})
    assert r.ts == 1_699_999_999.0
    assert type(r.ts) is float


@pytest.mark.parametrize("payload", [{"v": 1}, {"v": 1, "ts": None}])
def test_missing_timestamp_is_the_arrival_time(decode, payload):
    [r] = decode(payload, now=NOW + 0.125)
    assert r.ts == NOW + 0.125


def test_other_timestamp_field_and_none():
    assert Harness(timestamp="time")({"time": NOW - 5, "ts": "ignored"})[0].ts == NOW - 5
    assert Harness(timestamp=None)({"ts": NOW - 5})[0].ts == NOW


def test_single_field_key():
    decode = Harness(patterns=["plant/{machine}/telemetry"], key=("machine",))
    [r] = decode({"v": 1}, topic="plant/m7/telemetry")
    assert r.key == ("m7",)


def test_key_values_from_the_payload_become_strings():
    decode = Harness(patterns=["plant/{line}"], key=("line", "unit"))
    [r] = decode({"unit": 12}, topic="plant/a")
    assert r.key == ("a", "12")
    assert r.fields["unit"] == 12


# -- SenML -------------------------------------------------------------------------------


def test_senml_pack_grouped_by_time(decode):
    pack = [
        {"bn": "urn:dev:m1:", "bt": NOW - 10, "n": "temp", "u": "Cel", "v": 21.5},
        {"n": "running", "vb": True},
        {"n": "state", "vs": "run"},
        {"n": "temp", "t": 5, "v": 22.0},
        {"n": "hum", "t": 5, "v": 40},
    ]
    out = decode(pack)
    assert decode.rejects == []
    assert out == [
        Record(
            ("l1", "m1"),
            NOW - 10,
            {
                "ts": NOW - 10,
                "bn": "urn:dev:m1:",
                "temp": 21.5,
                "running": True,
                "state": "run",
                **TOPIC_FIELDS,
            },
        ),
        Record(
            ("l1", "m1"),
            NOW - 5,
            {"ts": NOW - 5, "bn": "urn:dev:m1:", "temp": 22.0, "hum": 40, **TOPIC_FIELDS},
        ),
    ]


def test_senml_relative_times_resolve_against_now(decode):
    pack = [{"n": "a", "v": 1}, {"n": "a", "t": -30, "v": 2}, {"n": "b", "t": -30, "v": 3}]
    out = decode(pack, now=NOW)
    assert [(r.ts, {k: r.fields.get(k) for k in ("a", "b")}) for r in out] == [
        (NOW, {"a": 1, "b": None}),
        (NOW - 30, {"a": 2, "b": 3}),
    ]


def test_senml_relative_base_time(decode):
    [r] = decode([{"bt": -60, "n": "a", "v": 1}])
    assert r.ts == NOW - 60


def test_senml_base_value_and_base_only_records(decode):
    pack = [{"bn": "dev:", "bt": NOW, "bv": 100}, {"n": "a", "v": 1.5}, {"n": "b", "v": -1}]
    [r] = decode(pack)
    assert (r.fields["a"], r.fields["b"]) == (101.5, 99.0)


def test_senml_times_in_milliseconds(decode):
    [r] = decode([{"bt": 1_700_000_000_500, "n": "a", "v": 1}])
    assert r.ts == pytest.approx(1_700_000_000.5)


def test_senml_forced_format_rejects_an_object():
    decode = Harness(fmt="senml")
    assert decode({"n": "a", "v": 1}) == []
    assert decode.reasons == ["not_senml"]


def test_json_format_does_not_read_senml():
    decode = Harness(fmt="json")
    [r] = decode([{"n": "a", "v": 1}])
    assert r.fields["n"] == "a"


@pytest.mark.parametrize(
    ("pack", "detail"),
    [
        ([{"n": "a", "v": "1"}], "record 0: v must be a number, got '1'"),
        ([{"n": "a", "v": True}], "record 0: v must be a number, got True"),
        ([{"n": "a", "v": 1}, 5], "record 1: expected a SenML object, got a number"),
        ([{"bn": "x", "bt": "soon", "v": 1}], None),
        ([{"bn": "", "n": "", "v": 1}], "record 0: no name (n or bn)"),
    ],
)
def test_bad_senml(decode, pack, detail):
    assert decode(pack) == []
    assert decode.reasons == ["bad_senml"]
    if detail is not None:
        assert decode.details == [detail]
    else:
        assert decode.details[0].startswith("record 0: ")


# -- rejects -----------------------------------------------------------------------------


def test_unknown_topic(decode):
    assert decode({"v": 1}, topic="factory/l1/m1/status") == []
    assert decode({"v": 1}, topic="factory/l1/telemetry") == []
    assert decode.reasons == ["unknown_topic", "unknown_topic"]
    topic, payload, _, detail = decode.rejects[0]
    assert topic == "factory/l1/m1/status"
    assert payload == b'{"v":1}'
    assert detail == "no source pattern matches this topic"


def test_too_large():
    decode = Harness(max_payload=16)
    assert decode(b'{"v": 1234567890}') == []  # 17 bytes
    assert decode.reasons == ["too_large"]
    assert decode.details == ["17 bytes > max_payload 16"]
    assert len(decode(b'{"v": 123456789}')) == 1  # exactly 16 bytes


@pytest.mark.parametrize("payload", [b"{not json", b"", b'{"v": NaN}', b"\xff\xfe"])
def test_malformed_json(decode, payload):
    assert decode(payload) == []
    assert decode.reasons == ["malformed_json"]


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (42, "expected a JSON object or array, got a number"),
        ("text", "expected a JSON object or array, got a string"),
        (None, "expected a JSON object or array, got null"),
        (True, "expected a JSON object or array, got a boolean"),
    ],
)
def test_not_an_object(decode, payload, detail):
    assert decode(payload) == []
    assert decode.rejects == [(TOPIC, orjson.dumps(payload), "not_an_object", detail)]


def test_array_item_that_is_not_an_object(decode):
    out = decode([{"v": 1}, "oops", [2], {"v": 3}])
    assert [r.fields["v"] for r in out] == [1, 3]
    assert decode.reasons == ["not_an_object", "not_an_object"]
    assert decode.details == [
        "expected a JSON object, got a string",
        "expected a JSON object, got an array",
    ]


@pytest.mark.parametrize(
    ("ts", "shown"), [("2024-01-01", "'2024-01-01'"), (True, "True"), ([1], "[1]"), ({}, "{}")]
)
def test_bad_timestamp(decode, ts, shown):
    assert decode({"ts": ts, "v": 1}) == []
    assert decode.rejects == [
        (
            TOPIC,
            orjson.dumps({"ts": ts, "v": 1}),
            "bad_timestamp",
            f"field 'ts': expected epoch seconds, got {shown}",
        )
    ]


@pytest.mark.parametrize("offset", [3601, -3601, -NOW])
def test_clock_skew(decode, offset):
    assert decode({"ts": NOW + offset, "v": 1}) == []
    assert decode.reasons == ["clock_skew"]


def test_clock_skew_detail_and_limit(decode):
    assert len(decode({"ts": NOW + 3600, "v": 1})) == 1
    decode({"ts": NOW - 7200, "v": 1})
    assert decode.details == [f"timestamp {NOW - 7200} is -7200s from the gateway clock"]


def test_clock_skew_disabled():
    decode = Harness(max_clock_skew=None)
    assert [r.ts for r in decode({"ts": 1_000_000.0})] == [1_000_000.0]


def test_missing_key():
    decode = Harness(patterns=["factory/{line}/telemetry"])
    assert decode({"v": 1}, topic="factory/l1/telemetry") == []
    assert decode.rejects == [
        ("factory/l1/telemetry", b'{"v":1}', "missing_key", "key field 'machine' is missing")
    ]


def test_one_bad_reading_in_an_array_spares_the_others(decode):
    out = decode([{"ts": "x"}, {"ts": NOW + 1e6}, {"ts": NOW - 1, "v": 1}])
    assert [r.ts for r in out] == [NOW - 1]
    assert decode.reasons == ["bad_timestamp", "clock_skew"]


# -- topic patterns ----------------------------------------------------------------------


def test_plus_and_hash_patterns():
    patterns = TopicPatterns(["site/+/{machine}/#", "plant/{line}/+"])
    assert patterns.filters == ["site/+/+/#", "plant/+/+"]
    assert patterns.match("site/a/m1/x/y/z") == {"machine": "m1"}
    assert patterns.match("site/a/m1") == {"machine": "m1"}  # '#' also matches the parent
    assert patterns.match("site/a") is None
    assert patterns.match("plant/l2/anything") == {"line": "l2"}
    assert patterns.match("plant/l2/a/b") is None
    assert patterns.match("other/l2/a") is None


def test_hash_alone_matches_everything():
    patterns = TopicPatterns(["#"])
    assert patterns.match("a") == {}
    assert patterns.match("a/b/c") == {}


def test_first_matching_pattern_wins():
    patterns = TopicPatterns(["f/{line}/special", "f/{line}/{machine}"])
    assert patterns.match("f/l1/special") == {"line": "l1"}
    assert patterns.match("f/l1/m2") == {"line": "l1", "machine": "m2"}


def test_topic_cache_returns_the_same_fields():
    patterns = TopicPatterns(["factory/{line}/{machine}/telemetry"])
    first = patterns.match(TOPIC)
    second = patterns.match(TOPIC)
    assert first == second == TOPIC_FIELDS
    assert second is first
    assert patterns.match("nope") is None
    assert patterns.match("nope") is None


def test_decoding_does_not_corrupt_the_cached_topic_fields(decode):
    decode({"v": 1, "extra": 2})
    decode([{"n": "a", "v": 1}])
    assert decode.patterns.match(TOPIC) == TOPIC_FIELDS
    [r] = decode({"v": 5})
    assert r.fields == {"v": 5, **TOPIC_FIELDS}


# -- bounds: lengths and CBOR --------------------------------------------------------------


def test_a_long_topic_is_rejected_before_the_topic_cache():
    decode = Harness(max_topic_length=64)
    topic = "factory/l1/" + "m" * 300 + "/telemetry"
    assert decode({"ts": NOW}, topic=topic) == []
    assert decode.reasons == ["topic_too_long"]
    assert decode.details == ["321 characters > max_topic_length 64"]
    assert decode.rejects[0][0] == topic[:64] + "..."
    assert topic not in decode.patterns._cache


def test_a_long_key_segment_is_rejected_and_named():
    """The 300-character device id of issue 9 stops here, not at the cloud."""
    decode = Harness()
    topic = "factory/l1/" + "m" * 300 + "/telemetry"
    assert decode({"ts": NOW}, topic=topic) == []
    assert decode.reasons == ["topic_too_long"]
    decode = Harness(max_topic_length=1024)
    assert decode({"ts": NOW}, topic=topic) == []
    assert decode.reasons == ["key_too_long"]
    assert decode.details == [
        "key value of 300 characters > max_key_length 64: 'mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm'..."
    ]


def test_a_long_key_from_the_payload_is_rejected_the_rest_of_the_array_goes_on():
    decode = Harness(patterns=("factory/{line}/telemetry",), key=("device",))
    out = decode([{"device": "d" * 65}, {"device": "d" * 64}], topic="factory/l1/telemetry")
    assert [r.key for r in out] == [("d" * 64,)]
    assert decode.reasons == ["key_too_long"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"ts": 10**40}, "$.ts: a bignum (133 bits) is not supported"),
        ([{"t": -(10**30)}], "$[0].t: a bignum (100 bits) is not supported"),
        ({"x": cbor2.CBORTag(99, 1)}, "$.x: tag 99 is not supported"),
        ({"x": {1, 2}}, "$.x: set is not supported"),
        ({(1, 2): 3}, "$: a map key of type tuple is not supported"),
        ({"x": cbor2.CBORSimpleValue(16)}, "$.x: CBORSimpleValue is not supported"),
    ],
)
def test_cbor_beyond_plain_data_is_named(value, problem):
    assert cbor_problem(cbor2.loads(cbor2.dumps(value))) == problem


def test_plain_cbor_passes_and_nesting_cannot_exhaust_the_stack():
    plain = {"ts": 2**64 - 1, "v": -(2**64), "b": b"\x00", "s": "x", "f": 1.5, "n": None}
    assert cbor_problem(cbor2.loads(cbor2.dumps([plain, {0: True}]))) is None
    deep: list[object] = []
    for _ in range(50_000):
        deep = [deep]
    assert cbor_problem(deep) is None
    assert cbor_problem([0] * 200_001) == "more than 100000 items"


# -- SenML against RFC 8428 ------------------------------------------------------------------


def senml(pack, now=NOW):
    """Readings of a pack on a topic whose key is the base name (`bn`)."""
    decode = Harness(patterns=("senml/#",), key=("bn",))
    out = decode(pack, topic="senml/in", now=now)
    assert decode.rejects == []
    return [(r.key, r.ts, {k: v for k, v in r.fields.items() if k not in {"ts", "bn"}})
            for r in out]  # fmt: skip


def test_senml_pack_with_two_base_names_keeps_both_devices():
    pack = [
        {"bn": "urn:dev:ow:1/", "bt": 1.7e9, "n": "temp", "v": 20},
        {"bn": "urn:dev:ow:2/", "n": "temp", "v": 30},
    ]
    assert senml(pack) == [
        (("urn:dev:ow:1/",), 1.7e9, {"temp": 20}),
        (("urn:dev:ow:2/",), 1.7e9, {"temp": 30}),
    ]


def test_senml_base_sum_is_added_to_sums():
    pack = [{"bn": "m:", "bt": NOW, "bs": 1000, "n": "energy", "s": 5.5}, {"n": "water", "s": 2}]
    assert senml(pack) == [(("m:",), NOW, {"energy": 1005.5, "water": 1002.0})]


# RFC 8428 section 5's examples, each with the readings they stand for.
RFC_SINGLE = [{"n": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}]
RFC_DATAPOINTS = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
    {"n": "current", "u": "A", "v": 1.2},
]
RFC_SERIES = [
    {"bn": "urn:dev:ow:10e2073a0108006:", "bt": 1.276020076001e09, "bu": "A", "bver": 5,
     "n": "voltage", "u": "V", "v": 120.1},
    {"n": "current", "t": -5, "v": 1.2},
    {"n": "current", "t": -4, "v": 1.3},
    {"n": "current", "t": -3, "v": 1.4},
    {"n": "current", "t": -2, "v": 1.5},
    {"n": "current", "t": -1, "v": 1.6},
    {"n": "current", "v": 1.7},
]  # fmt: skip
RFC_MEASUREMENTS = [
    {"bn": "urn:dev:ow:10e2073a01080063", "bt": 1.320067464e09, "bu": "%RH", "v": 20},
    {"u": "lon", "v": 24.30621},
    {"u": "lat", "v": 60.07965},
    {"t": 60, "v": 20.3},
    {"u": "lon", "t": 60, "v": 24.30622},
    {"u": "lat", "t": 60, "v": 60.07965},
    {"t": 120, "v": 20.7},
    {"u": "lon", "t": 120, "v": 24.30623},
    {"u": "lat", "t": 120, "v": 60.07966},
    {"u": "%EL", "t": 150, "v": 98},
    {"t": 180, "v": 21.2},
    {"u": "lon", "t": 180, "v": 24.30628},
    {"u": "lat", "t": 180, "v": 60.07967},
]
RFC_TYPES = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "n": "temp", "u": "Cel", "v": 23.1},
    {"n": "label", "vs": "Machine Room"},
    {"n": "open", "vb": False},
    {"n": "nfv-reader", "vd": "gmTR9_ZGJ3lHY9eFQ_W-RA"},
]


def test_rfc_8428_examples():
    dev = "urn:dev:ow:10e2073a01080063"
    # A pack without bn has no device in it: the topic's key has to say (here: none).
    single = Harness(patterns=("senml/{bn}",), key=("bn",))
    [r] = single(RFC_SINGLE, topic="senml/d1")
    assert (r.ts, r.fields[dev]) == (NOW, 23.1)
    assert senml(RFC_DATAPOINTS) == [((f"{dev}:",), NOW, {"voltage": 120.1, "current": 1.2})]
    t0, series = 1.276020076001e09, "urn:dev:ow:10e2073a0108006:"
    assert senml(RFC_SERIES, now=t0) == [
        ((series,), t0, {"voltage": 120.1, "current": 1.7}),
        *[((series,), t0 - k, {"current": round(1.7 - k / 10, 1)}) for k in range(5, 0, -1)],
    ]
    t1 = 1.320067464e09
    assert senml(RFC_MEASUREMENTS, now=t1) == [
        ((dev,), t1, {"%RH": 20, "lon": 24.30621, "lat": 60.07965}),
        ((dev,), t1 + 60, {"%RH": 20.3, "lon": 24.30622, "lat": 60.07965}),
        ((dev,), t1 + 120, {"%RH": 20.7, "lon": 24.30623, "lat": 60.07966}),
        ((dev,), t1 + 150, {"%EL": 98}),
        ((dev,), t1 + 180, {"%RH": 21.2, "lon": 24.30628, "lat": 60.07967}),
    ]
    assert senml(RFC_TYPES) == [
        ((f"{dev}:",), NOW, {"temp": 23.1, "label": "Machine Room", "open": False,
                            "nfv-reader": "gmTR9_ZGJ3lHY9eFQ_W-RA"}),
    ]  # fmt: skip


def test_senml_cbor_decodes_as_its_json_twin():
    # RFC 8428 section 6: the same records with integer labels, as CoAP devices send them.
    from gateway.decode import SENML_CBOR_LABELS, senml_from_cbor  # noqa: PLC0415

    labels = {name: code for code, name in SENML_CBOR_LABELS.items()}
    for pack, now in ((RFC_DATAPOINTS, NOW), (RFC_SERIES, 1.276020076001e09),
                      (RFC_MEASUREMENTS, 1.320067464e09), (RFC_TYPES, NOW)):  # fmt: skip
        binary = cbor2.dumps([{labels[k]: v for k, v in rec.items()} for rec in pack])
        decode = Harness(patterns=("senml/#",), key=("bn",))
        out: list[Record] = []
        data = senml_from_cbor(cbor2.loads(binary))
        decode.decoder.decode_data("senml/in", binary, data, {}, now, out, fmt="senml")
        assert decode.rejects == []
        assert out == Harness(patterns=("senml/#",), key=("bn",))(pack, "senml/in", now)
