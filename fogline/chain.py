"""The per-gateway hash chain over uplink records: what makes a deleted, reordered or
rewritten record visible to the cloud whatever the broker does.

Each kind has its own chain (order is kept per kind, and a batch holds one kind). Its
links are the outbox's group commits: the records of one kind committed together are
hashed once, after the link before them,

    link = SHA-256(previous link || [kind, [seq...], [device...], [len(data)...]] || data...)

where the list is orjson's bytes and each `data` the record's JSON bytes as the outbox
stores them. A record's hash is the link of the group it was committed in; the first
group of a kind follows `GENESIS` (seq 0). One hash per group, not per record: hashing
each record alone (a hashlib object, two updates and a small JSON per record) cost
0.55 µs per record, most of what signing added to a gateway that forwards every
reading; in groups of 1,000 it costs about 0.17 µs per record (docs/benchmarks.md).

The chain is over *records*, not batches: groups are fixed when they commit (so the
chain survives restarts), and a signed batch says which record precedes its first one
(`prev: [seq, hash]`) and the hash of its last one (`head`). However batches are cut,
resent or re-cut after a reconnect, the same records carry the same hashes. The cloud
keeps `head` with the last record of every batch it stores and compares a later
batch's `prev` (and a duplicate's `head`) with what it kept: a mismatch is a fork
(another history under the same seqs) and is refused. It never waits for a
predecessor it does not hold (lost, evicted or still in flight), so a lost batch
cannot stall anything; such gaps are what the gap labels report. It does not recompute
hashes: the signature already covers every byte, and a batch need not start or end
where a group does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson

GENESIS = bytes(32)


def link(
    prev: bytes, kind: str, seqs: Sequence[int], devices: Sequence[str], data: Sequence[bytes]
) -> bytes:
    """The hash of one group of records of `kind` (their seqs, devices and JSON bytes, in
    order) after `prev`."""
    h = hashlib.sha256(prev)
    h.update(orjson.dumps([kind, seqs, devices, [len(d) for d in data]]))
    h.update(b"".join(data))
    return h.digest()
