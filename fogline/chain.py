"""The per-gateway hash chain over uplink records: what makes a deleted, reordered or
rewritten record visible to the cloud whatever the broker does.

Each kind has its own chain (order is kept per kind, and a batch holds one kind):

    h(record) = SHA-256(h(predecessor) || [kind, seq, device] || data)

where `[kind, seq, device]` and `data` are the record's JSON bytes as orjson writes them
(the outbox stores exactly those bytes, and the cloud gets them back by writing the parsed
record again: orjson's output is a function of the values, and JSON numbers round-trip).
The first record of a kind follows `GENESIS` (seq 0).

The chain is over *records*, not batches: the gateway links each record when its group
is committed to the outbox (so it survives restarts), and a signed batch says which record
precedes its first one (`prev: [seq, hash]`) and the hash of its last one (`head`).
However batches are cut, resent or re-cut after a reconnect, the same records carry the
same hashes. The cloud keeps `head` with the last record of every batch it stores and
compares a later batch's `prev` (and a duplicate's `head`) with what it kept: a mismatch
is a fork (another history under the same seqs) and is refused. It never waits for a
predecessor it does not hold (lost, evicted or still in flight), so a lost batch cannot
stall anything; such gaps are what the gap labels report. It does not recompute hashes:
the signature already covers every byte, and recomputing cost about 1 ms per 500 records,
8% of ingest (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib

import orjson

GENESIS = bytes(32)


def record_hash(prev: bytes, kind: str, seq: int, device: str, data: bytes) -> bytes:
    h = hashlib.sha256(prev)
    h.update(orjson.dumps([kind, seq, device]))
    h.update(data)
    return h.digest()
