"""The durable outbox: every record for the cloud, in SQLite (WAL), until the cloud says it
has stored it.

Appends are numbered at once (`seq`, per gateway, across kinds) and committed in groups: at
most every `flush_interval` or `flush_records` records, for alerts as soon as 20 ms
after the last commit (`gateway/uplink.py`, `COMMIT_GAP`). Only committed
records are ever read for sending, and the persisted `next_seq` moves in the same
transaction, so a crash loses at most the last uncommitted group and never reuses a number
the cloud has seen. Acknowledged records are deleted in the next group.

The outbox is bounded in bytes. Over the bound it evicts by class, lowest first (health,
digest, event, escalation, alert): an alert goes only when nothing else is left. Every
eviction and expiry is counted per kind and kept as seq ranges, which the health record
reports so the cloud can tell an explained gap from a loss.

That report must not be lost to the bound it reports on (issue 11): the ranges live in the
meta table, never in the byte bound; the newest health record is never evicted or expired
and does not count against the bound (the bound is `max_bytes` plus one health record);
ranges the cloud has stored (it acknowledged a health record that carried them) are
forgotten; and what is left stays merged and at most `MAX_REPORTED_RANGES`, coarsened by
closing the smallest gaps between neighbours when there are more (`evicted_ranges_filled`
says how many seqs that covers which were not dropped; the cloud only ever labels a seq
it did not receive, and the outbox still delivers every seq it holds).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from fogline import chain
from fogline.envelope import KINDS, Entry, to_ranges

# Lower number = higher priority: sent first, evicted last.
CLASS = {kind: i for i, kind in enumerate(KINDS)}
# Ranges a health record reports at most (~20 bytes each: under 3 kB); more are coarsened.
# Ranges are forgotten once the cloud has them, so only a long outage with records of
# several kinds interleaved (each kept alert splits a run of evicted digests) comes near.
MAX_REPORTED_RANGES = 128
HEALTH = CLASS["health"]
REPORTS_REMEMBERED = 16  # health records whose ranges are forgotten when acknowledged
Range = tuple[int, int]

Durability = Literal["normal", "full"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    class INTEGER NOT NULL,
    device TEXT NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_class ON outbox (class, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chain (
    class INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (class, seq)
) WITHOUT ROWID;
"""
# `chain`: one row per kind per group commit, the link (`fogline.chain`) at the group's
# last seq; a record's hash is the first link at or after its seq. A row holds only its
# predecessor's seq (`prev_seq`, where a run of the chain is cut): two 32-byte hashes on
# every row cost 0.35-0.5 µs per record in the group commit, as much as the rest of
# signing (docs/benchmarks.md).


class UnserialisableRecordError(ValueError):
    """A record the outbox cannot write as JSON; refused before it was given a seq."""

    def __init__(self, kind: str, device: str, reason: str) -> None:
        super().__init__(kind, device, reason)
        self.kind, self.device, self.reason = kind, device, reason

    def __str__(self) -> str:
        return (
            f"outbox: refused a record (kind {self.kind}, device {self.device!r}) that "
            f"cannot be written as JSON ({self.reason}); the rest of its batch is kept"
        )


class Participant(Protocol):
    """Something committed in the outbox's transactions (operator state, delivery acks)."""

    def pending(self) -> bool:
        """Something waits for the next commit."""

    def write(self, db: sqlite3.Connection) -> None:
        """Inside the transaction, after the records."""

    def done(self, ok: bool) -> None:
        """After it: committed (`ok`), or rolled back."""


@dataclass(slots=True)
class Pending:
    seq: int
    cls: int
    device: str
    data: bytes
    created: float


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        durability: Durability = "normal",
        ttl: dict[str, float] | None = None,
        flush_records: int = 1000,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.flush_records = flush_records
        self._ttl = {CLASS[k]: v for k, v in (ttl or {}).items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        # Checkpoints (the WAL's fsync-heavy part) run in a worker thread: see checkpoint().
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "prev_seq" not in columns:  # an outbox from before the chain: its rows stay unlinked
            self._db.execute("ALTER TABLE outbox ADD COLUMN prev_seq INTEGER")
        if "hash" in columns:  # hashes kept per row: each is a link of one record
            self._db.executescript(
                "BEGIN;"
                "INSERT OR IGNORE INTO chain SELECT class, seq, hash FROM outbox "
                "WHERE hash IS NOT NULL;"
                "INSERT OR IGNORE INTO chain SELECT class, prev_seq, prev FROM outbox "
                "WHERE prev IS NOT NULL AND prev_seq > 0;"
                "ALTER TABLE outbox DROP COLUMN prev;"
                "ALTER TABLE outbox DROP COLUMN hash;"
                "COMMIT;"
            )
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        # The head of each kind's hash chain (fogline.chain), moved with every group commit.
        self.heads: dict[int, tuple[int, bytes]] = {
            int(cls): (int(seq), bytes.fromhex(digest))
            for cls, (seq, digest) in orjson.loads(meta.get("chain", "{}")).items()
        }
        # Each head has its link row (the next group's first record names it), also in an
        # outbox converted from a hash on every row whose head record was acknowledged.
        self._db.executemany(
            "INSERT OR IGNORE INTO chain (class, seq, hash) VALUES (?, ?, ?)",
            [(cls, seq, digest) for cls, (seq, digest) in self.heads.items()],
        )
        top = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])
        self.next_seq: int = max(int(meta.get("next_seq", "1")), top + 1)
        self.evicted: defaultdict[str, int] = defaultdict(
            int, orjson.loads(meta.get("evicted", "{}"))
        )
        self.expired: defaultdict[str, int] = defaultdict(
            int, orjson.loads(meta.get("expired", "{}"))
        )
        self.dropped_ranges: list[tuple[int, int]] = [
            (int(lo), int(hi)) for lo, hi in orjson.loads(meta.get("dropped_ranges", "[]"))
        ]
        # Seqs the coarsened ranges cover that were never dropped (an upper bound once some
        # are forgotten; 0 again when none is left): see _keep_ranges.
        self.ranges_filled = int(meta.get("dropped_filled", "0"))
        self._ranges_dirty = bool(self.dropped_ranges)  # merged and bounded at the first flush
        self._reported: dict[int, list[Range]] = {}  # health seq -> the ranges it carried
        size, depth = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(data)), 0), COUNT(*) FROM outbox"
        ).fetchone()
        self.bytes: int = int(size)
        self.depth: int = int(depth)
        self._appends: list[Pending] = []
        self._acks: list[tuple[int, int]] = []
        self.urgent = False  # an alert waits: flush without delay
        self.commits = 0
        self.participants: list[Participant] = []
        self._oldest: tuple[int, float] | None = None
        self._note_oldest()

    # -- writing ----------------------------------------------------------------------------

    def append(self, kind: str, device: str, data: dict[str, Any]) -> int:
        """Number a record and buffer it for the next group commit; returns its seq.

        The record is serialised before it is numbered: one that cannot be (an integer
        past 64 bits, a value of no JSON type) raises :class:`UnserialisableRecordError` and
        takes no seq, so the cloud never sees a gap nobody can explain."""
        try:
            body = orjson.dumps(data)
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise UnserialisableRecordError(kind, device, str(exc)) from None
        seq = self.next_seq
        self.next_seq += 1
        cls = CLASS.get(kind, CLASS["event"])
        self._appends.append(Pending(seq, cls, device, body, time.time()))
        if cls == 0:
            self.urgent = True
        elif cls == HEALTH:
            self._note_report(seq, data)
        return seq

    def ack(self, ranges: list[tuple[int, int]]) -> None:
        """The cloud has stored these seqs: delete them in the next group commit."""
        self._acks.extend(ranges)
        self._forget_reported(ranges)

    @property
    def pending(self) -> int:
        """Records not yet acknowledged, committed or not."""
        return self.depth + len(self._appends)

    @property
    def buffered(self) -> int:
        return len(self._appends) + len(self._acks)

    @property
    def wants_commit(self) -> bool:
        """Records, acks or a participant's changes wait for the next group commit."""
        return bool(self._appends or self._acks or self.urgent) or any(
            p.pending() for p in self.participants
        )

    def start(
        self, schema: str, setup: Callable[[sqlite3.Connection, dict[str, str]], None]
    ) -> None:
        """A participant's tables, then its start-up reads and writes in one transaction."""
        db = self._db
        db.executescript(schema)
        db.execute("BEGIN IMMEDIATE")
        try:
            setup(db, dict(db.execute("SELECT key, value FROM meta").fetchall()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def flush(self, now: float | None = None) -> int:
        """One transaction: buffered appends and acks, expiry, eviction. Returns rows added."""
        appends, acks = self._appends, self._acks
        self._appends, self._acks = [], []
        self.urgent = False
        now = time.time() if now is None else now
        db = self._db
        heads = dict(self.heads)
        accounts = self._accounts()
        db.execute("BEGIN IMMEDIATE")
        try:
            if appends:
                db.executemany(
                    "INSERT INTO outbox (seq, class, device, data, created, prev_seq) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    self._linked(appends),
                )
                self.bytes += sum(len(p.data) for p in appends)
                self.depth += len(appends)
            for lo, hi in acks:
                self._delete("seq BETWEEN ? AND ?", (lo, hi))
            dropped_now = self._expire(now) if self._ttl else False
            dropped_now = self._evict() or dropped_now
            if acks or dropped_now:
                self._prune_chain()
            meta = [("next_seq", str(self.next_seq))]
            if appends:
                chained = {str(c): (seq, digest.hex()) for c, (seq, digest) in self.heads.items()}
                meta.append(("chain", orjson.dumps(chained).decode()))
            if dropped_now:
                self.dropped_ranges = to_ranges_merged(self.dropped_ranges)[-MAX_REPORTED_RANGES:]
                meta += [
                    ("evicted", orjson.dumps(self.evicted).decode()),
                    ("expired", orjson.dumps(self.expired).decode()),
                    ("dropped_ranges", orjson.dumps(self.dropped_ranges).decode()),
                ]
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
            for participant in self.participants:
                participant.write(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.heads = heads
            self._restore_accounts(accounts)
            self.urgent = self.urgent or any(p.cls == 0 for p in appends)
            self._appends = appends + self._appends
            self._acks = acks + self._acks
            for participant in self.participants:
                participant.done(ok=False)
            raise
        for participant in self.participants:
            participant.done(ok=True)
        self.commits += 1
        self._note_oldest()
        return len(appends)

    def _accounts(self) -> tuple[Any, ...]:
        """What a transaction changes in memory, to put back when it rolls back (a full disk)."""
        return (
            self.bytes,
            self.depth,
            dict(self.evicted),
            dict(self.expired),
            list(self.dropped_ranges),
            self.ranges_filled,
            self._ranges_dirty,
        )

    def _restore_accounts(self, accounts: tuple[Any, ...]) -> None:
        (size, depth, evicted, expired, ranges, filled, dirty) = accounts
        self.bytes, self.depth = size, depth
        self.evicted = defaultdict(int, evicted)
        self.expired = defaultdict(int, expired)
        self.dropped_ranges, self.ranges_filled, self._ranges_dirty = ranges, filled, dirty

    def _linked(self, appends: list[Pending]) -> list[tuple[Any, ...]]:
        """The rows to insert, each with its predecessor's seq in its kind's chain; the
        link of each kind's records in this group goes into `chain` (`fogline.chain`)."""
        last = {cls: seq for cls, (seq, _) in self.heads.items()}
        rows = []
        for p in appends:
            rows.append((p.seq, p.cls, p.device, p.data, p.created, last.get(p.cls, 0)))
            last[p.cls] = p.seq
        classes = {p.cls for p in appends}
        links = []
        for cls in classes:
            group = appends if len(classes) == 1 else [p for p in appends if p.cls == cls]
            prev = self.heads.get(cls, (0, chain.GENESIS))[1]
            own = chain.link(
                prev,
                KINDS[cls],
                [p.seq for p in group],
                [p.device for p in group],
                [p.data for p in group],
            )
            self.heads[cls] = (last[cls], own)
            links.append((cls, last[cls], own))
        self._db.executemany("INSERT INTO chain (class, seq, hash) VALUES (?, ?, ?)", links)
        return rows

    def _prune_chain(self) -> None:
        """Forget the links no held record needs: those before the first held record's
        predecessor (all but the head when none of its kind is held)."""
        for cls, (head, _) in self.heads.items():
            self._db.execute(
                "DELETE FROM chain WHERE class = ? AND seq < COALESCE((SELECT prev_seq FROM "
                "outbox WHERE class = ? AND prev_seq IS NOT NULL ORDER BY seq LIMIT 1), ?)",
                (cls, cls, head),
            )

    def _hash_at(self, cls: int, seq: int) -> bytes | None:
        """The chain hash of record `seq` of class `cls`: its group's link."""
        if seq == 0:
            return chain.GENESIS
        row = self._db.execute(
            "SELECT hash FROM chain WHERE class = ? AND seq >= ? ORDER BY seq LIMIT 1",
            (cls, seq),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def read_linked(
        self, kind: str, after: int, limit: int, max_bytes: int
    ) -> tuple[list[Entry], tuple[int, bytes, bytes] | None]:
        """`read`, cut to one unbroken run of the kind's chain (`fogline.chain`), with the
        run's link: (seq and hash of the record it follows, hash of its last record).

        The run ends where a record does not follow the one before it: one evicted,
        expired or acknowledged alone lay between. Rows from before the chain: no link.
        """
        cls = CLASS[kind]
        rows = self._db.execute(
            "SELECT seq, device, data, prev_seq FROM outbox "
            "WHERE class = ? AND seq > ? ORDER BY seq LIMIT ?",
            (cls, after, limit),
        )
        head = rows.fetchone()
        if head is None:
            return [], None
        last, device, data, first = head
        out: list[Entry] = [(last, device, orjson.loads(data))]
        size = len(data)
        for seq, device, data, prev_seq in rows:
            size += len(data)
            if size > max_bytes or prev_seq != last:
                break
            out.append((seq, device, orjson.loads(data)))
            last = seq
        if first is None:
            return out, None
        before, own = self._hash_at(cls, first), self._hash_at(cls, out[-1][0])
        return out, None if before is None or own is None else (first, before, own)

    def _delete(self, where: str, args: tuple[Any, ...]) -> list[tuple[int, int, int]]:
        # `where` is one of a few literals in this module, never input.
        query = f"DELETE FROM outbox WHERE {where} RETURNING seq, class, LENGTH(data)"  # noqa: S608
        rows: list[tuple[int, int, int]] = self._db.execute(query, args).fetchall()
        self.bytes -= sum(r[2] for r in rows)
        self.depth -= len(rows)
        return rows

    def _expire(self, now: float) -> bool:
        dropped = False
        newest_health = self._newest_health()[0]
        for cls, ttl in self._ttl.items():
            below = newest_health if cls == HEALTH else self.next_seq  # the newest one stays
            rows = self._delete("class = ? AND created < ? AND seq < ?", (cls, now - ttl, below))
            if rows:
                dropped = True
                self.expired[KINDS[cls]] += len(rows)
                self.dropped_ranges += to_ranges([r[0] for r in rows])
                self._ranges_dirty = True
        return dropped

    def _evict(self) -> bool:
        dropped = False
        if self.bytes > self.max_bytes:
            # The newest health record carries the eviction report: it is never evicted
            # and does not count against the bound (an allowance of one health record).
            newest_health, reserved = self._newest_health()
            for cls in range(len(KINDS) - 1, -1, -1):
                below = newest_health if cls == HEALTH else self.next_seq
                while self.bytes - reserved > self.max_bytes:
                    # Oldest first within the class; a page at a time keeps statements short.
                    over = self.bytes - reserved - self.max_bytes
                    victims = self._db.execute(
                        "SELECT seq, LENGTH(data) FROM outbox WHERE class = ? AND seq < ? "
                        "ORDER BY seq LIMIT 512",
                        (cls, below),
                    ).fetchall()
                    if not victims:
                        break
                    upto, freed = victims[-1][0], 0
                    for seq, size in victims:
                        freed += size
                        if freed >= over:
                            upto = seq
                            break
                    rows = self._delete("class = ? AND seq <= ?", (cls, upto))
                    self.evicted[KINDS[cls]] += len(rows)
                    self.dropped_ranges += to_ranges([r[0] for r in rows])
                    self._ranges_dirty = True
                    dropped = True
        self._keep_ranges()
        return dropped

    def _newest_health(self) -> tuple[int, int]:
        """(seq, bytes) of the newest health record held; (next_seq, 0) when none is."""
        row = self._db.execute(
            "SELECT seq, LENGTH(data) FROM outbox WHERE class = ? ORDER BY seq DESC LIMIT 1",
            (HEALTH,),
        ).fetchone()
        return (self.next_seq, 0) if row is None else (int(row[0]), int(row[1]))

    # -- the eviction report ----------------------------------------------------------------

    def _note_report(self, seq: int, data: dict[str, Any]) -> None:
        """Remember which ranges the health record `seq` carries, to forget them once the
        cloud acknowledges it (it stores them in the same transaction)."""
        outbox = data.get("outbox")
        ranges = outbox.get("evicted_ranges") if isinstance(outbox, dict) else None
        if isinstance(ranges, list) and ranges:
            self._reported[seq] = [(int(lo), int(hi)) for lo, hi in ranges]
            if len(self._reported) > REPORTS_REMEMBERED:
                del self._reported[next(iter(self._reported))]

    def _forget_reported(self, acked: list[Range]) -> None:
        """Drop the ranges carried by health records among `acked`: the cloud has them."""
        stored = [s for s in self._reported if any(lo <= s <= hi for lo, hi in acked)]
        for seq in stored:
            self.dropped_ranges = ranges_minus(self.dropped_ranges, self._reported.pop(seq))
            self._ranges_dirty = True
        if stored and not self.dropped_ranges:
            self.ranges_filled = 0

    def _keep_ranges(self) -> None:
        """Merge and bound the ranges, and write them in the group commit's transaction."""
        if not self._ranges_dirty:
            return
        self._ranges_dirty = False
        self.dropped_ranges, filled = coarsen(self.dropped_ranges, MAX_REPORTED_RANGES)
        self.ranges_filled = self.ranges_filled + filled if self.dropped_ranges else 0
        self._db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [
                ("dropped_ranges", orjson.dumps(self.dropped_ranges).decode()),
                ("dropped_filled", str(self.ranges_filled)),
            ],
        )

    # -- reading ----------------------------------------------------------------------------

    def read(self, kind: str, after: int, limit: int, max_bytes: int) -> list[Entry]:
        """Committed records of a kind after `after`, in seq order, within the limits."""
        out: list[Entry] = []
        size = 0
        for seq, device, data in self._db.execute(
            "SELECT seq, device, data FROM outbox WHERE class = ? AND seq > ? ORDER BY seq LIMIT ?",
            (CLASS[kind], after, limit),
        ):
            size += len(data)
            if out and size > max_bytes:
                break
            out.append((seq, device, orjson.loads(data)))
        return out

    def _note_oldest(self) -> None:
        """Remember the oldest committed record (one primary-key lookup per group commit)."""
        row = self._db.execute("SELECT seq, created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        self._oldest = None if row is None else (int(row[0]), float(row[1]))

    @property
    def pending_from(self) -> int:
        """The lowest seq still held: every lower one was acknowledged, or dropped and reported."""
        candidates = [self.next_seq]
        if self._oldest is not None:
            candidates.append(self._oldest[0])
        if self._appends:
            candidates.append(self._appends[0].seq)
        return min(candidates)

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds the oldest record not yet acknowledged has waited; None when none waits."""
        now = time.time() if now is None else now
        if self._oldest is not None:
            created: float | None = self._oldest[1]
        else:
            created = self._appends[0].created if self._appends else None
        return None if created is None else max(0.0, now - created)

    def stats(self) -> dict[str, Any]:
        """What the health record reports about the outbox."""
        return {
            "depth": self.depth,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "evicted": dict(self.evicted),
            "expired": dict(self.expired),
            # Seqs dropped and not yet known to be at the cloud (see the module docstring).
            "evicted_ranges": list(self.dropped_ranges),
            "evicted_ranges_filled": self.ranges_filled,
            "pending_from": self.pending_from,
        }

    def checkpoint(self) -> None:
        """Copy the WAL back into the database, on a connection of its own.

        Meant for a worker thread (sqlite3 releases the GIL while it works), so the event
        loop never waits on the fsyncs; a passive checkpoint never blocks the writer.
        """
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            # Once the outbox is empty, give the disk back (the WAL grows during an outage).
            mode = "TRUNCATE" if self.depth == 0 else "PASSIVE"
            db.execute(f"PRAGMA wal_checkpoint({mode})")
        finally:
            db.close()

    def close(self) -> None:
        if self.wants_commit:
            with contextlib.suppress(sqlite3.Error):  # the stop said so; the broker redelivers
                self.flush()
        self._db.close()


def to_ranges_merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge inclusive ranges that touch or overlap."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def coarsen(ranges: list[Range], cap: int) -> tuple[list[Range], int]:
    """`ranges` merged, then at most `cap` of them by closing the smallest gaps between
    neighbours; also how many seqs the closed gaps add."""
    merged = to_ranges_merged(ranges)
    if len(merged) <= cap:
        return merged, 0
    gaps = sorted(range(len(merged) - 1), key=lambda i: merged[i + 1][0] - merged[i][1])
    closed = set(gaps[: len(merged) - max(cap, 1)])
    out = [merged[0]]
    filled = 0
    for i in range(1, len(merged)):
        lo, hi = merged[i]
        if i - 1 in closed:
            filled += lo - out[-1][1] - 1
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out, filled


def ranges_minus(ranges: list[Range], remove: list[Range]) -> list[Range]:
    """The seqs of `ranges` (sorted, disjoint) that are not in `remove`, as ranges."""
    out: list[Range] = []
    cuts = to_ranges_merged(remove)
    for lo, hi in ranges:
        start = lo
        for c_lo, c_hi in cuts:
            if c_hi < start or c_lo > hi:
                continue
            if c_lo > start:
                out.append((start, c_lo - 1))
            start = c_hi + 1
            if start > hi:
                break
        if start <= hi:
            out.append((start, hi))
    return out
