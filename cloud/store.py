"""Writing drains of batches: one transaction each, idempotent on `(gateway_id, seq)`.

The `received` ledger is the gate: a drain inserts every `(gateway, seq)` it holds with
`ON CONFLICT DO NOTHING ... RETURNING`, and only the seqs that come back as new are
written to their kind's table (which is unique on `(gateway_id, seq)` as well). A
retransmission therefore costs one ledger probe per record and changes nothing.

Several replicas may write at once (PostgreSQL). A drain inserts first, in `(gateway,
seq)` order, so two drains only wait for each other over the same record and never in a
cycle. Then it updates the row of every gateway it touched, in id order: that row lock
is the per-gateway lock which makes the read-modify-write of alert episodes and evicted
ranges safe, and it is held only from there to the commit. SQLite has one writer at a
time anyway (`BEGIN IMMEDIATE`, see `cloud.db`).

Escalations are decided by the cloud model as they are inserted (`cloud.escalations`),
and a cloud diagnosis other than the healthy class opens an alert episode like a
gateway's raise; `model_update` events move the model uploads they name
(`cloud.model_updates`).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, case, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase

from cloud.alerts import DIAGNOSIS_PREFIX, apply_event, mark_silenced, reconcile
from cloud.db import writing
from cloud.escalations import CloudModels, model_name
from cloud.health import alerts_raised, health_every, pending_from
from cloud.model_updates import apply_model_events
from cloud.models import (
    MAX_ALERT_ID,
    MAX_RULE,
    Activity,
    Alert,
    AlertEvent,
    ChainHead,
    Digest,
    Escalation,
    Event,
    EvictedRange,
    Gateway,
    Health,
    Received,
)
from cloud.parse import MAX_SEQ, Batch, is_number

Key = tuple[str, int]
"""(gateway, seq)"""
Row = tuple[str, int, str, dict[str, Any]]
"""(gateway, seq, device, data) of a record stored for the first time"""

_DIGEST_COLUMNS = frozenset({"window_start", "window_end", "ts"})
MAX_EVICTED_RANGES = 10_000  # per health record; more is a broken gateway, not data
ESCALATION_SEVERITY = "warning"


@dataclass
class WriteReport:
    """What one drain did, per kind: records newly stored and duplicates ignored."""

    stored: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)


def _insert(conn: Connection, model: type[DeclarativeBase]) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    return dialect.insert(model)


def _ts(data: dict[str, Any]) -> float | None:
    value = data.get("ts")
    return float(value) if is_number(value) else None


class Store:
    """Writes drains and expires digests; reads live in `cloud.queries`."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        models: CloudModels | None = None,
    ) -> None:
        self.engine = engine
        self._clock = clock
        self.models = models or CloudModels()

    def write(self, batches: Iterable[Batch]) -> WriteReport:
        """Store every record of `batches` once, in one transaction."""
        report = WriteReport()
        fresh: dict[Key, tuple[str, str, dict[str, Any]]] = {}
        heads: dict[Key, bytes] = {}
        for batch in batches:
            if batch.head is not None:
                heads.setdefault((batch.gateway, batch.head[0]), batch.head[1])
            for seq, device, data in batch.entries:
                key = (batch.gateway, seq)
                if key in fresh:
                    report.duplicates[batch.kind] += 1
                else:
                    fresh[key] = (batch.kind, device, data)
        if not fresh:
            if heads:
                with writing(self.engine) as conn:
                    self._insert_heads(conn, heads)
            return report
        now = self._clock()
        gateways = sorted({gateway for gateway, _ in fresh})
        with writing(self.engine) as conn:
            # Inserts first: they only ever wait for another drain inserting the same key.
            self._ensure_gateways(conn, gateways, now)
            new = self._claim(conn, fresh, now)
            for key, (kind, _, _) in fresh.items():
                (report.stored if key in new else report.duplicates)[kind] += 1
            rows: defaultdict[str, list[Row]] = defaultdict(list)
            for key in sorted(new):
                kind, device, data = fresh[key]
                rows[kind].append((key[0], key[1], device, data))
            self._insert_records(conn, rows)
            if heads:
                self._insert_heads(conn, heads)
            diagnoses = self._insert_escalations(conn, rows["escalation"], now)
            # Then the per-gateway part, held only until the commit that follows.
            self._lock_and_count(conn, gateways, new, now)
            if rows["alert"] or diagnoses:
                self._episodes(conn, sorted(rows["alert"] + diagnoses), now)
            if rows["health"]:
                self._apply_health(conn, rows["health"], now)
            if rows["event"]:
                apply_model_events(conn, rows["event"], now)
        return report

    @staticmethod
    def _insert_heads(conn: Connection, heads: dict[Key, bytes]) -> None:
        """The chain heads of the signed batches written (`cloud.trust`), in key order; a
        head already held stays (`check_chains` refused any batch that disagreed). In the
        records' transaction rather than one of its own, whose commit (an fsync with
        `synchronous=FULL`) made the chain check 4 ms of wall time per drain of 32
        batches here, and which kept heads of records the database then refused."""
        conn.execute(
            _insert(conn, ChainHead).on_conflict_do_nothing(),
            [{"gateway_id": g, "seq": s, "hash": h} for (g, s), h in sorted(heads.items())],
        )

    # -- the ledger and the gateway rows ----------------------------------------------------

    def _ensure_gateways(self, conn: Connection, gateways: list[str], now: float) -> None:
        """Create the rows of gateways never seen; takes no lock on existing ones."""
        conn.execute(
            _insert(conn, Gateway).on_conflict_do_nothing(),
            [
                {
                    "id": g,
                    "first_seen": now,
                    "last_seen": now,
                    "received": 0,
                    "max_seq": 0,
                    "evicted": {},
                    "expired": {},
                }
                for g in gateways
            ],
        )

    def _claim(
        self, conn: Connection, fresh: dict[Key, tuple[str, str, dict[str, Any]]], now: float
    ) -> set[Key]:
        """Insert into the ledger; the keys that come back are the ones not seen before."""
        stmt = (
            _insert(conn, Received)
            .on_conflict_do_nothing()
            .returning(Received.gateway_id, Received.seq)
        )
        rows = [
            {"gateway_id": g, "seq": s, "kind": fresh[g, s][0], "received_at": now}
            for g, s in sorted(fresh)  # one lock order for every replica
        ]
        return {(g, s) for g, s in conn.execute(stmt, rows)}

    def _lock_and_count(
        self, conn: Connection, gateways: list[str], new: set[Key], now: float
    ) -> None:
        """Update each gateway's row, in id order: the row lock it takes is the gateway lock.

        On PostgreSQL the foreign keys of the inserts above only take KEY SHARE locks,
        which this NO KEY UPDATE does not wait for; so replicas insert in parallel and
        queue only here, for the read-modify-write of episodes and evicted ranges.
        """
        seqs: defaultdict[str, list[int]] = defaultdict(list)
        for gateway, seq in new:
            seqs[gateway].append(seq)
        for gateway in gateways:
            top = max(seqs[gateway], default=0)
            values: dict[str, Any] = {
                "received": Gateway.received + len(seqs[gateway]),
                "max_seq": case((Gateway.max_seq < top, top), else_=Gateway.max_seq),
            }
            if seqs[gateway]:
                # Only new records say the gateway is alive: a replayed batch (genuine and
                # signed, from a hostile broker's copy) would otherwise hide a silent one.
                values["last_seen"] = case((Gateway.last_seen < now, now), else_=Gateway.last_seen)
            conn.execute(update(Gateway).where(Gateway.id == gateway).values(**values))

    # -- kinds ------------------------------------------------------------------------------

    def _insert_records(self, conn: Connection, rows: dict[str, list[Row]]) -> None:
        """Each new record into its kind's table."""
        if rows["digest"]:
            conn.execute(
                _insert(conn, Digest).on_conflict_do_nothing(),
                [
                    {
                        "gateway_id": g,
                        "seq": s,
                        "device": d,
                        "window_start": float(x["window_start"]),
                        "window_end": float(x["window_end"]),
                        "ts": _ts(x),
                        "metrics": {k: v for k, v in x.items() if k not in _DIGEST_COLUMNS},
                    }
                    for g, s, d, x in rows["digest"]
                ],
            )
        if rows["alert"]:
            conn.execute(
                _insert(conn, AlertEvent).on_conflict_do_nothing(),
                [
                    {
                        "gateway_id": g,
                        "seq": s,
                        "alert_id": x["alert_id"],
                        "device": d,
                        "state": x["state"],
                        "ts": _ts(x),
                        "data": x,
                    }
                    for g, s, d, x in rows["alert"]
                ],
            )
        if rows["event"]:
            conn.execute(
                _insert(conn, Event).on_conflict_do_nothing(),
                [
                    {"gateway_id": g, "seq": s, "device": d, "ts": _ts(x), "data": x}
                    for g, s, d, x in rows["event"]
                ],
            )
        if rows["health"]:
            conn.execute(
                _insert(conn, Health).on_conflict_do_nothing(),
                [
                    {"gateway_id": g, "seq": s, "ts": _ts(x), "data": x}
                    for g, s, _, x in rows["health"]
                ],
            )

    def _insert_escalations(self, conn: Connection, rows: list[Row], now: float) -> list[Row]:
        """Insert new escalations with the cloud's decision; the alert raises it calls for."""
        if not rows:
            return []
        decisions = self.models.decide([x for _, _, _, x in rows], now)
        conn.execute(
            _insert(conn, Escalation).on_conflict_do_nothing(),
            [
                {
                    "gateway_id": g,
                    "seq": s,
                    "device": d,
                    "ts": _ts(x),
                    "data": x,
                    "at": _at(x, now),
                    "model": model_name(x),
                    **decision,
                }
                for (g, s, d, x), decision in zip(rows, decisions, strict=True)
            ],
        )
        raises: list[Row] = []
        for (g, s, d, x), decision in zip(rows, decisions, strict=True):
            label = decision["cloud_label"]
            name = model_name(x)
            if label is None or name is None or label == self.models.healthy(name):
                continue
            raises.append((g, s, d, _diagnosis(name, s, d, x, decision, _at(x, now))))
        return raises

    def _episodes(self, conn: Connection, rows: list[Row], now: float) -> None:
        """Fold new alert events into their episodes (under the gateway locks), and log
        each arrival in `activity` (the timeline, the audit and the live feed read it)."""
        keys = sorted({(g, x["alert_id"]) for g, _, _, x in rows})
        columns = [c for c in Alert.__table__.columns if c.key != "id"]
        existing: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        for row in conn.execute(
            select(Alert.id, *columns).where(tuple_(Alert.gateway_id, Alert.alert_id).in_(keys))
        ).mappings():
            values = {c.key: row[c.key] for c in columns}
            existing[row["gateway_id"], row["alert_id"]] = (row["id"], values)
        episodes = {key: values for key, (_, values) in existing.items()}
        for g, s, d, x in rows:  # in seq order
            key = (g, x["alert_id"])
            episodes[key] = apply_event(episodes.get(key), g, s, d, x, now)
        ids = {key: row_id for key, (row_id, _) in existing.items()}
        if inserts := [episodes[k] for k in keys if k not in existing]:
            mark_silenced(conn, inserts, now)
            stmt = _insert(conn, Alert).returning(Alert.id, Alert.gateway_id, Alert.alert_id)
            for row_id, g, alert_id in conn.execute(stmt, inserts):
                ids[g, alert_id] = row_id
        for key, (row_id, _) in sorted(existing.items()):
            conn.execute(update(Alert).where(Alert.id == row_id).values(**episodes[key]))
        conn.execute(
            _insert(conn, Activity),
            [
                {
                    "at": now,
                    "actor": "cloud" if "escalation" in x else f"gateway {g}",
                    "action": x["state"],
                    "alert": ids[g, x["alert_id"]],
                    "detail": {
                        "seq": s,
                        "edge_at": x.get("raised_at" if x["state"] == "raised" else "cleared_at"),
                    },
                }
                for g, s, _, x in rows
            ],
        )

    def _apply_health(self, conn: Connection, rows: list[Row], now: float) -> None:
        """The latest health record onto the gateway's row; evicted ranges merged in; the
        open episodes it no longer lists closed (after this drain's alert events, which
        `write` folds in first)."""
        latest: dict[str, tuple[int, dict[str, Any]]] = {}
        reported: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
        for g, s, _, x in rows:
            if g not in latest or s > latest[g][0]:
                latest[g] = (s, x)
            reported[g].extend(_evicted_ranges(x))
        for g, (seq, data) in sorted(latest.items()):
            newest = conn.execute(
                update(Gateway)
                .where(Gateway.id == g, Gateway.health_seq.is_(None) | (Gateway.health_seq < seq))
                .values(**_health_columns(seq, data))
            ).rowcount
            if newest and (held := alerts_raised(data)) is not None:
                reconcile(conn, g, seq, held, _ts(data) or now, now)
        for g, ranges in sorted(reported.items()):
            if ranges:
                self._merge_evicted(conn, g, ranges)

    def _merge_evicted(self, conn: Connection, gateway: str, ranges: list[tuple[int, int]]) -> None:
        old = [
            (lo, hi)
            for lo, hi in conn.execute(
                select(EvictedRange.lo, EvictedRange.hi).where(EvictedRange.gateway_id == gateway)
            )
        ]
        merged = merge_ranges(old + ranges)
        if merged == sorted(old):
            return
        conn.execute(delete(EvictedRange).where(EvictedRange.gateway_id == gateway))
        conn.execute(
            _insert(conn, EvictedRange),
            [{"gateway_id": gateway, "lo": lo, "hi": hi} for lo, hi in merged],
        )

    # -- retention --------------------------------------------------------------------------

    def expire_digests(self, before: float, chunk: int = 5000) -> int:
        """Delete digests whose window ended before `before`, in short transactions."""
        deleted = 0
        while True:
            with writing(self.engine) as conn:
                ids = select(Digest.id).where(Digest.window_end < before).limit(chunk)
                n = conn.execute(
                    delete(Digest).where(Digest.id.in_(ids.scalar_subquery()))
                ).rowcount
            deleted += n
            if n < chunk:
                return deleted

    def count(self, model: type[DeclarativeBase]) -> int:
        """Rows in one table (for tests and the throughput script)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _at(data: dict[str, Any], now: float) -> float:
    """An escalation's time: its window's end, else its `ts`, else now."""
    for name in ("window_end", "ts"):
        value = data.get(name)
        if is_number(value):
            return float(value)
    return now


def _diagnosis(
    model: str, seq: int, device: str, data: dict[str, Any], decision: dict[str, Any], at: float
) -> dict[str, Any]:
    """The raise for a cloud diagnosis: one episode per (device, label), which later
    diagnoses of the same keep up to date (nothing clears it: no condition ends)."""
    label = decision["cloud_label"]
    alert_id = f"{DIAGNOSIS_PREFIX}{label}/{device}"
    if len(alert_id) > MAX_ALERT_ID:
        alert_id = f"{DIAGNOSIS_PREFIX}{label}/{hashlib.sha256(device.encode()).hexdigest()}"
    edge = data.get("label")
    told = f" (the edge said {edge})" if isinstance(edge, str) and edge != label else ""
    return {
        "alert_id": alert_id,
        "state": "raised",
        "rule": f"model:{label}"[:MAX_RULE],
        "severity": ESCALATION_SEVERITY,
        "raised_at": at,
        "message": f"{device or 'gateway'}: the cloud model {model} says {label}{told}",
        "escalation": {
            "seq": seq,
            "label": edge,
            "cloud_label": label,
            "cloud_confidence": decision["cloud_confidence"],
        },
    }


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent inclusive ranges covering the same seqs."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _evicted_ranges(data: dict[str, Any]) -> list[tuple[int, int]]:
    """The outbox's `evicted_ranges`, keeping only well-formed `[lo, hi]` pairs."""
    outbox = data.get("outbox")
    ranges = outbox.get("evicted_ranges") if isinstance(outbox, dict) else None
    if not isinstance(ranges, list):
        return []
    return [
        (item[0], item[1])
        for item in ranges[:MAX_EVICTED_RANGES]
        if isinstance(item, list)
        and len(item) == 2
        and all(type(x) is int for x in item)
        and 1 <= item[0] <= item[1] <= MAX_SEQ
    ]


def _int(value: Any) -> int | None:
    """A count for a BIGINT column, or None."""
    return value if type(value) is int and 0 <= value <= MAX_SEQ else None


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if _int(v) is not None}


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _health_columns(seq: int, data: dict[str, Any]) -> dict[str, Any]:
    """The gateway row's view of its latest health record (the outbox object is optional)."""
    outbox = data.get("outbox")
    outbox = outbox if isinstance(outbox, dict) else {}
    connected = data.get("edge_connected")
    return {
        "health_seq": seq,
        "health_ts": _ts(data),
        "health": data,
        "version": _text(data.get("version"), 64),
        "pipeline": _text(data.get("pipeline"), 256),
        "edge_connected": connected if isinstance(connected, bool) else None,
        "uplink_pending": _int(data.get("uplink_pending")),
        "outbox_depth": _int(outbox.get("depth")),
        "outbox_bytes": _int(outbox.get("bytes")),
        "evicted": _counts(outbox.get("evicted")),
        "expired": _counts(outbox.get("expired")),
        "health_every": health_every(data),
        "pending_from": pending_from(data, seq),
    }
