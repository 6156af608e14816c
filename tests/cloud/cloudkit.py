"""Builders for uplink batches as gateways send them, and the test database handle,
shared by the cloud tests (conftest modules are not importable by name)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, make_url

from cloud import people
from cloud.parse import Batch, parse_message
from fogline.envelope import compress, encode_batch, uplink_topic

NOW = 1_700_000_000.0


def digest(window_end: float = NOW, machine: str = "m-01", **metrics: float) -> dict[str, Any]:
    return {
        "line": "line-1",
        "machine": machine,
        "window_start": window_end - 10,
        "window_end": window_end,
        "count": 10,
        "temperature_mean": 20.5,
        **metrics,
        "ts": window_end,
    }


def alert(
    alert_id: str,
    state: str,
    raised_at: float = NOW,
    cleared_at: float | None = None,
    severity: str = "critical",
    rule: str = "hot",
) -> dict[str, Any]:
    return {
        "line": "line-1",
        "machine": "m-01",
        "rule": rule,
        "severity": severity,
        "state": state,
        "alert_id": alert_id,
        "raised_at": raised_at,
        "cleared_at": cleared_at,
        "message": f"{rule} {state}",
        "values": {"temperature": 97.5},
        "ts": cleared_at if cleared_at is not None else raised_at,
    }


def payload(
    gateway: str,
    kind: str,
    records: list[tuple[int, str, dict[str, Any]]],
    compressed: bool = False,
) -> bytes:
    raw = encode_batch(gateway, kind, records, NOW)
    return compress(raw) if compressed else raw


def digests(gateway: str, seqs: range | list[int], device: str = "line-1/m-01") -> bytes:
    return payload(gateway, "digest", [(s, device, digest(NOW + s)) for s in seqs])


def batch(gateway: str, kind: str, records: list[tuple[int, str, dict[str, Any]]]) -> Batch:
    """A parsed batch, as the store receives it."""
    return parse_message(uplink_topic(gateway, kind), payload(gateway, kind, records))


@dataclass
class Database:
    """Where a test's store lives: a URL plus connect arguments (the schema, for PostgreSQL)."""

    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return make_url(self.url).get_backend_name()


def api_token(engine: Engine, role: str = "admin", user: str | None = None) -> str:
    """A bearer token of a user with `role` (made on first use), as `fogline cloud token add`
    would print it."""
    name = user or f"test-{role}"
    if name not in {n for n, _, _ in people.list_users(engine)}:
        people.add_user(engine, name, role, None, NOW)
    return people.add_token(engine, name, "tests", NOW)[1]


def bearer(engine: Engine, role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token(engine, role)}"}


def apply_patch(old: str, event: bytes) -> str:
    """What console.js does with a `patch` event."""
    head, _, data = event.partition(b"\ndata: ")
    assert head == b"event: patch"
    lines = old.split("\n")
    out: list[str] = []
    for op in json.loads(data):
        out.extend([op] if isinstance(op, str) else lines[op[0] : op[1]])
    return "\n".join(out)


def console(engine: Engine, port: int, name: str, role: str, now: float) -> tuple[Any, str]:
    """An HTTP client signed in to the console as a new user, and its CSRF token."""
    import httpx  # noqa: PLC0415 - only the console tests need it

    user = people.add_user(engine, name, role, None, now)
    cookie, csrf = people.open_session(engine, user, now)
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
    client.cookies.set("fogline_session", cookie)
    return client, csrf
