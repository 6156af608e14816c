"""Loss detection: which seqs of a gateway never arrived, and which of those it evicted.

Seqs are per gateway, start at 1 and increase by one across all kinds, so whatever is
missing from 1..max_seq in the `received` ledger was either dropped unsent by the
gateway's outbox, evicted when full or expired (it says so in its health records:
`outbox.evicted_ranges`, accumulated here across records), or lost on the way. The gaps
come from SQL (a LAG window over the ledger, the same on SQLite and PostgreSQL); splitting
them against the few evicted ranges is plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, select

from cloud.models import EvictedRange, Received

Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Gap:
    lo: int
    hi: int
    explained: str | None  # "evicted", or None for loss nobody accounted for


@dataclass(frozen=True, slots=True)
class LossReport:
    received: int
    max_seq: int
    evicted: int  # seqs the gateway reported evicting
    missing: int  # seqs in 1..max_seq not received
    unexplained: int  # missing and not reported evicted
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


def label_gaps(gaps: list[Range], evicted: list[Range]) -> list[Gap]:
    """Split each gap into the parts covered by `evicted` (sorted, disjoint) and the rest."""
    out: list[Gap] = []
    for lo, hi in gaps:
        cursor = lo
        for e_lo, e_hi in evicted:
            if e_hi < cursor:
                continue
            if e_lo > hi:
                break
            if e_lo > cursor:
                out.append(Gap(cursor, e_lo - 1, None))
            out.append(Gap(max(cursor, e_lo), min(hi, e_hi), "evicted"))
            cursor = min(hi, e_hi) + 1
            if cursor > hi:
                break
        if cursor <= hi:
            out.append(Gap(cursor, hi, None))
    return out


def loss_report(
    conn: Connection, gateway: str, received: int, max_seq: int, limit: int = 1000
) -> LossReport:
    """Gaps of one gateway, labelled; `received` and `max_seq` come from its row."""
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
    evicted_received = conn.execute(
        select(func.count())
        .select_from(Received)
        .join(
            EvictedRange,
            and_(
                EvictedRange.gateway_id == Received.gateway_id,
                Received.seq.between(EvictedRange.lo, EvictedRange.hi),
            ),
        )
        .where(Received.gateway_id == gateway)
    ).scalar_one()
    evicted_below_max = sum(max(0, min(hi, max_seq) - lo + 1) for lo, hi in evicted)
    missing = max_seq - received
    return LossReport(
        received=received,
        max_seq=max_seq,
        evicted=sum(hi - lo + 1 for lo, hi in evicted),
        missing=missing,
        unexplained=missing - (evicted_below_max - int(evicted_received)),
        gaps=label_gaps(gaps[:limit], evicted),
        truncated=len(gaps) > limit,
    )
