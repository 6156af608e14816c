"""The outbox on a real SQLite file: order, durability, acks, bounds, restarts."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import orjson
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fogline.envelope import KINDS
from gateway.outbox import Outbox


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
    assert box.bytes <= box.max_bytes
    assert box.depth == 10
    # Health (5) went first, then digests (5); escalations and alerts all stay.
    assert dict(box.evicted) == {"health": 5, "digest": 5}
    assert len(read_all(box, "alert")) == 5
    assert len(read_all(box, "escalation")) == 5
    evicted = {i + 1 for i, k in enumerate(kinds) if k in {"health", "digest"}}
    reported = {s for lo, hi in box.stats()["evicted_ranges"] for s in range(lo, hi + 1)}
    assert reported == evicted
    box.close()
    # The counters and ranges are durable too.
    again = Outbox(tmp_path / "o.db", max_bytes=one * 10)
    assert dict(again.evicted) == {"health": 5, "digest": 5}
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


def test_eviction_order_is_pinned_for_every_budget(tmp_path: Path) -> None:
    """Every kind present, interleaved; for each budget the survivors are exactly what the
    rule leaves: evict health, then digests, events, escalations, alerts, oldest first."""
    from fogline.envelope import KINDS  # noqa: PLC0415

    record = {"pad": "z" * 60}
    one = len(orjson.dumps(record))
    kinds = ["digest", "alert", "health", "event", "escalation"] * 4  # seq = index + 1
    victims = sorted(range(1, len(kinds) + 1), key=lambda s: (-KINDS.index(kinds[s - 1]), s))
    for room in range(len(kinds), 0, -1):
        box = Outbox(tmp_path / f"o{room}.db", max_bytes=one * room)
        for kind in kinds:
            box.append(kind, "d", record)
        box.flush()
        gone = set(victims[: len(kinds) - room])
        kept = {seq for kind in KINDS for seq in read_all(box, kind)}
        assert kept == set(range(1, len(kinds) + 1)) - gone, f"room for {room}"
        reported = {s for lo, hi in box.stats()["evicted_ranges"] for s in range(lo, hi + 1)}
        assert reported == gone, f"room for {room}"
        box.close()
