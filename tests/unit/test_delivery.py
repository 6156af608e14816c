"""Held-back acknowledgements (gateway/delivery.py), against a real SQLite outbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.delivery import PACKET_IDS, SCHEMA, Delivery, fingerprint
from gateway.outbox import Outbox


class Acks:
    def __init__(self) -> None:
        self.sent: list[tuple[list[int], int]] = []

    def __call__(self, ids: list[int], generation: int) -> None:
        self.sent.append((ids, generation))


def open_outbox(path: Path, acks: Acks) -> tuple[Outbox, Delivery]:
    box = Outbox(path)
    delivery = Delivery(acks)
    box.start(SCHEMA, delivery.restore)
    box.participants.append(delivery)
    return box, delivery


def test_acks_wait_for_the_commit_and_go_on_their_connection(tmp_path: Path) -> None:
    acks = Acks()
    box, delivery = open_outbox(tmp_path / "o.db", acks)
    assert delivery.admit(1, False, fingerprint("t", b"a"), generation=1)
    assert delivery.admit(2, False, fingerprint("t", b"b"), generation=2)
    assert acks.sent == []  # nothing before the commit
    assert box.wants_commit
    box.flush()
    assert acks.sent == [([1], 1), ([2], 2)]


def test_a_redelivery_of_what_was_committed_is_acknowledged_not_counted(tmp_path: Path) -> None:
    acks = Acks()
    box, delivery = open_outbox(tmp_path / "o.db", acks)
    crc = fingerprint("t/1", b'{"v": 1}')
    assert delivery.admit(7, False, crc, generation=1)
    box.flush()
    box._db.close()  # killed before the PUBACK reached the broker
    acks = Acks()
    box, delivery = open_outbox(tmp_path / "o.db", acks)
    assert not delivery.admit(7, True, crc, generation=1)  # DUP, same message: taken before
    assert delivery.duplicates == 1
    # The same id, DUP, other bytes: a new message the broker sent under a reused id.
    assert delivery.admit(7, True, fingerprint("t/1", b'{"v": 2}'), generation=1)
    # Not DUP: always new.
    assert delivery.admit(8, False, crc, generation=1)
    box.flush()
    assert acks.sent == [([7, 7, 8], 1)]


def test_a_failed_commit_keeps_the_acks_for_the_next(tmp_path: Path) -> None:
    acks = Acks()
    box, delivery = open_outbox(tmp_path / "o.db", acks)
    delivery.admit(3, False, 33, generation=1)
    box._db.execute("PRAGMA query_only = ON")
    with pytest.raises(sqlite3.OperationalError):
        box.flush()
    assert acks.sent == []
    box._db.execute("PRAGMA query_only = OFF")
    box.flush()
    assert acks.sent == [([3], 1)]
    box._db.close()
    _, again = open_outbox(tmp_path / "o.db", Acks())
    assert again.seen == {3: 33}


def test_the_ledger_stays_bounded_by_the_packet_id_space(tmp_path: Path) -> None:
    box, delivery = open_outbox(tmp_path / "o.db", Acks())
    for round_ in range(5):
        for packet_id in range(1, PACKET_IDS + 1, 7):
            delivery.admit(packet_id, False, round_, generation=1)
        box.flush()
    rows = box._db.execute("SELECT COUNT(*), SUM(LENGTH(data)) FROM delivered").fetchone()
    assert rows[1] <= 3 * 6 * PACKET_IDS  # compacted: never more than twice the id space
    box._db.close()
    _, again = open_outbox(tmp_path / "o.db", Acks())
    assert again.seen == delivery.seen
    assert set(again.seen.values()) == {4}  # the last message under each id
