"""Reads for the API: filtered, keyset-paginated pages (records newest first)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, Numeric, Select, case, cast, func, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from cloud.gaps import in_flight_from, loss_report
from cloud.health import backlog, health_every
from cloud.models import (
    SEVERITIES,
    STATES,
    Activity,
    Alert,
    Digest,
    Escalation,
    Gateway,
    Health,
    ModelUpload,
    Silence,
)
from cloud.pagination import decode_cursor, encode_cursor
from cloud.parse import MAX_SEQ, is_number
from cloud.schemas import (
    ActivityOut,
    AlertCounts,
    AlertDetail,
    AlertOut,
    AlertPage,
    CloudDecision,
    DigestOut,
    DigestPage,
    EdgeDecision,
    EscalationOut,
    EscalationPage,
    GapOut,
    GatewayDetail,
    GatewayModels,
    GatewayPage,
    GatewaySummary,
    InferenceList,
    InferenceOut,
    InferenceStep,
    LastKnownBacklog,
    ModelUploadOut,
    SilenceList,
    SilenceOut,
)
from cloud.silence import RULE as SILENT_RULE


@dataclass(frozen=True, slots=True)
class Filters:
    """Filters common to record lists; the time range is [since, until)."""

    gateway: str | None = None
    device: str | None = None
    since: float | None = None
    until: float | None = None


def _last_known(row: Gateway, now: float) -> LastKnownBacklog | None:
    """The backlog from the latest health record, dated."""
    if row.health is None:
        return None
    known = backlog(row.health)
    as_of = row.health_ts
    return LastKnownBacklog(
        records=known.records,
        bytes=known.bytes,
        oldest_age_s=known.oldest_age_s,
        as_of=as_of,
        age_s=None if as_of is None else max(0.0, now - as_of),
        uplink_status=known.uplink_status,
        uplink_reasons=known.reasons,
        uplink_connected=known.connected,
        last_ack_age_s=known.last_ack_age_s,
    )


def growth(before: tuple[int, ...], now: tuple[int, ...]) -> tuple[int, ...]:
    """What cumulative counters grew by from one health record to the next. Counters count
    since the gateway started, so one that went down means a restart in between, and then
    everything counted since is growth (from zero)."""
    if any(n < b for b, n in zip(before, now, strict=True)):
        return now
    return tuple(n - b for b, n in zip(before, now, strict=True))


def _total(counts: Any) -> int | None:
    """The sum of a health record's per-source (or per-output) counter object."""
    if not isinstance(counts, dict):
        return None
    values = [_count(v) for v in counts.values()]
    return sum(v for v in values if v is not None)


@dataclass(frozen=True, slots=True)
class Rates:
    """Messages per second in (all sources) and out (all outputs), None when unknown."""

    rate_in: float | None = None
    rate_out: float | None = None


def _rates(
    before_ts: float | None, before: tuple[Any, Any], now_ts: float | None, data: dict[str, Any]
) -> Rates:
    """Rates from the growth of `messages_in` and `outputs` between two health records.

    After a restart (a counter went down, or `uptime_s` says the gateway started after the
    earlier record) the growth is what was counted since the start, over the uptime."""
    now = (_total(data.get("messages_in")), _total(data.get("outputs")))
    if before_ts is None or now_ts is None or now_ts <= before_ts:
        return Rates()
    span = now_ts - before_ts
    uptime = _float(data.get("uptime_s"))
    counts = [_total(before[0]), _total(before[1])]
    rates: list[float | None] = []
    for was, is_ in zip(counts, now, strict=True):
        if was is None or is_ is None:
            rates.append(None)
            continue
        grew = growth((was,), (is_,))[0]
        restarted = is_ < was or (uptime is not None and uptime < span - 1.0)
        if restarted and uptime is not None and 0 < uptime < span:
            grew, interval = is_, uptime
        else:
            interval = span
        rates.append(grew / interval)
    return Rates(rates[0], rates[1])


def rates(session: Session, rows: list[Gateway]) -> dict[str, Rates]:
    """Each gateway's rates between its latest health record (on its row) and the one
    before it by seq: one query, a lookup on `(gateway_id, seq)` per gateway."""
    known = [r for r in rows if r.health is not None and r.health_seq is not None]
    if not known:
        return {}
    previous = (
        select(Health.id)
        .where(Health.gateway_id == Gateway.id, Health.seq < Gateway.health_seq)
        .order_by(Health.seq.desc())
        .limit(1)
        .correlate(Gateway)
        .scalar_subquery()
    )
    # The earlier record's id per gateway first, then those rows: with the subquery in the
    # join's condition PostgreSQL ran it once per pair of gateway and health record.
    pairs = (
        select(Gateway.id.label("gateway"), previous.label("previous"))
        .where(Gateway.id.in_([r.id for r in known]))
        .subquery()
    )
    found = session.execute(
        select(pairs.c.gateway, Health.ts, Health.data["messages_in"], Health.data["outputs"]).join(
            Health, Health.id == pairs.c.previous
        )
    ).all()
    before = {g: (ts, (m, o)) for g, ts, m, o in found}
    out = {}
    for r in known:
        if r.id in before and r.health is not None:
            ts, counts = before[r.id]
            out[r.id] = _rates(ts, counts, r.health_ts, r.health)
    return out


def _summary(row: Gateway, now: float, rate: Rates | None = None) -> dict[str, Any]:
    # Silent until heard again: the watch clears `silent_since` a check later.
    silent = row.silent_since is not None and row.last_seen <= row.silent_since
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
        "status": "silent" if silent else "online",
        "silent_since": row.silent_since if silent else None,
        "health_every": row.health_every,
        "last_known_backlog": _last_known(row, now),
        "rate_in": rate.rate_in if rate else None,
        "rate_out": rate.rate_out if rate else None,
    }


def gateways(
    session: Session, limit: int, cursor: str | None, now: float, with_rates: bool = True
) -> GatewayPage:
    """A page of gateways; `with_rates` False skips the rates (the silent banner and the
    models page read only ids and status)."""
    query = select(Gateway).order_by(Gateway.id).limit(limit + 1)
    if cursor is not None:
        (after,) = decode_cursor(cursor, str)
        query = query.where(Gateway.id > after)
    rows = list(session.scalars(query))
    page = rows[:limit]
    per = rates(session, page) if with_rates else {}
    return GatewayPage(
        items=[GatewaySummary(**_summary(r, now, per.get(r.id))) for r in page],
        next=encode_cursor(page[-1].id) if len(rows) > limit else None,
    )


def gateway(
    session: Session, gateway_id: str, gap_limit: int, now: float, gap_grace: float
) -> GatewayDetail | None:
    row = session.get(Gateway, gateway_id)
    if row is None:
        return None
    conn = session.connection()
    horizon = in_flight_from(conn, gateway_id, row.health_seq, row.pending_from, now, gap_grace)
    loss = loss_report(conn, gateway_id, row.received, row.max_seq, gap_limit, horizon)
    return GatewayDetail(
        **_summary(row, now, rates(session, [row]).get(gateway_id)),
        evicted=loss.evicted,
        missing=loss.missing,
        in_flight=loss.in_flight,
        unexplained=loss.unexplained,
        in_flight_from=loss.in_flight_from,
        pending_from=row.pending_from,
        gaps=[
            GapOut.model_validate({"from": g.lo, "to": g.hi, "explained": g.explained})
            for g in loss.gaps
        ],
        gaps_truncated=loss.truncated,
        health=row.health,
    )


def _newest_first(
    model: type[Digest | Escalation],
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


FIELD_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def chart_aggregate(field: str) -> str:
    """How a bucket of digests shows one field: its peak for a `_max`, its trough for a
    `_min`, the mean of anything else (a mean of means, each window weighing the same)."""
    return "max" if field.endswith("_max") else "min" if field.endswith("_min") else "avg"


def _field(field: str, dialect: str) -> Any:
    """A digest's field as read row by row: on SQLite already the number (null for anything
    else), on PostgreSQL the JSON value, which `_number` checks once per row of the
    grouping (reading it once and checking outside costs ~17 % less than twice inside)."""
    if dialect == "sqlite":
        path = f'$."{field}"'
        return case(
            (
                func.json_type(Digest.metrics, path).in_(("integer", "real")),
                func.json_extract(Digest.metrics, path),
            )
        )
    return Digest.metrics[field]


def _number(value: Any, dialect: str) -> Any:
    """`_field`'s value as a number, null where the device sent something else (a string
    in one digest must not fail the cast for the whole chart). On PostgreSQL a `numeric`:
    a JSON number is one already, while a cast to `float8` goes through text, which made
    the week's chart ~30 % slower; only the 2,000 results become floats."""
    if dialect == "sqlite":
        return value
    return case((func.jsonb_typeof(value) == "number", cast(value, Numeric)))


@dataclass(frozen=True, slots=True)
class Chart:
    """A device's digests over [lo, hi) in at most `points` buckets of `width` seconds."""

    x: list[float]
    series: dict[str, list[float | None]]
    digests: int
    width: float


def digest_chart(
    session: Session,
    gateway: str,
    device: str,
    lo: float,
    hi: float,
    fields: list[str],
    points: int,
) -> Chart:
    """Downsampled in the database: `window_end` cut into `points` equal buckets over the
    whole span, each bucket one point (its mean time; per field `chart_aggregate`), so a
    week of 10 s windows (60,480 digests) is drawn whole in ~2,000 points and only those
    cross the wire. Fields must match `FIELD_NAME` (they come from devices)."""
    dialect = session.get_bind().dialect.name
    fields = [f for f in fields if FIELD_NAME.fullmatch(f)]
    width = max((hi - lo) / points, 0.001)
    at = (Digest.window_end - lo) / width
    # The fields are read into narrow rows first, and grouping sorts (or hashes) those, not
    # the rows' JSON: sorted whole, a week's 60,480 rows spilled 12 MB to disk (130-320 ms).
    # `OFFSET 0` keeps PostgreSQL from folding the subquery back into the grouping.
    values = (
        select(
            (cast(at, Integer) if dialect == "sqlite" else func.floor(at)).label("bucket"),
            Digest.window_end,
            *(_field(f, dialect).label(f"v{i}") for i, f in enumerate(fields)),
        )
        .where(
            Digest.gateway_id == gateway,
            Digest.device == device,
            Digest.window_end >= lo,
            Digest.window_end < hi,
        )
        .offset(0)
        .subquery()
    )
    aggregates: dict[str, Any] = {"max": func.max, "min": func.min, "avg": func.avg}
    query = (
        select(
            values.c.bucket,
            func.avg(values.c.window_end),
            func.count(),
            *(
                aggregates[chart_aggregate(f)](_number(values.c[f"v{i}"], dialect))
                for i, f in enumerate(fields)
            ),
        )
        .group_by(values.c.bucket)
        .order_by(values.c.bucket)
    )
    rows = session.execute(query).all()
    return Chart(
        x=[float(r[1]) for r in rows],
        series={
            f: [None if r[3 + i] is None else float(r[3 + i]) for r in rows]
            for i, f in enumerate(fields)
        },
        digests=sum(int(r[2]) for r in rows),
        width=width,
    )


@dataclass(frozen=True, slots=True)
class AlertFilters:
    """What narrows the alert list, beyond `Filters`; `silenced` None shows both."""

    state: str | None = None
    severity: str | None = None
    rule: str | None = None
    silenced: bool | None = None


def _alert_where(query: Any, filters: Filters, more: AlertFilters) -> Any:
    """`query` (a Select of any columns) narrowed by the filters."""
    if filters.gateway is not None:
        query = query.where(Alert.gateway_id == filters.gateway)
    if filters.device is not None:
        query = query.where(Alert.device == filters.device)
    if filters.since is not None:
        query = query.where(Alert.raised_at >= filters.since)
    if filters.until is not None:
        query = query.where(Alert.raised_at < filters.until)
    if more.state == "active":  # the console's default: everything not yet resolved
        query = query.where(Alert.state != "resolved")
    elif more.state is not None:
        query = query.where(Alert.state == more.state)
    if more.severity is not None:
        query = query.where(Alert.severity == more.severity)
    if more.rule is not None:
        query = query.where(Alert.rule == more.rule)
    if more.silenced is not None:
        query = query.where(
            Alert.silence_id.is_not(None) if more.silenced else Alert.silence_id.is_(None)
        )
    return query


def alert_out(r: Alert) -> AlertOut:
    return AlertOut(
        id=r.id,
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
        acknowledged_by=r.acknowledged_by,
        resolved_at=r.resolved_at,
        resolved_by=r.resolved_by,
        assignee=r.assignee,
        false_alarm=r.false_alarm,
        silence=r.silence_id,
        closed_by=r.closed_by,
        close_reason=r.close_reason,
    )


def alerts(
    session: Session,
    filters: Filters,
    more: AlertFilters,
    limit: int,
    cursor: str | None,
) -> AlertPage:
    query = select(Alert).order_by(Alert.raised_at.desc(), Alert.id.desc()).limit(limit + 1)
    query = _alert_where(query, filters, more)
    if cursor is not None:
        key = decode_cursor(cursor, float, int)
        query = query.where(tuple_(Alert.raised_at, Alert.id) < tuple_(*key))
    rows = list(session.scalars(query))
    page = rows[:limit]
    return AlertPage(
        items=[alert_out(r) for r in page],
        next=encode_cursor(page[-1].raised_at, page[-1].id) if len(rows) > limit else None,
    )


def alert_counts(session: Session, filters: Filters, more: AlertFilters) -> AlertCounts:
    """Per state (every other filter applied), per severity of what is not resolved, and
    how many are silenced: what the list's header shows."""
    per_state = _alert_where(
        select(Alert.state, func.count()).group_by(Alert.state),
        filters,
        replace(more, state=None),
    )
    per_severity = _alert_where(
        select(Alert.severity, func.count())
        .where(Alert.state != "resolved")
        .group_by(Alert.severity),
        filters,
        replace(more, state=None, severity=None),
    )
    silenced = _alert_where(
        select(func.count()).select_from(Alert).where(Alert.silence_id.is_not(None)),
        filters,
        replace(more, silenced=None),
    )
    return AlertCounts(
        state=dict.fromkeys(STATES, 0) | {s: int(n) for s, n in session.execute(per_state)},
        severity=dict.fromkeys(SEVERITIES, 0)
        | {s: int(n) for s, n in session.execute(per_severity)},
        silenced=int(session.execute(silenced).scalar_one()),
    )


def activity_out(r: Activity) -> ActivityOut:
    return ActivityOut(
        id=r.id, at=r.at, actor=r.actor, action=r.action, alert=r.alert, detail=r.detail
    )


def activity(session: Session, actions: tuple[str, ...], limit: int) -> list[ActivityOut]:
    """The newest rows of some actions, newest first: the audit of changes that concern no
    one alert (webhooks, model uploads)."""
    rows = session.scalars(
        select(Activity)
        .where(Activity.alert.is_(None), Activity.action.in_(actions))
        .order_by(Activity.id.desc())
        .limit(limit)
    )
    return [activity_out(r) for r in rows]


def alert_detail(session: Session, alert_id: int) -> AlertDetail | None:
    row = session.get(Alert, alert_id)
    if row is None:
        return None
    log = session.scalars(select(Activity).where(Activity.alert == alert_id).order_by(Activity.id))
    return AlertDetail(**alert_out(row).model_dump(), activity=[activity_out(a) for a in log])


OUTAGE = 30.0  # seconds of edge-to-cloud delay past which the alert page looks for a cause


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def outage_evidence(
    session: Session, gateway: str, raised_seq: int | None, raised_at: float, arrived: float
) -> str | None:
    """Why an alert reached the cloud late, if the records show an outage covering its
    raise; None when they do not (then the delay may as well be clock skew or a slow link).

    Evidence, in this order: a `gateway_silent` episode whose silence (from `silent_since`
    until cleared) covers the raise; a health record the gateway dated between the raise and
    the arrival that says its uplink was disconnected or degraded, or had a backlog older
    than `OUTAGE`; health records missing around the raise (the two that bracket it more
    than three health periods apart: they were evicted or never sent). Health records are
    found by seq next to the alert's own (two index lookups), not by time."""
    silences = session.scalars(
        select(Alert)
        .where(
            Alert.gateway_id == gateway,
            Alert.rule == SILENT_RULE,
            Alert.raised_at <= arrived,
            or_(Alert.cleared_at.is_(None), Alert.cleared_at >= raised_at),
        )
        .order_by(Alert.raised_at.desc())
        .limit(20)
    )
    for silent in silences:
        since = _float((silent.payload.get("raised") or {}).get("silent_since"))
        if since is not None and since <= raised_at:
            until = (
                "until now" if silent.cleared_at is None else f"until {_when(silent.cleared_at)}"
            )
            return (
                f"The cloud heard nothing from {gateway} from {_when(since)} {until} "
                f"(alert {silent.id}, gateway_silent), which covers this raise."
            )
    if raised_seq is None:
        return None
    before = session.execute(
        select(Health.ts, Health.data)
        .where(Health.gateway_id == gateway, Health.seq < raised_seq)
        .order_by(Health.seq.desc())
        .limit(1)
    ).first()
    after = session.execute(
        select(Health.ts, Health.data)
        .where(Health.gateway_id == gateway, Health.seq > raised_seq)
        .order_by(Health.seq)
        .limit(50)
    ).all()
    for ts, data in after:
        if ts is None or ts > arrived:
            break
        known = backlog(data)
        waiting = known.oldest_age_s is not None and known.oldest_age_s >= OUTAGE
        if known.connected is False or known.uplink_status == "degraded" or waiting:
            said = [
                "its uplink disconnected" if known.connected is False else None,
                f"uplink {known.uplink_status}: {', '.join(known.reasons)}"
                if known.uplink_status == "degraded" and known.reasons
                else None,
                f"{known.records} records waiting" if known.records is not None else None,
                f"the oldest {known.oldest_age_s:.0f} s old" if waiting else None,
            ]
            return (
                f"The gateway's health record of {_when(ts)} reports "
                + "; ".join(x for x in said if x)
                + " (its outbox keeps alerts until the cloud acknowledges them)."
            )
    if before is not None and after and before.ts is not None and after[0].ts is not None:
        every = health_every(before.data) or 30.0
        if before.ts <= raised_at <= after[0].ts and after[0].ts - before.ts > 3 * every:
            return (
                f"No health record of {gateway} arrived between {_when(before.ts)} and "
                f"{_when(after[0].ts)} (it sends one every {every:g} s): the ones between "
                "were evicted or never sent."
            )
    return None


def silences(session: Session, now: float, active_only: bool = False) -> SilenceList:
    covered = (
        select(func.count())
        .select_from(Alert)
        .where(Alert.silence_id == Silence.id)
        .scalar_subquery()
    )
    query = select(Silence, covered).order_by(Silence.id.desc()).limit(500)
    if active_only:
        query = query.where(Silence.until > now, Silence.ended_at.is_(None))
    return SilenceList(
        items=[
            SilenceOut(
                id=s.id,
                gateway=s.gateway_id,
                device=s.device,
                rule=s.rule,
                until=s.until,
                reason=s.reason,
                created_by=s.created_by,
                created_at=s.created_at,
                ended_at=s.ended_at,
                active=s.ended_at is None and s.until > now,
                covered=int(n),
            )
            for s, n in session.execute(query)
        ]
    )


# -- escalations and inference ---------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _float(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _count(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= MAX_SEQ else None


def _probabilities(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if is_number(v)}


def _escalation(r: Escalation) -> EscalationOut:
    data = r.data
    inputs = data.get("inputs")
    cloud = None
    if r.decided_at is not None:
        cloud = CloudDecision(
            label=r.cloud_label or "",
            confidence=r.cloud_confidence or 0.0,
            model_version=r.cloud_model_version or "",
            probabilities=r.cloud_probabilities or {},
            decided_at=r.decided_at,
        )
    return EscalationOut(
        gateway=r.gateway_id,
        seq=r.seq,
        device=r.device,
        at=r.at,
        ts=r.ts,
        model=r.model,
        edge=EdgeDecision(
            label=_str(data.get("label")),
            confidence=_float(data.get("confidence")),
            entropy=_float(data.get("entropy")),
            model_version=_str(data.get("model_version")),
            probabilities=_probabilities(data.get("probabilities")),
        ),
        cloud=cloud,
        agree=r.agree,
        reason=r.cloud_reason,
        inputs=inputs if isinstance(inputs, dict) else {},
        data=data,
    )


def escalations(
    session: Session,
    filters: Filters,
    model: str | None,
    agree: bool | None,
    limit: int,
    cursor: str | None,
) -> EscalationPage:
    query = _newest_first(Escalation, Escalation.at, filters, limit, cursor)
    if model is not None:
        query = query.where(Escalation.model == model)
    if agree is not None:
        query = query.where(Escalation.agree == agree)
    rows = list(session.scalars(query))
    page = rows[:limit]
    return EscalationPage(
        items=[_escalation(r) for r in page],
        next=encode_cursor(page[-1].at, page[-1].id) if len(rows) > limit else None,
    )


def inference_steps(health: dict[str, Any] | None) -> list[InferenceStep]:
    """The `inference` object of a health record, keeping only well-formed fields."""
    described = health.get("inference") if isinstance(health, dict) else None
    if not isinstance(described, dict):
        return []
    return [
        InferenceStep(
            step=str(step),
            name=_str(x.get("name")),
            version=_str(x.get("version")),
            sha256=_str(x.get("sha256")),
            threshold=_float(x.get("threshold")),
            edge=_count(x.get("edge")),
            budget=_count(x.get("budget")),
            escalated=_count(x.get("escalated")),
        )
        for step, x in sorted(described.items())
        if isinstance(x, dict)
    ]


def _local_exit_rate(steps: list[InferenceStep]) -> float | None:
    """(edge + budget) / all decisions, over the steps that report all three counts."""
    local = total = 0
    for s in steps:
        if s.edge is not None and s.budget is not None and s.escalated is not None:
            local += s.edge + s.budget
            total += s.edge + s.budget + s.escalated
    return local / total if total else None


def hour_of(at: Any, dialect: str) -> Any:
    """The epoch second that starts `at`'s hour, as SQL (SQLite may lack floor(), and its
    CAST truncates; PostgreSQL's CAST rounds)."""
    if dialect == "sqlite":
        return cast(at / 3600, Integer) * 3600
    return func.floor(at / 3600) * 3600


def local_exit_trend(session: Session, since: float) -> dict[float, float]:
    """Per hour from `since`: the share of model decisions taken at the edge (confident or
    over the escalation budget), from the counters of the gateways' health records.

    Counters are cumulative since the gateway started, so what a gateway decided between
    two of its records is the growth from one to the next, counted in the later one's hour;
    a counter that went down is a restart and counts from zero. Only the first and the last
    record of each gateway and hour are read (a subquery picks their ids), and of them only
    the `inference` object; the hour before `since` gives the first baseline."""
    hour = hour_of(Health.ts, session.get_bind().dialect.name)
    ends = (
        select(func.min(Health.id).label("first"), func.max(Health.id).label("last"))
        .where(Health.ts >= since - 3600)
        .group_by(Health.gateway_id, hour)
        .subquery()
    )
    rows = session.execute(
        select(Health.gateway_id, hour, Health.data["inference"])
        .where(or_(Health.id.in_(select(ends.c.first)), Health.id.in_(select(ends.c.last))))
        .order_by(Health.gateway_id, Health.id)
    ).all()
    local: dict[float, int] = {}
    total: dict[float, int] = {}
    previous: dict[tuple[str, str], tuple[int, int]] = {}
    for gateway, at, described in rows:
        for s in inference_steps({"inference": described}):
            if s.edge is None or s.budget is None or s.escalated is None:
                continue
            now = (s.edge + s.budget, s.edge + s.budget + s.escalated)
            before = previous.get((gateway, s.step))
            previous[(gateway, s.step)] = now
            if before is None or float(at) < since:
                continue
            grew = growth(before, now)
            local[float(at)] = local.get(float(at), 0) + grew[0]
            total[float(at)] = total.get(float(at), 0) + grew[1]
    return {h: local[h] / n for h, n in sorted(total.items()) if n}


def inference(session: Session, gateway: str | None) -> InferenceList:
    """Per gateway and model: escalations and the cloud's verdicts on them, and where the
    gateway's latest health says its decisions were taken."""
    counts = select(
        Escalation.gateway_id,
        Escalation.model,
        func.count(),
        func.count(Escalation.decided_at),
        func.coalesce(func.sum(case((Escalation.agree.is_(True), 1), else_=0)), 0),
    ).group_by(Escalation.gateway_id, Escalation.model)
    health = select(Gateway.id, Gateway.health, Gateway.health_ts).where(
        Gateway.health.is_not(None)
    )
    if gateway is not None:
        counts = counts.where(Escalation.gateway_id == gateway)
        health = health.where(Gateway.id == gateway)
    stats: dict[tuple[str, str | None], tuple[int, int, int]] = {
        (g, m): (int(n), int(decided), int(agreed))
        for g, m, n, decided, agreed in session.execute(counts)
    }
    described: dict[tuple[str, str | None], list[InferenceStep]] = {}
    health_ts: dict[str, float | None] = {}
    for g, data, ts in session.execute(health):
        health_ts[g] = ts
        for step in inference_steps(data):
            described.setdefault((g, step.name), []).append(step)
    items = []
    for key in sorted(stats.keys() | described.keys(), key=lambda k: (k[0], k[1] or "")):
        n, decided, agreed = stats.get(key, (0, 0, 0))
        steps = described.get(key, [])
        items.append(
            InferenceOut(
                gateway=key[0],
                model=key[1],
                escalations=n,
                decided=decided,
                undecided=n - decided,
                agreed=agreed,
                agreement_rate=agreed / decided if decided else None,
                steps=steps,
                local_exit_rate=_local_exit_rate(steps),
                health_ts=health_ts.get(key[0]),
            )
        )
    return InferenceList(items=items)


# -- models over the air ---------------------------------------------------------------------


def upload_out(row: ModelUpload, running: list[InferenceStep]) -> ModelUploadOut:
    """One upload; `current` if the step runs its bytes according to `running`."""
    return ModelUploadOut(
        id=row.id,
        gateway=row.gateway_id,
        step=row.step,
        name=row.name,
        version=row.version,
        serial=row.serial,
        sha256=row.sha256,
        size=row.size,
        chunks=row.chunks,
        uploaded_at=row.uploaded_at,
        status=row.status,  # written by cloud.model_updates only
        reason=row.reason,
        reported_at=row.reported_at,
        current=any(s.step == row.step and s.sha256 == row.sha256 for s in running),
    )


def gateway_models(session: Session, gateway_id: str, limit: int) -> GatewayModels | None:
    row = session.get(Gateway, gateway_id)
    if row is None:
        return None
    running = inference_steps(row.health)
    uploads = session.scalars(
        select(ModelUpload)
        .where(ModelUpload.gateway_id == gateway_id)
        .order_by(ModelUpload.id.desc())
        .limit(limit)
    )
    return GatewayModels(
        gateway=gateway_id,
        running=running,
        uploads=[upload_out(u, running) for u in uploads],
    )
