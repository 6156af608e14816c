"""The uplink wire contract: what a gateway sends on `fogline/<gateway-id>/up/<kind>`.

One MQTT message carries a batch of records of one kind:

    {"v": 1, "gateway": "gw1", "kind": "digest", "sent_at": 1700000000.0,
     "records": [{"seq": 41, "data": {...}}, {"seq": 42, "data": {...}}]}

`seq` is per gateway and increases across all kinds; the cloud stores each
`(gateway, seq)` once, whatever the transport repeats.
"""

from __future__ import annotations

from typing import Any

import orjson

VERSION = 1
KINDS = ("alert", "escalation", "digest", "event", "health")


def uplink_topic(gateway: str, kind: str) -> str:
    return f"fogline/{gateway}/up/{kind}"


def downlink_topic(gateway: str, kind: str) -> str:
    return f"fogline/{gateway}/down/{kind}"


def encode_batch(
    gateway: str, kind: str, records: list[tuple[int, dict[str, Any]]], sent_at: float
) -> bytes:
    return orjson.dumps(
        {
            "v": VERSION,
            "gateway": gateway,
            "kind": kind,
            "sent_at": sent_at,
            "records": [{"seq": seq, "data": data} for seq, data in records],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def decode_batch(payload: bytes) -> dict[str, Any]:
    """Parse and check a batch; ValueError names what is wrong."""
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
            or not isinstance(rec.get("data"), dict)
        ):
            raise ValueError(f"records[{i}]: expected {{'seq': int, 'data': object}}")
    return batch
