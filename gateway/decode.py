"""From (topic, payload) to records: topic fields, JSON / JSON array / SenML, timestamps, key.

Per message this is one `orjson.loads`, one cached topic lookup and a few dict operations.
Every way a payload can be wrong ends in `reject(topic, payload, reason, detail)`; the
decoder never raises.

Lengths are bounded here, at the source: a topic longer than `max_topic_length`
(`topic_too_long`) never reaches the topic cache, and a key value (a topic segment or a
payload field) longer than `max_key_length` (`key_too_long`) never becomes per-key state
downstream, nor a device name the cloud cannot store. CBOR is decoded by `cbor2`, which
turns tags into Python objects: `cbor_problem` refuses everything but plain JSON-like data
(a bignum timestamp used to escape as an OverflowError).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import orjson

from gateway.record import Record

RejectRaw = Callable[[str, bytes, str, str], None]

SENML_KEYS = frozenset(
    {"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
)
SENML_RELATIVE_LIMIT = 2**28  # RFC 8428 4.5.3: smaller times are relative to now
MS_THRESHOLD = 1e11  # epoch seconds stay below this until the year 5138; ms are above it
TOPIC_CACHE_MAX = 100_000
CBOR_INT_MIN, CBOR_INT_MAX = -(2**64), 2**64 - 1  # CBOR's own integers; beyond is a bignum


class TopicPatterns:
    """Topic patterns with `{name}` segments: the MQTT filters, and a cached matcher."""

    def __init__(self, patterns: list[str]) -> None:
        self._compiled: list[tuple[list[str], list[tuple[int, str]], bool]] = []
        self.filters: list[str] = []
        for pattern in patterns:
            levels = pattern.split("/")
            names = [(i, lv[1:-1]) for i, lv in enumerate(levels) if lv.startswith("{")]
            literal = ["+" if lv.startswith("{") else lv for lv in levels]
            multi = literal[-1] == "#"
            self._compiled.append((literal[:-1] if multi else literal, names, multi))
            self.filters.append("/".join(literal))
        self._cache: dict[str, dict[str, str] | None] = {}

    def match(self, topic: str) -> dict[str, str] | None:
        """Segment fields of the first pattern that matches, or None."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found = self._match(topic)
        if len(self._cache) >= TOPIC_CACHE_MAX:
            self._cache.clear()
        self._cache[topic] = found
        return found

    def _match(self, topic: str) -> dict[str, str] | None:
        levels = topic.split("/")
        for literal, names, multi in self._compiled:
            if len(levels) < len(literal) or (not multi and len(levels) != len(literal)):
                continue
            if all(p in {"+", lv} for p, lv in zip(literal, levels, strict=False)):
                return {name: levels[i] for i, name in names}
        return None


class Decoder:
    """Turns raw messages into records for one source."""

    def __init__(
        self,
        patterns: TopicPatterns,
        key: tuple[str, ...],
        reject: RejectRaw,
        *,
        fmt: str = "auto",
        timestamp: str | None = "ts",
        max_payload: int = 65536,
        max_clock_skew: float | None = 3600.0,
        max_topic_length: int = 256,
        max_key_length: int = 64,
    ) -> None:
        self._patterns = patterns
        self._key = itemgetter(*key)
        self._single_key = len(key) == 1
        self._reject = reject
        self._fmt = fmt
        self._ts_field = timestamp
        self._max_payload = max_payload
        self._skew = max_clock_skew
        self.max_topic_length = max_topic_length
        self._max_key = max_key_length

    def topic_too_long(self, topic: str, payload: bytes) -> bool:
        """Reject (and say so) a topic or path longer than `max_topic_length`."""
        if len(topic) <= self.max_topic_length:
            return False
        self._reject(
            topic[: self.max_topic_length] + "...",
            payload,
            "topic_too_long",
            f"{len(topic)} characters > max_topic_length {self.max_topic_length}",
        )
        return True

    def decode(self, topic: str, payload: bytes, now: float, out: list[Record]) -> None:
        """Append the records in one message to `out`."""
        reject = self._reject
        if len(topic) > self.max_topic_length and self.topic_too_long(topic, payload):
            return
        segments = self._patterns.match(topic)
        if segments is None:
            reject(topic, payload, "unknown_topic", "no source pattern matches this topic")
            return
        if len(payload) > self._max_payload:
            reject(
                topic,
                payload,
                "too_large",
                f"{len(payload)} bytes > max_payload {self._max_payload}",
            )
            return
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            reject(topic, payload, "malformed_json", str(exc))
            return
        self.decode_data(topic, payload, data, segments, now, out)

    def decode_data(
        self,
        topic: str,
        payload: bytes,
        data: Any,
        segments: dict[str, str],
        now: float,
        out: list[Record],
        fmt: str | None = None,
    ) -> None:
        """Append the records in already-parsed data (JSON, or SenML from CBOR) to `out`."""
        reject = self._reject
        fmt = fmt or self._fmt
        if type(data) is dict:
            if fmt == "senml":
                reject(topic, payload, "not_senml", "expected a SenML array, got an object")
                return
            self._reading(topic, payload, data, segments, now, out)
        elif type(data) is list:
            if fmt == "senml" or (fmt == "auto" and _looks_senml(data)):
                readings = _senml(data, now, self._ts_field or "ts")
                if isinstance(readings, str):
                    reject(topic, payload, "bad_senml", readings)
                    return
            else:
                readings = data
            for reading in readings:
                if type(reading) is not dict:
                    reject(
                        topic,
                        payload,
                        "not_an_object",
                        f"expected a JSON object, got {_kind(reading)}",
                    )
                    continue
                self._reading(topic, payload, reading, segments, now, out)
        else:
            reject(
                topic,
                payload,
                "not_an_object",
                f"expected a JSON object or array, got {_kind(data)}",
            )

    def _reading(
        self,
        topic: str,
        payload: bytes,
        fields: dict[str, Any],
        segments: dict[str, str],
        now: float,
        out: list[Record],
    ) -> None:
        fields.update(segments)
        ts: Any = fields.get(self._ts_field) if self._ts_field else None
        if ts is None:
            ts = now
        elif type(ts) not in (int, float) or not math.isfinite(ts):
            self._reject(
                topic,
                payload,
                "bad_timestamp",
                f"field '{self._ts_field}': expected epoch seconds, got {ts!r}",
            )
            return
        elif ts > MS_THRESHOLD:
            ts /= 1000.0
        if self._skew is not None and abs(ts - now) > self._skew:
            self._reject(
                topic,
                payload,
                "clock_skew",
                f"timestamp {ts} is {ts - now:+.0f}s from the gateway clock",
            )
            return
        try:
            raw = self._key(fields)
        except KeyError as exc:
            self._reject(topic, payload, "missing_key", f"key field {exc} is missing")
            return
        key = (str(raw),) if self._single_key else tuple(map(str, raw))
        for value in key:
            if len(value) > self._max_key:
                self._reject(
                    topic,
                    payload,
                    "key_too_long",
                    f"key value of {len(value)} characters > max_key_length {self._max_key}: "
                    f"{value[:32]!r}...",
                )
                return
        out.append(Record(key, float(ts), fields))


# RFC 8428 section 6: SenML CBOR uses integers for the labels.
SENML_CBOR_LABELS = {
    -2: "bn", -3: "bt", -4: "bu", -5: "bv", -16: "bs", -1: "bver",
    0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd",
}  # fmt: skip


def senml_from_cbor(pack: Any) -> Any:
    """A SenML CBOR pack with its integer labels renamed to the JSON ones."""
    if not isinstance(pack, list):
        return pack
    return [
        {SENML_CBOR_LABELS.get(k, k): v for k, v in rec.items()} if isinstance(rec, dict) else rec
        for rec in pack
    ]


_CBOR_PLAIN = (str, float, bool, bytes, type(None))


def cbor_problem(data: Any, limit: int = 100_000) -> str | None:
    """What in decoded CBOR is more than JSON-like data (a bignum, a tag, a set...), or None.

    Iterative, so nesting cannot exhaust the stack; `limit` items at most (a 64 KiB payload
    holds fewer).
    """
    stack: list[tuple[Any, str]] = [(data, "$")]
    seen = 0
    while stack:
        value, where = stack.pop()
        seen += 1
        if seen > limit:
            return f"more than {limit} items"
        cls = value.__class__
        if cls is int:
            if not CBOR_INT_MIN <= value <= CBOR_INT_MAX:
                return f"{where}: a bignum ({value.bit_length()} bits) is not supported"
        elif cls is dict:
            for key, item in value.items():
                if key.__class__ is not str and key.__class__ is not int:
                    return f"{where}: a map key of type {type(key).__name__} is not supported"
                stack.append((item, f"{where}.{key}"))
        elif cls is list:
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
        elif cls not in _CBOR_PLAIN:
            tag = getattr(value, "tag", None)
            what = f"tag {tag}" if tag is not None else type(value).__name__
            return f"{where}: {what} is not supported"
    return None


def _looks_senml(data: list[Any]) -> bool:
    first = data[0] if data else None
    return (
        type(first) is dict and bool(first.keys() & SENML_KEYS) and ("n" in first or "bn" in first)
    )


def _senml(pack: list[Any], now: float, ts_field: str) -> list[dict[str, Any]] | str:
    """Resolve a SenML pack (RFC 8428 4.6) and group its values into readings.

    One reading per base name and time: a pack may carry several devices (a multi-sensor
    node, a field gateway forwarding others), each under its own `bn`, and one device's
    values never land in another's reading. A reading holds its `bn` and each value under
    its short name `n`; a record without `n` is named by its unit (`u`, else `bu`; RFC 8428
    5.1.3 tells humidity and position apart only so), else `value`. `bv` is added to `v`,
    `bs` to `s`.
    """
    base_name, base_time, base_value, base_sum, base_unit = "", 0.0, 0.0, 0.0, ""
    readings: dict[tuple[str, float], dict[str, Any]] = {}
    for i, rec in enumerate(pack):
        if type(rec) is not dict:
            return f"record {i}: expected a SenML object, got {_kind(rec)}"
        try:
            base_name = rec.get("bn", base_name)
            base_time = float(rec.get("bt", base_time))
            base_value = float(rec.get("bv", base_value))
            base_sum = float(rec.get("bs", base_sum))
            base_unit = rec.get("bu", base_unit)
            name = base_name + rec.get("n", "")
            t = base_time + float(rec.get("t", 0.0))
        except (TypeError, ValueError) as exc:
            return f"record {i}: {exc}"
        if not name:
            return f"record {i}: no name (n or bn)"
        if "v" in rec:
            value: Any = rec["v"]
            if type(value) not in (int, float):
                return f"record {i}: v must be a number, got {value!r}"
            value = base_value + value
        elif "vs" in rec:
            value = rec["vs"]
        elif "vb" in rec:
            value = rec["vb"]
        elif "vd" in rec:
            value = rec["vd"]
        elif "s" in rec:
            value = rec["s"]
            if type(value) not in (int, float):
                return f"record {i}: s must be a number, got {value!r}"
            value = base_sum + value
        else:
            continue  # a base-only record
        if abs(t) < SENML_RELATIVE_LIMIT:
            t += now
        reading = readings.get((base_name, t))
        if reading is None:
            reading = readings[(base_name, t)] = {ts_field: t}
            if base_name:
                reading["bn"] = base_name
        reading[rec.get("n") or rec.get("u") or base_unit or "value"] = value
    return list(readings.values())


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )
