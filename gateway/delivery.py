"""Acknowledgements held back until what they acknowledge is committed.

A QoS 1 reading is PUBACKed, and a confirmable CoAP request answered, only after the outbox
commit that holds its effect (the records it produced and the operator state it changed,
gateway/state.py). Until then the broker keeps the message and delivers it again if we die,
so a SIGKILL loses nothing. The price is that the broker holds more in flight: it must let
a subscriber keep a commit's worth of messages unacknowledged (mosquitto:
`max_inflight_messages 0` and a large `max_queued_messages`, as deploy/mosquitto-edge.conf
ships).

The other half is not counting anything twice. A message whose effect was committed but
whose PUBACK never reached the broker (the connection or the process died right after the
commit) comes again with DUP set and the same packet id. So each commit also records which
packet ids it took in, with a CRC-32 of their topic and payload, and a DUP delivery that
matches the last message taken under its id is acknowledged without being processed again.
Packet ids are 16 bits, so that record holds at most 65,535 entries; it is written as one
blob per commit (0.2 us a message, where a row per message cost 1.7 us) and compacted into
one blob when the blobs hold twice that.
"""

from __future__ import annotations

import asyncio
import sqlite3
import zlib
from array import array
from collections.abc import Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (n INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""
PACKET_IDS = 65_535


def fingerprint(topic: str, payload: bytes) -> int:
    """What tells a redelivery from a new message under a reused packet id."""
    return zlib.crc32(payload, zlib.crc32(topic.encode()))


class Delivery:
    """The outbox participant that owns held-back acknowledgements (see the module doc)."""

    def __init__(self, ack: Callable[[list[int], int], None]) -> None:
        """`ack(packet_ids, generation)`: PUBACK them, if that connection is still the one."""
        self._ack = ack
        self.seen: dict[int, int] = {}  # packet id -> fingerprint of the last message taken
        self._new_ids = array("H")
        self._new_crcs = array("I")
        self._owed: list[tuple[int, int]] = []  # (packet id, connection generation)
        self._answers: list[asyncio.Future[None]] = []
        self._stored = 0  # entries in the blobs on disk
        self._taken: tuple[list[tuple[int, int]], list[asyncio.Future[None]]] = ([], [])
        self.duplicates = 0  # redeliveries of what was already taken in, acknowledged only

    # -- start ------------------------------------------------------------------------------

    def restore(self, db: sqlite3.Connection, meta: dict[str, str]) -> None:
        for (data,) in db.execute("SELECT data FROM delivered ORDER BY n"):
            self._apply(data)

    def _apply(self, data: bytes) -> None:
        n = len(data) // 6
        ids, crcs = array("H"), array("I")
        ids.frombytes(data[: 2 * n])
        crcs.frombytes(data[2 * n :])
        self.seen.update(zip(ids, crcs, strict=True))
        self._stored += n

    def session_lost(self) -> None:
        """The broker kept no session: it will deliver none of the old ids again."""
        self.seen.clear()
        self._owed.clear()

    # -- intake -----------------------------------------------------------------------------

    def admit(self, packet_id: int, dup: bool, crc: int, generation: int) -> bool:
        """A QoS 1 delivery: True to process it; False for one already taken in, which is
        acknowledged after the next commit (it is in the state that commit holds)."""
        self._owed.append((packet_id, generation))
        if dup and self.seen.get(packet_id) == crc:
            self.duplicates += 1
            return False
        self.seen[packet_id] = crc
        self._new_ids.append(packet_id)
        self._new_crcs.append(crc)
        return True

    def answer_after_commit(self, answers: list[asyncio.Future[None]]) -> None:
        """Requests whose records were just processed: answer them after the next commit."""
        self._answers += answers

    # -- the outbox's group commit ----------------------------------------------------------

    def pending(self) -> bool:
        return bool(self._owed or self._answers)

    def write(self, db: sqlite3.Connection) -> None:
        self._taken = (self._owed, self._answers)
        self._owed, self._answers = [], []
        ids, crcs = self._new_ids, self._new_crcs
        if not ids:
            return
        self._new_ids, self._new_crcs = array("H"), array("I")
        if self._stored + len(ids) > 2 * PACKET_IDS:  # compact: what is seen, in one blob
            db.execute("DELETE FROM delivered")
            ids, crcs = array("H", self.seen.keys()), array("I", self.seen.values())
            self._stored = 0
        db.execute("INSERT INTO delivered (data) VALUES (?)", (ids.tobytes() + crcs.tobytes(),))
        self._stored += len(ids)

    def done(self, ok: bool) -> None:
        owed, answers = self._taken
        self._taken = ([], [])
        if not ok:  # the next commit carries them, and writes every id seen
            self._owed = owed + self._owed
            self._answers = answers + self._answers
            self._stored = 2 * PACKET_IDS + 1
            return
        by_generation: dict[int, list[int]] = {}
        for packet_id, generation in owed:
            by_generation.setdefault(generation, []).append(packet_id)
        for generation, ids in by_generation.items():
            self._ack(ids, generation)
        for answer in answers:
            if not answer.done():
                answer.set_result(None)
