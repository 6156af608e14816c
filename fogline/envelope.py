"""The uplink wire contract: what a gateway sends on `fogline/<gateway-id>/up/<kind>`.

One MQTT message carries a batch of records of one kind:

    {"v": 1, "gateway": "gw1", "kind": "digest", "sent_at": 1700000000.0,
     "records": [{"seq": 41, "device": "line-1/m-03", "data": {...}}, ...]}

`device` is the record's pipeline key joined with `/` (empty for gateway-level records
such as health).

`seq` is per gateway and increases across all kinds; the cloud stores each
`(gateway, seq)` once, whatever the transport repeats. A payload that does not start with
`{` is the same JSON compressed with zlib (the gateway compresses when it pays).

The cloud acknowledges what it has durably stored (duplicates included) on
`fogline/<gateway-id>/down/ack`, as inclusive seq ranges:

    {"v": 1, "gateway": "gw1", "acks": [[41, 42], [45, 45]]}

Only then does the gateway drop those records from its outbox: a broker's PUBACK says
nothing about the cloud's disk.

Signed (`fogline.signing`, `fogline.chain`): a gateway adds, last, the record its first
record follows in its kind's hash chain, its key id and the signature over everything
before it; the cloud signs its acks the same way:

    {"v": 1, "gateway": "gw1", "kind": "digest", ..., "records": [...],
     "prev": [40, "<hex sha256>"], "head": [45, "<hex sha256>"], "kid": "<16 hex>",
     "sig": "<base64>"}

`prev` is the seq and hash of the record the first one follows in its kind's chain, `head`
the seq and hash of the last one (`fogline.chain`).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

VERSION = 1
KINDS = ("alert", "escalation", "event", "digest", "health")
"""Every uplink kind, most urgent first: the outbox sends in this order and evicts in reverse."""


def uplink_topic(gateway: str, kind: str) -> str:
    return f"fogline/{gateway}/up/{kind}"


def downlink_topic(gateway: str, kind: str) -> str:
    return f"fogline/{gateway}/down/{kind}"


Entry = tuple[int, str, dict[str, Any]]
"""(seq, device, data): one record on the uplink."""


def encode_batch(
    gateway: str,
    kind: str,
    records: list[Entry],
    sent_at: float,
    chain: tuple[int, bytes, int, bytes] | None = None,
    kid: str | None = None,
) -> bytes:
    """`chain` (predecessor's seq and hash, last record's seq and hash) and `kid` (the
    signing key) go last, for the signature."""
    batch: dict[str, Any] = {
        "v": VERSION,
        "gateway": gateway,
        "kind": kind,
        "sent_at": sent_at,
        "records": [{"seq": s, "device": d, "data": data} for s, d, data in records],
    }
    if chain is not None:
        batch["prev"] = [chain[0], chain[1].hex()]
        batch["head"] = [chain[2], chain[3].hex()]
    if kid is not None:
        batch["kid"] = kid
    return orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY)


COMPRESS_ABOVE = 1024  # bytes of JSON below which zlib does not pay


def compress(payload: bytes) -> bytes:
    """zlib when it makes the payload smaller, else the JSON as is."""
    if len(payload) < COMPRESS_ABOVE:
        return payload
    packed = zlib.compress(payload, 6)
    return packed if len(packed) < len(payload) else payload


def decode_batch(payload: bytes, max_bytes: int = 16 * 1024 * 1024) -> dict[str, Any]:
    """Parse and check a batch (plain or zlib); ValueError names what is wrong."""
    if payload[:1] != b"{":
        try:
            decomp = zlib.decompressobj()
            payload = decomp.decompress(payload, max_bytes)
            if decomp.unconsumed_tail:
                raise ValueError(f"larger than {max_bytes} bytes once decompressed")
        except zlib.error as exc:
            raise ValueError(f"neither JSON nor zlib: {exc}") from exc
    try:
        batch = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(batch, dict):
        raise ValueError("expected a JSON object")
    if batch.get("v") != VERSION:
        raise ValueError(f"unknown version {batch.get('v')!r}, expected {VERSION}")
    for field, kind in (("gateway", str), ("kind", str), ("records", list)):
        if not isinstance(batch.get(field), kind):
            raise ValueError(f"field '{field}': expected {kind.__name__}")
    for i, rec in enumerate(batch["records"]):
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("seq"), int)
            or not isinstance(rec.get("device"), str)
            or not isinstance(rec.get("data"), dict)
        ):
            raise ValueError(
                f"records[{i}]: expected {{'seq': int, 'device': str, 'data': object}}"
            )
    return batch


def encode_ack(gateway: str, ranges: list[tuple[int, int]]) -> bytes:
    return orjson.dumps({"v": VERSION, "gateway": gateway, "acks": ranges})


def decode_ack(payload: bytes) -> list[tuple[int, int]]:
    """Inclusive seq ranges from an ack; ValueError names what is wrong."""
    try:
        ack = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if (
        not isinstance(ack, dict)
        or ack.get("v") != VERSION
        or not isinstance(ack.get("acks"), list)
    ):
        raise ValueError("expected {'v': 1, 'acks': [[lo, hi], ...]}")
    ranges: list[tuple[int, int]] = []
    for item in ack["acks"]:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, int) for x in item)
            or item[0] > item[1]
        ):
            raise ValueError(f"bad ack range {item!r}")
        ranges.append((item[0], item[1]))
    return ranges


def to_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Inclusive runs of consecutive numbers: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges
