"""Silent gateways: a `gateway_silent` alert episode while nothing arrives from a gateway.

A partitioned link is silent, not broken: no RST, the gateway's records pile up in its
outbox, and the only thing that changes at the cloud is that `last_seen` stops moving.
So every `every` seconds each replica checks the gateways:

* **silent** when nothing has been stored from it for `silent_after` seconds: three of
  its health periods (`health_every` of its latest health record; 30 s, the gateway's
  default, when it never said), or the cloud's `--silent-after`. The gateway row gets
  `silent_since = last_seen` and an episode `cloud:gateway_silent/<silent_since>` is
  opened (rule `gateway_silent`, severity critical, device ""), whose message says
  since when and the last known backlog; an active silence on the rule marks it, as
  ingest marks a gateway's own episodes;
* **heard again** once `last_seen > silent_since`: the condition is gone at the source, so
  the episode is `cleared` (`cleared_at` = `last_seen`, the first time it was seen since,
  to within one check) as a gateway's clear would leave it: from `open` or
  `acknowledged`; one an operator already resolved stays `resolved`. Resolving stays an
  operator's word (`cloud.alerts`). `silent_since` is cleared.

Both transitions are written to `activity` (actor `cloud`, actions `raised` and `cleared`,
in the same transaction), so the alert's timeline, the live list and the webhooks see them
as they see a gateway's alerts.

Several replicas may run this on one PostgreSQL at once. Each transition is one short
transaction per gateway that first updates the gateway's row with the transition's own
condition in its WHERE clause: the row lock serializes replicas (and ingest, which takes
the same lock), the loser re-reads the row, finds the condition false and does nothing.
The alert id is derived from `silent_since`, so even two inserts of one episode collide
on `(gateway_id, alert_id)` and `ON CONFLICT DO NOTHING` keeps one. Locks follow ingest's
order: the gateway row, then its alerts.

A replica that just started may find every `last_seen` old because the cloud itself was
away (the broker holds what gateways sent meanwhile): silence is measured from the later
of `last_seen` and the replica's start, so a restart raises nothing until the gateways
had their full `silent_after` to be heard. The same holds while the replica's own
subscription is down (`hearing()` false): it cannot tell a silent gateway from its own
deafness, so it raises nothing and counts from when it hears again; other replicas, if
connected, still do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Float,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from cloud.alerts import mark_silenced
from cloud.db import writing
from cloud.health import backlog
from cloud.metrics import CloudMetrics
from cloud.models import Activity, Alert, Gateway

log = logging.getLogger("fogline.cloud.silence")

RULE = "gateway_silent"
SEVERITY = "critical"
PERIODS = 3  # health periods without a word before a gateway is silent
DEFAULT_HEALTH_EVERY = 30.0  # the gateway's own default period
DEFAULT_EVERY = 2.0  # seconds between checks
ACTOR = "cloud"  # who raised and cleared, in the activity log


def alert_id(since: float) -> str:
    """The episode's id: the same on every replica for one silence."""
    return f"cloud:{RULE}/{since:.6f}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class SilenceReport:
    """What one check changed: gateway ids."""

    raised: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


class SilenceWatch:
    """Checks for silent gateways and keeps their `gateway_silent` episodes."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float],
        silent_after: float | None = None,
        metrics: CloudMetrics | None = None,
        hearing: Callable[[], bool] = lambda: True,
    ) -> None:
        if silent_after is not None and not silent_after > 0:
            raise ValueError(f"silent_after: expected a positive number, got {silent_after!r}")
        self.engine = engine
        self.clock = clock
        self.silent_after = silent_after
        self.metrics = metrics
        self.hearing = hearing
        self.started = clock()  # silence counts from here at the earliest

    def _after(self) -> ColumnElement[float]:
        """Per gateway, seconds without a word before it is silent."""
        if self.silent_after is not None:
            return literal(self.silent_after, Float(precision=53))
        every = func.coalesce(Gateway.health_every, DEFAULT_HEALTH_EVERY)
        return cast(every * PERIODS, Float(precision=53))

    def check(self) -> SilenceReport:
        """One pass: resolve the silences that ended, then raise the new ones."""
        now = self.clock()
        if not self.hearing():
            self.started = now
        report = SilenceReport()
        with self.engine.connect() as conn:
            heard = conn.execute(
                select(Gateway.id, Gateway.silent_since)
                .where(Gateway.silent_since.is_not(None), Gateway.last_seen > Gateway.silent_since)
                .order_by(Gateway.id)
            ).all()
            after = self._after()
            quiet = conn.scalars(
                select(Gateway.id)
                .where(
                    Gateway.silent_since.is_(None),
                    Gateway.last_seen + after < now,
                    literal(self.started, Float(precision=53)) + after < now,
                )
                .order_by(Gateway.id)
            ).all()
        for gateway, since in heard:
            if since is not None and self._resolve(gateway, since, now):
                report.resolved.append(gateway)
        for gateway in quiet:
            if self._raise(gateway, now):
                report.raised.append(gateway)
        if self.metrics is not None:
            self.metrics.silences_raised += len(report.raised)
            self.metrics.silences_resolved += len(report.resolved)
        return report

    def _raise(self, gateway: str, now: float) -> bool:
        """Mark one gateway silent and open its episode, unless another replica (or a
        record that just arrived) got there first."""
        after = self._after()
        with writing(self.engine) as conn:
            row = conn.execute(
                update(Gateway)
                .where(
                    Gateway.id == gateway,
                    Gateway.silent_since.is_(None),
                    Gateway.last_seen + after < now,
                )
                .values(silent_since=Gateway.last_seen)
                .returning(Gateway.last_seen, Gateway.health, Gateway.health_ts, after)
            ).one_or_none()
            if row is None:
                return False
            since, health, health_ts, silent_after = row
            episode = _episode(gateway, since, float(silent_after), health, health_ts, now)
            mark_silenced(conn, [episode], now)
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            inserted = conn.execute(
                dialect.insert(Alert).on_conflict_do_nothing().returning(Alert.id), [episode]
            ).all()
            if inserted:
                _log(conn, inserted[0].id, "raised", now, {"silent_since": since})
        if inserted:
            log.warning("%s", episode["message"])
        return bool(inserted)

    def _resolve(self, gateway: str, since: float, now: float) -> bool:
        """Clear one gateway's silence and its episode (see the module docstring)."""
        with writing(self.engine) as conn:
            heard = conn.execute(
                update(Gateway)
                .where(
                    Gateway.id == gateway,
                    Gateway.silent_since == since,
                    Gateway.last_seen > Gateway.silent_since,
                )
                .values(silent_since=None)
                .returning(Gateway.last_seen)
            ).scalar_one_or_none()
            if heard is None:
                return False
            episode = conn.execute(
                select(Alert.id, Alert.state, Alert.payload).where(
                    Alert.gateway_id == gateway,
                    Alert.alert_id == alert_id(since),
                    Alert.rule == RULE,
                    Alert.cleared_at.is_(None),
                )
            ).one_or_none()
            if episode is None:
                return True  # no episode to clear: a gateway alert of its own took the id
            row_id, state, payload = episode
            cleared = {"heard_again_at": heard, "silent_for_s": round(heard - since, 3)}
            after = "cleared" if state in ("open", "acknowledged") else state
            conn.execute(
                update(Alert)
                .where(Alert.id == row_id)
                .values(
                    state=after,
                    cleared_at=heard,
                    payload={**payload, "cleared": cleared},
                    updated_at=now,
                )
            )
            _log(conn, row_id, "cleared", now, {"from": state, "to": after, **cleared})
        log.info(
            "gateway %s heard again at %s after %.0f s of silence",
            gateway,
            _iso(heard),
            heard - since,
        )
        return True


def _log(conn: Connection, alert: int, action: str, now: float, detail: dict[str, Any]) -> None:
    """One row of the activity log, which the timeline, the live list and webhooks follow."""
    conn.execute(
        insert(Activity),
        [{"at": now, "actor": ACTOR, "action": action, "alert": alert, "detail": detail}],
    )


def _episode(
    gateway: str,
    since: float,
    silent_after: float,
    health: dict[str, Any] | None,
    health_ts: float | None,
    now: float,
) -> dict[str, Any]:
    """The row of a new `gateway_silent` episode."""
    known = backlog(health or {})
    if health_ts is not None:
        last = f"last known backlog {known.describe()}, as of {_iso(health_ts)}"
    else:
        last = "no health record received, backlog unknown"
    message = (
        f"gateway {gateway} silent: nothing received since {_iso(since)} "
        f"({now - since:.0f} s, silent after {silent_after:g} s); {last}"
    )
    raised = {
        "silent_since": since,
        "silent_after": silent_after,
        "backlog": {
            "records": known.records,
            "bytes": known.bytes,
            "oldest_age_s": known.oldest_age_s,
            "as_of": health_ts,
        },
    }
    return {
        "gateway_id": gateway,
        "alert_id": alert_id(since),
        "raised_seq": None,
        "cleared_seq": None,
        "device": "",
        "rule": RULE,
        "severity": SEVERITY,
        "state": "open",
        "raised_at": now,
        "cleared_at": None,
        "acknowledged_at": None,
        "message": message,
        "payload": {"raised": raised},
        "updated_at": now,
    }


async def run_silence_watch(watch: SilenceWatch, every: float) -> None:
    """Check every `every` seconds (in a worker thread); a failed check is logged and the
    next one catches up."""
    while True:
        try:
            await asyncio.to_thread(watch.check)
        except Exception as exc:  # the database is away: the next round catches up
            log.warning("silence watch: check failed (%s)", str(exc).splitlines()[0])
        await asyncio.sleep(every)
