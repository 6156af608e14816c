"""What a gateway's health record says about its uplink, read defensively.

A health record is untrusted input and its fields arrive over time (older gateways send
fewer), so every field here is optional: a value of the wrong type, out of range or too
long is read as unknown (None), never as an error that would refuse the record.

The fields read (all optional):

```
{"ts": 1700000000.0, "health_every": 30.0,
 "uplink": {"status": "degraded", "reasons": ["no ack for 45 s"], "connected": false,
            "last_ack_age_s": 45.2, "backlog_records": 328, "backlog_bytes": 41000,
            "oldest_age_s": 60.1},
 "outbox": {"depth": 328, "bytes": 41000, "pending_from": 85, "evicted_ranges": [...]},
 "alerts_raised": {"ids": ["hot/m-17/1700000000000"], "complete": true}}
```

`uplink.backlog_*` is what the gateway has not had acknowledged; a gateway without the
`uplink` object reports the same thing as `outbox.depth` and `outbox.bytes`, which serve
as the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cloud.parse import MAX_SEQ, is_number

MAX_HEALTH_EVERY = 86_400.0  # seconds; a longer period is a broken gateway, not a setting
MAX_REASONS = 16
MAX_REASON = 200  # characters of one reason
MAX_ALERTS_RAISED = 10_000  # ids in one health record; the gateway sends at most 500
UplinkStatus = Literal["ok", "degraded"]


def _object(data: Any, name: str) -> dict[str, Any]:
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    """A non-negative integer that fits a BIGINT (not a bool), or None."""
    return value if type(value) is int and 0 <= value <= MAX_SEQ else None


def _seconds(value: Any) -> float | None:
    """A non-negative number of seconds, or None."""
    return float(value) if is_number(value) and value >= 0 else None


def health_every(data: dict[str, Any]) -> float | None:
    """The gateway's health period in seconds, if it says and it is plausible."""
    value = data.get("health_every")
    return float(value) if is_number(value) and 0 < value <= MAX_HEALTH_EVERY else None


def pending_from(data: dict[str, Any], seq: int) -> int | None:
    """`outbox.pending_from`, at most the record's own `seq`.

    The gateway computes its health before numbering the record, so an honest value is at
    most `seq`; a larger one would call gaps lost that the gateway may still hold.
    """
    value = _object(data, "outbox").get("pending_from")
    if type(value) is not int or not 1 <= value <= MAX_SEQ:
        return None
    return min(value, seq)


def alerts_raised(data: dict[str, Any]) -> frozenset[str] | None:
    """The alert ids the gateway held raised, if its list is complete and well-formed.

    None (close nothing) for a gateway that does not say, a list it cut, or anything odd:
    closing an episode on a misread list would hide a standing alert.
    """
    held = _object(data, "alerts_raised")
    ids = held.get("ids")
    if held.get("complete") is not True or not isinstance(ids, list):
        return None
    if len(ids) > MAX_ALERTS_RAISED or not all(isinstance(i, str) for i in ids):
        return None
    return frozenset(ids)


@dataclass(frozen=True, slots=True)
class Backlog:
    """The uplink backlog and link state as of one health record (not as of now)."""

    records: int | None
    bytes: int | None
    oldest_age_s: float | None
    uplink_status: UplinkStatus | None
    reasons: list[str]
    connected: bool | None
    last_ack_age_s: float | None

    def describe(self) -> str:
        """`328 records, 41.0 kB, oldest 60 s` for alert messages; unknown parts left out."""
        parts = []
        if self.records is not None:
            parts.append(f"{self.records} records")
        if self.bytes is not None:
            parts.append(f"{self.bytes / 1000:.1f} kB")
        if self.oldest_age_s is not None:
            parts.append(f"oldest {self.oldest_age_s:.0f} s")
        return ", ".join(parts) or "unknown"


def backlog(data: dict[str, Any]) -> Backlog:
    """The `uplink` object of a health record, `outbox` depth and bytes as the fallback."""
    uplink = _object(data, "uplink")
    outbox = _object(data, "outbox")
    records = _count(uplink.get("backlog_records"))
    size = _count(uplink.get("backlog_bytes"))
    status = uplink.get("status")
    reasons = uplink.get("reasons")
    connected = uplink.get("connected")
    return Backlog(
        records=records if records is not None else _count(outbox.get("depth")),
        bytes=size if size is not None else _count(outbox.get("bytes")),
        oldest_age_s=_seconds(uplink.get("oldest_age_s")),
        uplink_status=status if status in ("ok", "degraded") else None,
        reasons=[r[:MAX_REASON] for r in reasons[:MAX_REASONS] if isinstance(r, str)]
        if isinstance(reasons, list)
        else [],
        connected=connected if isinstance(connected, bool) else None,
        last_ack_age_s=_seconds(uplink.get("last_ack_age_s")),
    )
