"""Reads for the API: filtered, keyset-paginated pages (records newest first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from cloud.gaps import loss_report
from cloud.models import Alert, Digest, Gateway
from cloud.pagination import decode_cursor, encode_cursor
from cloud.schemas import (
    AlertOut,
    AlertPage,
    DigestOut,
    DigestPage,
    GapOut,
    GatewayDetail,
    GatewayPage,
    GatewaySummary,
)


@dataclass(frozen=True, slots=True)
class Filters:
    """Filters common to record lists; the time range is [since, until)."""

    gateway: str | None = None
    device: str | None = None
    since: float | None = None
    until: float | None = None


def _summary(row: Gateway) -> dict[str, Any]:
    return {
        "gateway": row.id,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "received": row.received,
        "max_seq": row.max_seq,
        "version": row.version,
        "pipeline": row.pipeline,
        "edge_connected": row.edge_connected,
        "uplink_pending": row.uplink_pending,
        "outbox_depth": row.outbox_depth,
        "outbox_bytes": row.outbox_bytes,
        "outbox_evicted": row.evicted,
        "outbox_expired": row.expired,
        "health_ts": row.health_ts,
    }


def gateways(session: Session, limit: int, cursor: str | None) -> GatewayPage:
    query = select(Gateway).order_by(Gateway.id).limit(limit + 1)
    if cursor is not None:
        (after,) = decode_cursor(cursor, str)
        query = query.where(Gateway.id > after)
    rows = list(session.scalars(query))
    page = rows[:limit]
    return GatewayPage(
        items=[GatewaySummary(**_summary(r)) for r in page],
        next=encode_cursor(page[-1].id) if len(rows) > limit else None,
    )


def gateway(session: Session, gateway_id: str, gap_limit: int) -> GatewayDetail | None:
    row = session.get(Gateway, gateway_id)
    if row is None:
        return None
    loss = loss_report(session.connection(), gateway_id, row.received, row.max_seq, gap_limit)
    return GatewayDetail(
        **_summary(row),
        evicted=loss.evicted,
        missing=loss.missing,
        unexplained=loss.unexplained,
        gaps=[
            GapOut.model_validate({"from": g.lo, "to": g.hi, "explained": g.explained})
            for g in loss.gaps
        ],
        gaps_truncated=loss.truncated,
        health=row.health,
    )


def _newest_first(
    model: type[Digest | Alert],
    at: InstrumentedAttribute[float],
    filters: Filters,
    limit: int,
    cursor: str | None,
) -> Select[Any]:
    """Rows of a gateway/device/time range, newest first, one past the page (keyset on
    `(at, id)`, so a page never shifts when rows arrive)."""
    query = select(model).order_by(at.desc(), model.id.desc()).limit(limit + 1)
    if filters.gateway is not None:
        query = query.where(model.gateway_id == filters.gateway)
    if filters.device is not None:
        query = query.where(model.device == filters.device)
    if filters.since is not None:
        query = query.where(at >= filters.since)
    if filters.until is not None:
        query = query.where(at < filters.until)
    if cursor is not None:
        query = query.where(tuple_(at, model.id) < tuple_(*decode_cursor(cursor, float, int)))
    return query


def digests(session: Session, filters: Filters, limit: int, cursor: str | None) -> DigestPage:
    query = _newest_first(Digest, Digest.window_end, filters, limit, cursor)
    rows = list(session.scalars(query))
    page = rows[:limit]
    return DigestPage(
        items=[
            DigestOut(
                gateway=r.gateway_id,
                seq=r.seq,
                device=r.device,
                window_start=r.window_start,
                window_end=r.window_end,
                ts=r.ts,
                metrics=r.metrics,
            )
            for r in page
        ],
        next=encode_cursor(page[-1].window_end, page[-1].id) if len(rows) > limit else None,
    )


def alerts(
    session: Session,
    filters: Filters,
    state: str | None,
    severity: str | None,
    limit: int,
    cursor: str | None,
) -> AlertPage:
    query = _newest_first(Alert, Alert.raised_at, filters, limit, cursor)
    if state is not None:
        query = query.where(Alert.state == state)
    if severity is not None:
        query = query.where(Alert.severity == severity)
    rows = list(session.scalars(query))
    page = rows[:limit]
    return AlertPage(
        items=[
            AlertOut(
                gateway=r.gateway_id,
                # Every episode has at least one of the two.
                seq=r.raised_seq if r.raised_seq is not None else (r.cleared_seq or 0),
                alert_id=r.alert_id,
                device=r.device,
                rule=r.rule,
                severity=r.severity,  # checked at ingest
                state=r.state,  # written by cloud.alerts only
                raised_at=r.raised_at,
                cleared_at=r.cleared_at,
                acknowledged_at=r.acknowledged_at,
                message=r.message,
                raised_seq=r.raised_seq,
                cleared_seq=r.cleared_seq,
                payload=r.payload,
            )
            for r in page
        ],
        next=encode_cursor(page[-1].raised_at, page[-1].id) if len(rows) > limit else None,
    )
