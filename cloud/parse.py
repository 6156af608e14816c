"""From an MQTT message to a checked batch, or a rejection with a reason.

`fogline.envelope.decode_batch` checks the envelope; this module adds what the store
needs of each kind (a digest's window bounds, an alert's episode id and state, column
lengths), so that one bad record is refused here, with its index in the message, and
never fails a whole drain's transaction later.

A bad record is refused alone: it becomes a dead letter (`Batch.dead`: an `event` record
`{"event": "dead_letter", "kind", "reason", "data"}` under its own seq, so it is stored,
acknowledged and visible), and the rest of its batch is stored. Rejecting the whole batch
made the gateway resend it every 2 s forever, and the alerts batched with one reading on a
300-character topic segment never arrived. A record whose seq cannot be a ledger key is
dropped (counted): it can be neither stored nor acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeGuard

from cloud.models import MAX_ALERT_ID, MAX_DEVICE, MAX_GATEWAY, MAX_RULE, SEVERITIES
from fogline.envelope import KINDS, Entry, decode_batch

DEFAULT_MAX_PAYLOAD = 4 * 1024 * 1024
MAX_SEQ = 2**63 - 1  # a BIGINT; JSON integers go up to 2**64 - 1
REASONS = ("oversized", "corrupt", "version", "schema", "topic", "store")
"""Why a message is rejected: too big, not JSON/zlib, unknown `v`, bad fields, bad topic,
or refused by the database (a value it cannot hold; see `cloud.ingest`)."""


class RejectError(ValueError):
    """A message the cloud will not store (nor acknowledge)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Batch:
    """One message's records, all of one kind from one gateway."""

    gateway: str
    kind: str
    entries: list[Entry]
    dead: list[Entry] = field(default_factory=list)
    """Refused records as `dead_letter` events, to be stored under their own seqs."""
    dropped: int = 0
    """Records whose seq is not a valid ledger key: counted, neither stored nor acked."""
    head: tuple[int, bytes] | None = None
    """A signed batch's chain head (seq and hash, `cloud.trust`), once its link agrees
    with the heads held: stored in the transaction that stores the records."""

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _, _ in self.entries]

    def dead_letters(self) -> Batch | None:
        """The dead letters as an `event` batch of the same gateway, or None."""
        return Batch(self.gateway, "event", self.dead) if self.dead else None


def dead_letter(kind: str, index: int, device: str, data: Any, problem: str) -> dict[str, Any]:
    """The event stored in place of a refused record: what it was, and why not."""
    letter: dict[str, Any] = {
        "event": "dead_letter",
        "kind": kind,
        "reason": f"records[{index}]: {problem}",
        "device": device[:MAX_DEVICE],
        "data": data,
    }
    ts = data.get("ts") if isinstance(data, dict) else None
    if is_number(ts):
        letter["ts"] = ts
    return letter


def parse_message(topic: str, payload: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD) -> Batch:
    """Check topic, envelope and every record; `RejectError` says which and why."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "fogline" or parts[2] != "up":
        raise RejectError("topic", f"expected fogline/<gateway>/up/<kind>, got {topic!r}")
    gateway, kind = parts[1], parts[3]
    if kind not in KINDS:
        raise RejectError("topic", f"unknown kind {kind!r} in {topic!r}, expected one of {KINDS}")
    if not gateway or len(gateway) > MAX_GATEWAY:
        raise RejectError("topic", f"gateway id must be 1 to {MAX_GATEWAY} characters")
    if len(payload) > max_bytes:
        raise RejectError("oversized", f"{len(payload)} bytes, limit {max_bytes}")
    try:
        batch = decode_batch(payload, max_bytes)
    except ValueError as exc:
        raise RejectError(_reason(str(exc)), str(exc)) from exc
    if batch["gateway"] != gateway or batch["kind"] != kind:
        raise RejectError(
            "topic",
            f"batch of {batch['gateway']!r}/{batch['kind']!r} published on {topic!r}",
        )
    check = _CHECKS.get(kind)
    entries: list[Entry] = []
    dead: list[Entry] = []
    dropped = 0
    for i, rec in enumerate(batch["records"]):
        seq, device, data = rec["seq"], rec["device"], rec["data"]
        if not 1 <= seq <= MAX_SEQ:
            dropped += 1
            continue
        problem = _device(device) or (check(data) if check else None)
        if problem:
            dead.append((seq, device[:MAX_DEVICE], dead_letter(kind, i, device, data, problem)))
            continue
        entries.append((seq, device, data))
    return Batch(gateway, kind, entries, dead, dropped)


def _reason(message: str) -> str:
    """Map decode_batch's message to a reason (tests pin each one)."""
    if message.startswith("larger than"):
        return "oversized"
    if message.startswith(("neither JSON nor zlib", "not JSON")):
        return "corrupt"
    if message.startswith("unknown version"):
        return "version"
    return "schema"


def _device(device: str) -> str | None:
    if len(device) > MAX_DEVICE:
        return f"device longer than {MAX_DEVICE} characters"
    return None


def is_number(value: Any) -> TypeGuard[int | float]:
    # `type() is`, not isinstance: bool is an int, and this runs for every field checked.
    # JSON has no NaN or infinity, so whatever orjson decodes is finite.
    return type(value) is float or type(value) is int


def _number(data: dict[str, Any], field: str, optional: bool = False) -> str | None:
    value = data.get(field)
    if (optional and value is None) or is_number(value):
        return None
    return f"field '{field}': expected a number, got {value!r}"


def _digest(data: dict[str, Any]) -> str | None:
    return (
        _number(data, "window_start")
        or _number(data, "window_end")
        or _number(data, "ts", optional=True)
    )


def _text(data: dict[str, Any], field: str, limit: int) -> str | None:
    value = data.get(field)
    if isinstance(value, str) and 0 < len(value) <= limit:
        return None
    return f"field '{field}': expected a string of 1 to {limit} characters, got {value!r}"


def _alert(data: dict[str, Any]) -> str | None:
    if data.get("state") not in ("raised", "cleared"):
        return f"field 'state': expected 'raised' or 'cleared', got {data.get('state')!r}"
    if data.get("severity") not in SEVERITIES:
        return f"field 'severity': expected one of {SEVERITIES}, got {data.get('severity')!r}"
    if not isinstance(data.get("message"), str | None):
        return "field 'message': expected a string"
    return (
        _text(data, "alert_id", MAX_ALERT_ID)
        or _text(data, "rule", MAX_RULE)
        or _number(data, "raised_at")
        or _number(data, "cleared_at", optional=data["state"] == "raised")
        or _number(data, "ts", optional=True)
    )


# health, escalation and event data are free-form objects: nothing more to check.
_CHECKS = {"digest": _digest, "alert": _alert}
