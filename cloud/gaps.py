"""Loss detection: which seqs of a gateway never arrived, which it evicted, which it still holds.

Seqs are per gateway, start at 1 and increase by one across all kinds, so whatever is
missing from 1..max_seq in the `received` ledger was either dropped unsent by the
gateway's outbox, evicted when full or expired (it says so in its health records:
`outbox.evicted_ranges`, accumulated here across records), is still on its way, or was
lost. The gaps come from SQL (a LAG window over the ledger, the same on SQLite and
PostgreSQL); splitting them against the few evicted ranges is plain Python.

Order is kept per kind only, so a later seq of another kind (an alert, sent ahead of a
digest backlog) often lands before earlier ones: a gap is normal while records travel.
The label of each missing seq, first match wins:

1. `evicted`: inside a range the gateway reported evicting or expiring. The ranges are
   merged here across health records: a gateway reports each range until the cloud has
   acknowledged a health record carrying it, then forgets it, and past 128 ranges it
   coarsens them (`outbox.evicted_ranges_filled` seqs covered that it never dropped; only
   missing seqs are labelled, so that hides nothing it still delivers).
2. `in_flight`: at or above the *in-flight horizon*, the lowest seq the gateway may
   still be holding. Not counted as `unexplained`.

   * A gateway whose latest health record has `outbox.pending_from` (the lowest seq its
     outbox still held) gives it exactly: everything below was acknowledged by the
     cloud, so already stored when that record was written, or evicted and reported in
     the same record. A gap below it never fills in later; one above it may.
   * Older gateways do not say, so a grace period stands in: the horizon is just above
     the highest seq stored at least `grace` seconds ago (default 120 s). A gap that old
     has waited `grace` seconds since later records arrived; a backlog that drains more
     slowly than that can still fill it in, which only `pending_from` rules out.
   * Before the first health record nothing is known of the gateway (health is the
     lowest class, so it may well come last): every gap is in flight.
3. `null`: lost on the way, nobody accounted for it (`unexplained`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, and_, case, func, select

from cloud.models import EvictedRange, Received

Range = tuple[int, int]
Label = Literal["evicted", "in_flight"]
DEFAULT_GRACE = 120.0  # seconds; for gateways whose health has no `pending_from`


@dataclass(frozen=True, slots=True)
class Gap:
    lo: int
    hi: int
    explained: Label | None  # None: lost, nobody accounted for it


@dataclass(frozen=True, slots=True)
class LossReport:
    received: int
    max_seq: int
    evicted: int  # seqs the gateway reported evicting
    missing: int  # seqs in 1..max_seq not received
    in_flight: int  # missing, not evicted, at or above the horizon
    unexplained: int  # missing, not evicted, below the horizon
    in_flight_from: int  # the horizon (max_seq + 1: nothing is in flight)
    gaps: list[Gap]
    truncated: bool  # more gaps than the limit


def find_gaps(conn: Connection, gateway: str, limit: int) -> list[Range]:
    """The first `limit` runs of seqs missing below the highest one received."""
    prev = func.lag(Received.seq, 1, 0).over(order_by=Received.seq).label("prev")
    seqs = select(Received.seq, prev).where(Received.gateway_id == gateway).subquery()
    query = (
        select(seqs.c.prev + 1, seqs.c.seq - 1)
        .where(seqs.c.seq - seqs.c.prev > 1)
        .order_by(seqs.c.seq)
        .limit(limit)
    )
    return [(int(lo), int(hi)) for lo, hi in conn.execute(query)]


def in_flight_from(
    conn: Connection,
    gateway: str,
    health_seq: int | None,
    pending_from: int | None,
    now: float,
    grace: float,
) -> int:
    """The horizon: `pending_from` when the latest health record reports it; 1 (all in
    flight) before any health record, as nothing is known of the gateway yet; else above
    what was stored `grace` seconds ago (see the module docstring)."""
    if pending_from is not None:
        return pending_from
    if health_seq is None:
        return 1
    settled = conn.execute(
        select(func.max(Received.seq)).where(
            Received.gateway_id == gateway, Received.received_at <= now - grace
        )
    ).scalar_one()
    return int(settled or 0) + 1


def label_gaps(gaps: list[Range], evicted: list[Range], horizon: int | None = None) -> list[Gap]:
    """Split each gap into the parts covered by `evicted` (sorted, disjoint), the parts at
    or above `horizon` (in flight) and the rest (lost)."""
    out: list[Gap] = []

    def rest(lo: int, hi: int) -> None:
        """A part not evicted: lost below the horizon, in flight from it."""
        if horizon is None or hi < horizon:
            out.append(Gap(lo, hi, None))
        elif lo >= horizon:
            out.append(Gap(lo, hi, "in_flight"))
        else:
            out.extend((Gap(lo, horizon - 1, None), Gap(horizon, hi, "in_flight")))

    for lo, hi in gaps:
        cursor = lo
        for e_lo, e_hi in evicted:
            if e_hi < cursor:
                continue
            if e_lo > hi:
                break
            if e_lo > cursor:
                rest(cursor, e_lo - 1)
            out.append(Gap(max(cursor, e_lo), min(hi, e_hi), "evicted"))
            cursor = min(hi, e_hi) + 1
            if cursor > hi:
                break
        if cursor <= hi:
            rest(cursor, hi)
    return out


def _overlap(ranges: list[Range], lo: int, hi: int) -> int:
    """Seqs of `ranges` (disjoint) inside [lo, hi]."""
    return sum(max(0, min(r_hi, hi) - max(r_lo, lo) + 1) for r_lo, r_hi in ranges)


def loss_report(
    conn: Connection,
    gateway: str,
    received: int,
    max_seq: int,
    limit: int = 1000,
    horizon: int | None = None,
) -> LossReport:
    """Gaps of one gateway, labelled; `received` and `max_seq` come from its row.

    `horizon` is `in_flight_from(...)`; None calls every gap below `max_seq` settled.
    """
    top = max_seq + 1 if horizon is None else max(1, min(horizon, max_seq + 1))
    evicted = [
        (int(lo), int(hi))
        for lo, hi in conn.execute(
            select(EvictedRange.lo, EvictedRange.hi)
            .where(EvictedRange.gateway_id == gateway)
            .order_by(EvictedRange.lo)
        )
    ]
    gaps = find_gaps(conn, gateway, limit + 1)
    # Reported evicted yet received: sent before the eviction, its ack lost on the way.
    above = case((Received.seq >= top, 1), else_=0)
    evicted_received, evicted_received_above = conn.execute(
        select(func.count(), func.coalesce(func.sum(above), 0))
        .select_from(Received)
        .join(
            EvictedRange,
            and_(
                EvictedRange.gateway_id == Received.gateway_id,
                Received.seq.between(EvictedRange.lo, EvictedRange.hi),
            ),
        )
        .where(Received.gateway_id == gateway)
    ).one()
    received_above = conn.execute(
        select(func.count()).where(Received.gateway_id == gateway, Received.seq >= top)
    ).scalar_one()
    missing = max_seq - received
    evicted_missing = _overlap(evicted, 1, max_seq) - int(evicted_received)
    in_flight = (
        (max_seq - top + 1)
        - int(received_above)
        - (_overlap(evicted, top, max_seq) - int(evicted_received_above))
    )
    return LossReport(
        received=received,
        max_seq=max_seq,
        evicted=sum(hi - lo + 1 for lo, hi in evicted),
        missing=missing,
        in_flight=in_flight,
        unexplained=missing - evicted_missing - in_flight,
        in_flight_from=top,
        gaps=label_gaps(gaps[:limit], evicted, top),
        truncated=len(gaps) > limit,
    )
