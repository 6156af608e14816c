"""The outbox's hash chain: linked at commit, kept across restarts, cut where a record is
missing, and the same whatever the batches (fogline.chain)."""

from __future__ import annotations

from pathlib import Path

import orjson

from fogline import chain
from gateway.outbox import Outbox


def _expected(records: list[tuple[int, str, dict]], kind: str = "digest") -> list[bytes]:
    hashes, digest = [], chain.GENESIS
    for seq, device, data in records:
        digest = chain.record_hash(digest, kind, seq, device, orjson.dumps(data))
        hashes.append(digest)
    return hashes


def test_runs_link_to_their_predecessor_across_a_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for i in range(5):
        box.append("digest", "m1", {"i": i})
    box.append("alert", "m1", {"i": 99})  # another kind: another chain, same seq space
    box.flush()
    box.close()
    box = Outbox(tmp_path / "o.db")  # the heads survive
    for i in range(5, 8):
        box.append("digest", "m1", {"i": i})
    box.flush()
    rows, link = box.read_linked("digest", 0, 100, 1 << 30)
    hashes = _expected(rows)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 7, 8, 9]
    assert link == (0, chain.GENESIS, hashes[-1])
    # re-cut anywhere (a resend after a reconnect): the link names the record before
    rows2, link2 = box.read_linked("digest", 3, 2, 1 << 30)
    assert [r[0] for r in rows2] == [4, 5]
    assert link2 == (3, hashes[2], hashes[4])
    alerts, alert_link = box.read_linked("alert", 0, 10, 1 << 30)
    assert alert_link == (0, chain.GENESIS, _expected(alerts, "alert")[0])


def test_a_run_stops_where_a_record_is_missing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for i in range(6):
        box.append("digest", "m1", {"i": i})
    box.flush()
    box.ack([(3, 3)])  # acknowledged alone (its batch got an ack, its neighbours' did not)
    box.flush()
    rows, link = box.read_linked("digest", 0, 100, 1 << 30)
    assert [r[0] for r in rows] == [1, 2]  # 4 follows 3, which the batch cannot carry
    rows, link = box.read_linked("digest", 2, 100, 1 << 30)
    assert [r[0] for r in rows] == [4, 5, 6]
    assert link is not None
    assert link[0] == 3
