"""The outbox on a real SQLite file: order, durability, acks, bounds, restarts."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import orjson
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fogline.envelope import KINDS, to_ranges
from gateway import outbox
from gateway.outbox import Outbox, coarsen, ranges_minus, to_ranges_merged


def read_all(box: Outbox, kind: str) -> list[int]:
    return [seq for seq, _, _ in box.read(kind, 0, 1_000_000, 1 << 40)]


def test_records_are_read_only_once_committed(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    seqs = [box.append("digest", "m1", {"i": i}) for i in range(3)]
    assert seqs == [1, 2, 3]
    assert read_all(box, "digest") == []
    box.flush()
    assert box.read("digest", 0, 10, 1 << 20) == [(s, "m1", {"i": i}) for i, s in enumerate(seqs)]
    assert box.read("digest", 2, 10, 1 << 20)[0][0] == 3
    box.close()


def test_alerts_ask_for_an_immediate_commit(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.append("digest", "m1", {})
    assert not box.urgent
    box.append("alert", "m1", {})
    assert box.urgent
    box.flush()
    assert not box.urgent
    box.close()


def test_seq_survives_restarts_even_when_empty(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for _ in range(5):
        box.append("health", "", {})
    box.flush()
    box.ack([(1, 5)])
    box.flush()
    assert box.depth == 0
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert again.append("alert", "", {}) == 6
    again.close()


def test_a_crash_loses_only_the_uncommitted_group_and_reuses_its_numbers(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.append("alert", "a", {"n": 1})
    box.flush()
    box.append("alert", "a", {"n": 2})  # never committed: the process dies here
    box._db.close()  # no flush, like SIGKILL
    again = Outbox(tmp_path / "o.db")
    assert read_all(again, "alert") == [1]
    # The cloud never saw seq 2, so reusing it leaves no gap.
    assert again.append("alert", "a", {"n": 3}) == 2
    again.close()


def test_acks_delete_and_bytes_follow(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for i in range(10):
        box.append("digest", "d", {"i": i})
    box.flush()
    size = box.bytes
    box.ack([(2, 4), (9, 9)])
    box.flush()
    assert read_all(box, "digest") == [1, 5, 6, 7, 8, 10]
    assert box.depth == 6
    assert 0 < box.bytes < size
    box.close()


def test_eviction_follows_class_order_and_alerts_survive(tmp_path: Path) -> None:
    record = {"pad": "x" * 80}
    one = len(orjson.dumps(record))
    box = Outbox(tmp_path / "o.db", max_bytes=one * 10)
    kinds = ["alert", "digest", "health", "escalation"] * 5  # 20 records, room for 10
    for kind in kinds:
        box.append(kind, "d", record)
    box.flush()
    # The newest health record (seq 19) stays, beside the bound: it reports the evictions.
    assert box.bytes <= box.max_bytes + one
    assert box.depth == 11
    assert read_all(box, "health") == [19]
    # Health (the 4 others) went first, then digests (5); escalations and alerts all stay.
    assert dict(box.evicted) == {"health": 4, "digest": 5}
    assert len(read_all(box, "alert")) == 5
    assert len(read_all(box, "escalation")) == 5
    evicted = {i + 1 for i, k in enumerate(kinds) if k in {"health", "digest"}} - {19}
    reported = {s for lo, hi in box.stats()["evicted_ranges"] for s in range(lo, hi + 1)}
    assert reported == evicted
    box.close()
    # The counters and ranges are durable too.
    again = Outbox(tmp_path / "o.db", max_bytes=one * 10)
    assert dict(again.evicted) == {"health": 4, "digest": 5}
    assert again.stats()["evicted_ranges"] == box.stats()["evicted_ranges"]
    again.close()


def test_alerts_are_evicted_oldest_first_when_nothing_else_is_left(tmp_path: Path) -> None:
    record = {"pad": "y" * 50}
    box = Outbox(tmp_path / "o.db", max_bytes=len(orjson.dumps(record)) * 3)
    for _ in range(5):
        box.append("alert", "d", record)
    box.flush()
    assert read_all(box, "alert") == [3, 4, 5]
    assert box.evicted["alert"] == 2
    box.close()


def test_ttl_expires_per_kind(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", ttl={"digest": 60.0})
    box.append("digest", "d", {})
    box.append("alert", "d", {})
    box.flush(now=0.0)
    box.flush(now=box._db.execute("SELECT MAX(created) FROM outbox").fetchone()[0] + 61)
    assert read_all(box, "digest") == []
    assert read_all(box, "alert") == [2]
    assert box.expired["digest"] == 1
    assert box.stats()["evicted_ranges"] == [(1, 1)]
    box.close()


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_durability_settings(tmp_path: Path, durability: str) -> None:
    box = Outbox(tmp_path / "o.db", durability=durability)  # type: ignore[arg-type]
    level = box._db.execute("PRAGMA synchronous").fetchone()[0]
    assert level == {"normal": 1, "full": 2}[durability]
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    box.close()


class OutboxMachine(RuleBasedStateMachine):
    """Random appends, commits, sends, acks, crashes and restarts never lose or reorder an
    unacknowledged committed record, and never reuse a seq the cloud may have seen."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile  # noqa: PLC0415

        self.dir = Path(tempfile.mkdtemp(prefix="outbox-sm-"))
        self.box = Outbox(self.dir / "o.db")
        self.committed: dict[int, tuple[str, int]] = {}  # seq -> (kind, payload)
        self.buffered: dict[int, tuple[str, int]] = {}
        self.sent: set[int] = set()  # seqs the cloud may have seen
        self.n = 0

    @rule(kind=st.sampled_from(KINDS), count=st.integers(1, 5))
    def append(self, kind: str, count: int) -> None:
        for _ in range(count):
            self.n += 1
            seq = self.box.append(kind, "d", {"n": self.n})
            assert seq not in self.sent
            assert seq not in self.committed
            self.buffered[seq] = (kind, self.n)

    @rule()
    def commit(self) -> None:
        self.box.flush()
        self.committed.update(self.buffered)
        self.buffered.clear()

    @rule(kind=st.sampled_from(KINDS))
    def send(self, kind: str) -> None:
        self.sent.update(seq for seq, _, _ in self.box.read(kind, 0, 50, 1 << 20))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def ack_some(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.sent)))
        self.box.ack([(seq, seq)])
        self.box.flush()
        self.committed.update(self.buffered)
        self.buffered.clear()
        self.committed.pop(seq, None)

    @rule()
    def crash_and_restart(self) -> None:
        self.box._db.close()
        self.buffered.clear()
        self.box = Outbox(self.dir / "o.db")

    @rule()
    def clean_restart(self) -> None:
        self.box.close()
        self.committed.update(self.buffered)
        self.buffered.clear()
        self.box = Outbox(self.dir / "o.db")

    @invariant()
    def everything_unacked_is_there_in_order(self) -> None:
        for kind in KINDS:
            rows = self.box.read(kind, 0, 1_000_000, 1 << 40)
            expected = sorted(s for s, (k, _) in self.committed.items() if k == kind)
            assert [seq for seq, _, _ in rows] == expected
            assert all(data["n"] == self.committed[seq][1] for seq, _, data in rows)

    def teardown(self) -> None:
        self.box._db.close()


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# -- the eviction report (issue 11) ----------------------------------------------------------


def seqs_of(ranges: list[tuple[int, int]]) -> set[int]:
    return {s for lo, hi in ranges for s in range(lo, hi + 1)}


seq_sets = st.sets(st.integers(1, 300), max_size=120)


@given(seqs=seq_sets, cap=st.integers(1, 20))
def test_coarsened_ranges_cover_every_seq_within_the_cap(seqs: set[int], cap: int) -> None:
    ranges, filled = coarsen(to_ranges(sorted(seqs)), cap)
    assert len(ranges) <= cap
    assert ranges == to_ranges_merged(ranges)  # sorted, disjoint, not touching
    covered = seqs_of(ranges)
    assert covered >= seqs
    assert filled == len(covered - seqs)
    if len(to_ranges(sorted(seqs))) <= cap:
        assert (ranges, filled) == (to_ranges(sorted(seqs)), 0)


@given(a=seq_sets, b=seq_sets)
def test_ranges_minus_is_the_set_difference(a: set[int], b: set[int]) -> None:
    assert ranges_minus(to_ranges(sorted(a)), to_ranges(sorted(b))) == to_ranges(sorted(a - b))


def test_the_newest_health_record_is_never_evicted_even_alone_over_the_bound(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=100, ttl={"health": 1.0})
    box.append("digest", "d", {"pad": "d" * 80})
    box.append("health", "", {"pad": "h" * 300})  # bigger than the bound by itself
    box.flush(now=0.0)
    assert read_all(box, "health") == [2]
    assert read_all(box, "digest") == [1]  # it did not push the digest out either
    box.append("health", "", {"pad": "h" * 300})
    box.flush(now=box._db.execute("SELECT MAX(created) FROM outbox").fetchone()[0] + 10)
    assert read_all(box, "health") == [3]  # the older one went (expired)
    assert (box.expired["health"], box.stats()["evicted_ranges"]) == (1, [(2, 2)])
    box.close()


def test_ranges_the_cloud_has_stored_are_forgotten_and_that_is_durable(tmp_path: Path) -> None:
    record = {"pad": "x" * 80}
    box = Outbox(tmp_path / "o.db", max_bytes=len(orjson.dumps(record)) * 2)
    for _ in range(5):
        box.append("digest", "d", record)
    box.flush()
    assert box.stats()["evicted_ranges"] == [(1, 3)]
    health = box.append("health", "", {"outbox": box.stats()})
    box.flush()
    for _ in range(2):
        box.append("digest", "d", record)
    box.flush()  # evicts 4 and 5, after the health record was written
    assert box.stats()["evicted_ranges"] == [(1, 5)]
    box.ack([(health, health)])  # the cloud stored it, and the ranges it carried
    box.flush()
    assert box.stats()["evicted_ranges"] == [(4, 5)]
    box.close()
    again = Outbox(tmp_path / "o.db", max_bytes=len(orjson.dumps(record)) * 2)
    assert again.stats()["evicted_ranges"] == [(4, 5)]
    assert dict(again.evicted) == {"digest": 5}  # the counts stay: they are totals
    again.close()


class ReportMachine(RuleBasedStateMachine):
    """Under a tiny bound, with random kinds, commits, sends, acks and restarts, every seq
    the outbox dropped is reported: in its current ranges, or in a health record the cloud
    stored. The ranges stay within the cap, and the newest health record is always held."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile  # noqa: PLC0415

        self.dir = Path(tempfile.mkdtemp(prefix="outbox-report-"))
        # A cap this small makes the coarsening run in most examples.
        self.cap, outbox.MAX_REPORTED_RANGES = outbox.MAX_REPORTED_RANGES, 3
        self.box = self._open()
        self.committed: set[int] = set()
        self.acked: set[int] = set()
        self.cloud: set[int] = set()  # seqs the cloud was told were dropped
        self.newest_health = 0

    def _open(self) -> Outbox:
        return Outbox(self.dir / "o.db", max_bytes=600)

    @rule(kind=st.sampled_from(KINDS), count=st.integers(1, 8), pad=st.integers(0, 120))
    def append(self, kind: str, count: int, pad: int) -> None:
        for _ in range(count):
            data: dict[str, object] = {"pad": "p" * pad}
            if kind == "health":
                data["outbox"] = self.box.stats()
            seq = self.box.append(kind, "d", data)
            self.box.flush()
            self.committed.add(seq)
            if kind == "health":
                self.newest_health = seq

    @rule(kind=st.sampled_from(KINDS), data=st.data())
    def cloud_stores_some(self, kind: str, data: st.DataObject) -> None:
        rows = self.box.read(kind, 0, 20, 1 << 20)
        if not rows:
            return
        chosen = data.draw(st.lists(st.sampled_from(rows), max_size=5, unique_by=lambda r: r[0]))
        for seq, _, body in chosen:
            if kind == "health":
                self.cloud |= seqs_of([tuple(r) for r in body["outbox"]["evicted_ranges"]])
            self.acked.add(seq)
            self.box.ack([(seq, seq)])
        self.box.flush()

    @rule()
    def restart(self) -> None:
        self.box.close()
        self.box = self._open()

    @invariant()
    def every_drop_is_reported_and_the_report_is_held(self) -> None:
        held = {seq for kind in KINDS for seq in read_all(self.box, kind)}
        dropped = self.committed - held - self.acked
        assert dropped <= self.cloud | seqs_of(self.box.dropped_ranges)
        assert len(self.box.dropped_ranges) <= outbox.MAX_REPORTED_RANGES
        if self.newest_health and self.newest_health not in self.acked:
            assert self.newest_health in held

    def teardown(self) -> None:
        self.box.close()
        outbox.MAX_REPORTED_RANGES = self.cap


TestReportMachine = ReportMachine.TestCase
TestReportMachine.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


def test_an_8_kib_outbox_reports_thousands_of_evictions_across_kinds(tmp_path: Path) -> None:
    """A slow link: the alerts get through (the cloud stores them and their seqs become
    holes between evicted ones), the events between them are evicted, and so are older
    health records. The cloud must learn of every evicted seq from the health records it
    stores, each of which stays small enough for the bound never to evict it."""
    box = Outbox(tmp_path / "o.db", max_bytes=8192)
    told: set[int] = set()  # what the cloud's evicted ranges cover
    delivered: set[int] = set()
    committed: set[int] = set()
    largest = 0

    def cloud_reads(kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            for seq, _, body in box.read(kind, 0, 1000, 1 << 20):
                if kind == "health":
                    told.update(seqs_of([tuple(r) for r in body["outbox"]["evicted_ranges"]]))
                delivered.add(seq)
                box.ack([(seq, seq)])

    for i in range(6000):
        committed.add(box.append("event", "m", {"temperature": 20.0, "i": i, "pad": "e" * 60}))
        if i % 3 == 0:
            committed.add(box.append("alert", "m", {"state": "raised", "i": i}))
        if i % 50 == 0:
            health = {"outbox": box.stats(), "pad": "h" * 200}
            largest = max(largest, len(orjson.dumps(health)))
            committed.add(box.append("health", "", health))
        if i % 10 == 0:
            box.flush()
            cloud_reads(("alert",) if i < 4000 else ())  # then the link goes down
    box.flush()
    assert sum(box.evicted.values()) > 3000, dict(box.evicted)
    assert {"event", "health"} <= set(box.evicted)
    # The link returns: everything held is delivered, and the next health records (the
    # first was numbered before the last evictions) tell the rest.
    for _ in range(2):
        box.append("health", "", {"outbox": box.stats()})
        box.flush()
        cloud_reads(KINDS)
        box.flush()
    missing = committed - delivered
    assert missing, "evictions happened"
    assert missing <= told, f"{len(missing - told)} evicted seqs never reported"
    assert largest < 4096, "a health record stays well under the bound"
    box.close()


def test_eviction_order_is_pinned_for_every_budget(tmp_path: Path) -> None:
    """Every kind present, interleaved; for each budget the survivors are exactly what the
    rule leaves: evict health, then digests, events, escalations, alerts, oldest first. The
    newest health record is never evicted and not counted against the bound: it carries the
    eviction report."""
    from fogline.envelope import KINDS  # noqa: PLC0415

    record = {"pad": "z" * 60}
    one = len(orjson.dumps(record))
    kinds = ["digest", "alert", "health", "event", "escalation"] * 4  # seq = index + 1
    newest_health = max(i + 1 for i, kind in enumerate(kinds) if kind == "health")
    others = [s for s in range(1, len(kinds) + 1) if s != newest_health]
    victims = sorted(others, key=lambda s: (-KINDS.index(kinds[s - 1]), s))
    for room in range(len(victims), 0, -1):
        box = Outbox(tmp_path / f"o{room}.db", max_bytes=one * room)
        for kind in kinds:
            box.append(kind, "d", record)
        box.flush()
        gone = set(victims[: len(victims) - room])
        kept = {seq for kind in KINDS for seq in read_all(box, kind)}
        assert kept == set(range(1, len(kinds) + 1)) - gone, f"room for {room}"
        reported = {s for lo, hi in box.stats()["evicted_ranges"] for s in range(lo, hi + 1)}
        assert reported == gone, f"room for {room}"
        box.close()


def test_an_unserialisable_record_takes_no_seq_and_the_others_are_kept(tmp_path: Path) -> None:
    """orjson writes 64-bit integers at most: such a record is refused alone, before it is
    numbered (a used, never stored seq would be a gap the cloud cannot explain)."""
    box = Outbox(tmp_path / "o.db")
    assert box.append("digest", "m1", {"v": 1}) == 1
    with pytest.raises(outbox.UnserialisableRecordError) as info:
        box.append("digest", "m2", {"v": 2**70})
    assert str(info.value).startswith(
        "outbox: refused a record (kind digest, device 'm2') that cannot be written as JSON ("
    )
    assert box.append("digest", "m3", {"v": 3}) == 2
    box.flush()
    assert box.read("digest", 0, 10, 1 << 20) == [(1, "m1", {"v": 1}), (2, "m3", {"v": 3})]
    assert box.next_seq == 3
    box.close()
