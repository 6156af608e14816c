"""The outbox's hash chain: linked at commit, kept across restarts, cut where a record is
missing, and the same whatever the batches (fogline.chain); and a signature with one
spelling (fogline.signing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fogline import chain, signing
from gateway.outbox import Outbox


def _expected(groups: list[list[tuple[int, str, dict]]], kind: str = "digest") -> dict[int, bytes]:
    """Each record's hash, from its commit groups as `fogline.chain` defines them."""
    hashes, digest = {}, chain.GENESIS
    for group in groups:
        seqs, devices, data = zip(*group, strict=True)
        digest = chain.link(digest, kind, seqs, devices, [orjson.dumps(x) for x in data])
        hashes |= dict.fromkeys((s for s, _, _ in group), digest)
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
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 7, 8, 9]
    hashes = _expected([rows[:5], rows[5:]])  # two group commits
    assert link == (0, chain.GENESIS, hashes[9])
    # re-cut anywhere (a resend after a reconnect): the link names the record before
    rows2, link2 = box.read_linked("digest", 3, 2, 1 << 30)
    assert [r[0] for r in rows2] == [4, 5]
    assert link2 == (3, hashes[3], hashes[5])
    _, link3 = box.read_linked("digest", 5, 100, 1 << 30)
    assert link3 == (5, hashes[5], hashes[9])
    alerts, alert_link = box.read_linked("alert", 0, 10, 1 << 30)
    assert alert_link == (0, chain.GENESIS, _expected([alerts], "alert")[6])


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


def test_a_link_commits_to_every_record_and_where_each_ends() -> None:
    def link(*records: tuple[int, str, bytes], prev: bytes = chain.GENESIS, kind: str = "event"):
        seqs, devices, data = zip(*records, strict=True)
        return chain.link(prev, kind, list(seqs), list(devices), list(data))

    one, two = (1, "m1", b'{"a":1}'), (2, "m1", b'{"a":2}')
    base = link(one, two)
    assert base == link(one, two)  # a function of its input
    changed = [
        link(one, two, prev=bytes(31) + b"\x01"),  # another predecessor
        link(one, two, kind="alert"),
        link(one, (3, "m1", b'{"a":2}')),  # another seq
        link(one, (2, "m2", b'{"a":2}')),  # another device
        link(one, (2, "m1", b'{"a":3}')),  # other data
        link((1, "m1", b'{"a":1}{'), (2, "m1", b'"a":2}')),  # the same bytes, cut elsewhere
        link(one),  # a record fewer
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)


def test_links_that_no_held_record_needs_are_forgotten(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    groups = []
    for g in range(50):  # a group commit, then an ack of all but its last record
        groups.append(
            [
                (box.append("digest", "m1", {"g": g, "i": i}), "m1", {"g": g, "i": i})
                for i in range(3)
            ]
        )
        box.flush()
        box.ack([(groups[-1][0][0], groups[-1][1][0])])
        box.flush()
    hashes = _expected(groups)
    rows, link = box.read_linked("digest", 0, 100, 1 << 30)
    assert [r[0] for r in rows] == [3]  # the run stops: the records after it were acked
    assert link == (2, hashes[2], hashes[3])
    last = groups[-1][2][0]
    box.ack([(1, last - 1)])
    box.flush()
    rows, link = box.read_linked("digest", 0, 100, 1 << 30)
    assert [r[0] for r in rows] == [last]
    assert link == (last - 1, hashes[last - 1], hashes[last])
    links = box._db.execute("SELECT COUNT(*) FROM chain").fetchone()[0]
    assert links == 1  # the last group's, which holds both ends
    box.close()


def test_an_outbox_with_a_hash_on_every_row_keeps_its_chain(tmp_path: Path) -> None:
    """Outboxes written when each record was hashed alone: those hashes are links of one
    record each, and new groups follow the last."""
    path = tmp_path / "o.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, class INTEGER NOT NULL, device TEXT "
        "NOT NULL, data BLOB NOT NULL, created REAL NOT NULL, prev_seq INTEGER, prev BLOB, "
        "hash BLOB);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    old = [(seq, "m1", {"i": seq}) for seq in (1, 2, 3)]
    digests = [bytes([seq]) * 32 for seq in range(4)]  # what the old outbox stored
    digests[0] = chain.GENESIS
    for seq, device, data in old:
        db.execute(
            "INSERT INTO outbox VALUES (?, 3, ?, ?, 0, ?, ?, ?)",
            (seq, device, orjson.dumps(data), seq - 1, digests[seq - 1], digests[seq]),
        )
    db.execute("DELETE FROM outbox WHERE seq = 1")  # acknowledged: only row 2 knows its hash
    heads = {"3": (3, digests[3].hex())}
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("next_seq", "4"), ("chain", orjson.dumps(heads).decode())],
    )
    db.commit()
    db.close()
    box = Outbox(path)
    box.append("digest", "m1", {"i": 4})
    box.flush()
    rows, link = box.read_linked("digest", 0, 100, 1 << 30)
    assert [r[0] for r in rows] == [2, 3, 4]
    new = chain.link(digests[3], "digest", [4], ["m1"], [orjson.dumps({"i": 4})])
    assert link == (1, digests[1], new)
    assert box.read_linked("digest", 2, 1, 1 << 30)[1] == (2, digests[2], digests[3])
    box.close()


def test_an_outbox_converted_after_all_was_acknowledged_follows_its_old_head(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, class INTEGER NOT NULL, device TEXT "
        "NOT NULL, data BLOB NOT NULL, created REAL NOT NULL, prev_seq INTEGER, prev BLOB, "
        "hash BLOB);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    old_head = bytes([7]) * 32  # record 3's hash, held only in meta: its row was acked
    heads = {"3": (3, old_head.hex())}
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("next_seq", "4"), ("chain", orjson.dumps(heads).decode())],
    )
    db.commit()
    db.close()
    box = Outbox(path)
    box.append("digest", "m1", {"i": 4})
    box.flush()
    rows, link = box.read_linked("digest", 0, 100, 1 << 30)
    assert [r[0] for r in rows] == [4]
    new = chain.link(old_head, "digest", [4], ["m1"], [orjson.dumps({"i": 4})])
    assert link == (3, old_head, new)  # what the cloud holds at 3, not the new link
    box.close()


def test_a_signature_has_one_spelling() -> None:
    """Base64 leaves 4 bits of a 64-byte signature's last character unused: a message with
    one of them flipped is not the message that was signed, and is refused as forged."""
    key = Ed25519PrivateKey.generate()
    signed = signing.Signer(key).sign(b'{"a":1}')
    assert signing.verify(signed, [key.public_key()]) == b'{"a":1}'
    last = len(signed) - len(b'=="}') - 1  # the character before the padding
    refused = 0
    for bit in range(8):
        altered = bytearray(signed)
        altered[last] ^= 1 << bit
        with pytest.raises(signing.SignatureError) as info:
            signing.verify(bytes(altered), [key.public_key()])
        refused += info.value.reason == "forged"
    assert refused == 8
