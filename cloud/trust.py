"""The cloud's half of the trust model: who may send as a gateway, and what the cloud signs.

Every uplink message is checked here before anything else reads it (`Ingest._drain`):

1. the gateway named by the topic must be registered (`gateway_keys`, by `fogline cloud
   gateway add`) and not revoked, and the batch signed by one of its keys
   (`fogline.signing`); the broker's ACL already keeps other clients off its topics, this
   holds even when the broker itself is hostile;
2. the batch's chain link (`fogline.chain`) must agree with what the cloud holds: `prev`
   with the head stored at that seq, `head` with a head already stored at its last seq.
   A mismatch is another history under the same seqs (a forged fork, or a gateway whose
   data directory was restored from an old copy) and is refused.

A refused message is counted by reason (`fogline_cloud_rejects_total{reason=unsigned|
forged|unregistered|revoked|chain}`), never stored and never acknowledged, so it moves
no ledger, gap label or gateway row. Chain links are checked when the cloud holds the
other end and never waited for: a lost or evicted predecessor cannot stall ingest, and
replicas sharing the load need nothing from each other but the database.

`allow_unregistered` (the library default, `--allow-unregistered` on the command line)
is for development: a gateway with no key ever registered is stored unchecked, and the
cloud says so loudly at start. A registered or revoked gateway is always checked.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import dataclass

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select, tuple_

from cloud.models import ChainHead, GatewayKey
from cloud.parse import RejectError
from fogline import signing

log = logging.getLogger("fogline.cloud.trust")

REFRESH_EVERY = 2.0  # seconds a replica may take to see a revocation or a new gateway
TAIL = 256  # bytes at the end of a signed batch that hold its chain fields
TRUST_REASONS = ("unsigned", "forged", "unregistered", "revoked", "chain")


@dataclass(frozen=True, slots=True)
class Link:
    """A signed batch's place in its kind's chain: it follows `prev_seq` (hash
    `prev_hash`) and its last record, `head_seq`, hashes to `head_hash`."""

    gateway: str
    prev_seq: int
    prev_hash: bytes
    head_seq: int
    head_hash: bytes


class GatewayKeys:
    """The registered keys, re-read every `REFRESH_EVERY` seconds (any thread)."""

    def __init__(self, engine: Engine, every: float = REFRESH_EVERY) -> None:
        self.engine = engine
        self.every = every
        self._keys: dict[str, list[Ed25519PublicKey]] = {}
        self._known: set[str] = set()  # gateways with a key row, revoked or not
        self._at = -float("inf")
        self._lock = threading.Lock()

    def refresh(self) -> None:
        keys: dict[str, list[Ed25519PublicKey]] = {}
        known: set[str] = set()
        with self.engine.connect() as conn:
            for gateway, public, revoked in conn.execute(
                select(GatewayKey.gateway_id, GatewayKey.public_key, GatewayKey.revoked_at)
            ):
                known.add(gateway)
                if revoked is None:
                    keys.setdefault(gateway, []).append(signing.load_public(public))
        self._keys, self._known, self._at = keys, known, time.monotonic()

    def invalidate(self) -> None:
        """Read the keys again at the next lookup (a gateway was just added or revoked)."""
        self._at = -float("inf")

    def lookup(self, gateway: str) -> tuple[list[Ed25519PublicKey], bool]:
        """(live keys, ever registered)."""
        with self._lock:
            if time.monotonic() - self._at > self.every:
                self.refresh()
        return self._keys.get(gateway, []), gateway in self._known


class CloudTrust:
    def __init__(
        self,
        engine: Engine,
        signer: signing.Signer | None,
        *,
        allow_unregistered: bool = True,
        keys: GatewayKeys | None = None,
    ) -> None:
        self.engine = engine
        self.signer = signer
        self.allow_unregistered = allow_unregistered
        self.keys = keys or GatewayKeys(engine)
        if allow_unregistered:
            log.warning(
                "accepting UNSIGNED batches from gateways with no registered key "
                "(development mode); provision each with `fogline cloud gateway add <id>` "
                "and run without --allow-unregistered"
            )
        if signer is None:
            log.warning("acks and model chunks go out UNSIGNED: give the cloud --signing-key")

    def sign(self, body: bytes) -> bytes:
        return body if self.signer is None else self.signer.sign(body)

    def sign_chunk(self, payload: bytes, gateway: str) -> bytes:
        return payload if self.signer is None else signing.sign_chunk(payload, gateway, self.signer)

    def open(self, topic: str, payload: bytes, max_bytes: int) -> tuple[bytes, Link | None]:
        """The batch's JSON once its signature is checked, and its chain link;
        RejectError (a TRUST_REASONS reason) when it may not be stored."""
        parts = topic.split("/")
        gateway = parts[1] if len(parts) == 4 else ""
        keys, registered = self.keys.lookup(gateway)
        if not registered and self.allow_unregistered:
            return payload, None
        if not registered:
            raise RejectError(
                "unregistered",
                f"gateway {gateway!r} is not provisioned (fogline cloud gateway add {gateway})",
            )
        if not keys:
            raise RejectError("revoked", f"gateway {gateway!r} was revoked")
        body = _plain(payload, max_bytes)
        try:
            body = signing.verify(body, keys)
        except signing.SignatureError as exc:
            raise RejectError(exc.reason, f"{exc} (claimed to be from {gateway!r})") from None
        return body, _link(gateway, body)

    def check_chains(self, links: list[Link | None]) -> list[str | None]:
        """Per link, None if it agrees with the heads held (or there are none to compare
        with) and with the links before it, else why not. The heads of those that agree
        are stored with their records (`Batch.head`, `Store.write`)."""
        wanted = {(k.gateway, s) for k in links if k is not None for s in (k.prev_seq, k.head_seq)}
        if not wanted:
            return [None] * len(links)
        with self.engine.connect() as conn:
            held = {
                (g, s): h
                for g, s, h in conn.execute(
                    select(ChainHead.gateway_id, ChainHead.seq, ChainHead.hash).where(
                        tuple_(ChainHead.gateway_id, ChainHead.seq).in_(sorted(wanted))
                    )
                )
            }
        verdicts: list[str | None] = []
        fresh: dict[tuple[str, int], bytes] = {}
        for link in links:
            if link is None:
                verdicts.append(None)
                continue
            before = held.get((link.gateway, link.prev_seq))
            same = held.get((link.gateway, link.head_seq), fresh.get((link.gateway, link.head_seq)))
            if before is not None and before != link.prev_hash:
                verdicts.append(
                    f"does not follow record {link.prev_seq} as the cloud holds it "
                    "(another history under the same seqs)"
                )
            elif same is not None and same != link.head_hash:
                verdicts.append(
                    f"record {link.head_seq} is already stored with other content "
                    "(another history under the same seqs)"
                )
            else:
                verdicts.append(None)
                fresh[link.gateway, link.head_seq] = link.head_hash
        return verdicts


def _plain(payload: bytes, max_bytes: int) -> bytes:
    """The JSON of a message (zlib undone), or RejectError as `parse_message` would say."""
    if len(payload) > max_bytes:
        raise RejectError("oversized", f"{len(payload)} bytes, limit {max_bytes}")
    if payload[:1] == b"{":
        return payload
    try:
        decomp = zlib.decompressobj()
        plain = decomp.decompress(payload, max_bytes)
    except zlib.error as exc:
        raise RejectError("corrupt", f"neither JSON nor zlib: {exc}") from None
    if decomp.unconsumed_tail:
        raise RejectError("oversized", f"larger than {max_bytes} bytes once decompressed")
    return plain


def _link(gateway: str, body: bytes) -> Link | None:
    """The chain fields that end a signed batch (`"prev": [...], "head": ..., "kid": ...`)
    without parsing its records: they are the last fields and fit in the last
    `TAIL` bytes. None for a batch without them (records from before the chain)."""
    at = body.rfind(b',"prev":[', max(0, len(body) - TAIL))
    if at < 0:
        return None
    try:
        tail = orjson.loads(b"{" + body[at + 1 :])
    except orjson.JSONDecodeError:
        return None  # a record's own "prev" field near the end: not a chain trailer
    if not isinstance(tail, dict) or set(tail) != {"prev", "head", "kid"}:
        return None
    try:
        seq, prev = tail["prev"]
        last, head = tail["head"]
        return Link(gateway, int(seq), bytes.fromhex(prev), int(last), bytes.fromhex(head))
    except (TypeError, ValueError) as exc:
        raise RejectError("schema", f"bad chain fields: {exc}") from None
