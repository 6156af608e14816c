"""What signing and verifying cost per uplink batch, against the work they ride on.

    python bench/signing.py [--records 20000] [--batch 500] [--rounds 5]

Gateway: the uplink's per-batch path (read committed rows from the outbox, encode,
compress) with and without the signature (`Uplink._encode`: chain links from the outbox,
Ed25519 over SHA-256 of the batch). Outbox appends and commits (which now also hash each
record into its kind's chain) are timed apart, per record.

Cloud: `Ingest._drain` (parse, one SQLite transaction per 32 messages, acks computed) over
the same records, unsigned and unchecked versus signed by a registered gateway (signature
verified, chain links compared with and written to `chain_heads`). Each variant gets a
fresh database; the median of `--rounds` is printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.db import make_engine, migrate
from cloud.ingest import Ingest
from cloud.metrics import CloudMetrics
from cloud.provision import add_gateway
from cloud.store import Store
from cloud.trust import CloudTrust
from fogline import signing
from fogline.envelope import compress, uplink_topic
from fogline.urls import parse_broker_url
from gateway.clock import SystemClock
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.uplink import Uplink

DIGEST = {
    "line": "line-1", "machine": "m-03", "window_start": 1.7e9, "window_end": 1.7e9 + 10,
    "count": 50, "vibration_rms": 2.31, "vibration_p95": 2.75, "vibration_mean": 2.29,
    "vibration_max": 2.9, "temperature_mean": 61.2, "temperature_max": 62.0, "current_mean": 12.1,
    "vibration_rms_z": 0.4, "ts": 1.7e9 + 10,
}  # fmt: skip


def _time(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def median_of(rounds: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(rounds))


def gateway_side(tmp: Path, records: int, batch: int, signed: bool) -> tuple[float, list[bytes]]:
    """Seconds per batch for read + encode (+ sign) + compress; the payloads made."""
    box = Outbox(tmp / f"outbox-{signed}.db")
    for i in range(records):
        box.append("digest", f"line-1/m-{i % 40:02d}", {**DIGEST, "window_start": 1.7e9 + i})
        if i % 1000 == 999:
            box.flush()
    box.flush()
    uplink = Uplink("gw1", box, Metrics(), SystemClock())
    if signed:
        uplink.signer = signing.Signer(Ed25519PrivateKey.generate())
    payloads: list[bytes] = []
    cursor, started = 0, time.perf_counter()
    while True:
        link = None
        if signed:
            rows, link = box.read_linked("digest", cursor, batch, 1 << 30)
        else:
            rows = box.read("digest", cursor, batch, 1 << 30)
        if not rows:
            break
        payloads.append(compress(uplink._encode("digest", rows, link)))  # noqa: SLF001
        cursor = rows[-1][0]
    seconds = (time.perf_counter() - started) / len(payloads)
    box.close()
    return seconds, payloads


SPENT: dict[str, float] = {"trust": 0.0, "drain": 0.0}


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            SPENT["trust"] += time.perf_counter() - t0

    return wrapper


def cloud_side(tmp: Path, payloads: list[bytes], key: Ed25519PrivateKey | None) -> float:
    """Records per second through `Ingest._drain`, 32 messages per drain; the time spent in
    `CloudTrust.open` and `check_chains` is added to SPENT["trust"]."""
    db = tmp / f"cloud-{time.monotonic_ns()}.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    trust = None
    if key is not None:
        add_gateway(
            engine, "gw1", Ed25519PrivateKey.generate(), public_key=signing.public_text(key)
        )
        trust = CloudTrust(
            engine, signing.Signer(Ed25519PrivateKey.generate()), allow_unregistered=False
        )
        trust.open = _timed(trust.open)  # type: ignore[method-assign]
        trust.check_chains = _timed(trust.check_chains)  # type: ignore[method-assign]
    ingest = Ingest(
        Store(engine), parse_broker_url("mqtt://127.0.0.1:1"), "bench", CloudMetrics(), trust=trust
    )
    topic = uplink_topic("gw1", "digest")
    messages = [(topic, p) for p in payloads]
    stored = 0
    started = time.perf_counter()
    for i in range(0, len(messages), 32):
        outcome = ingest._drain(messages[i : i + 32])  # noqa: SLF001
        stored += sum(outcome.report.stored.values())
    seconds = time.perf_counter() - started
    if key is not None:
        SPENT["drain"] += seconds
    engine.dispose()
    return stored / seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    opts = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        plains, signs = [], []
        for _ in range(opts.rounds):  # interleaved, like the cloud's below
            plains.append(gateway_side(tmp, opts.records, opts.batch, False)[0])
            signs.append(gateway_side(tmp, opts.records, opts.batch, True)[0])
        plain_s, signed_s = statistics.median(plains), statistics.median(signs)
        sample = gateway_side(tmp, opts.batch, opts.batch, False)[1][0]
        body = zlib.decompress(sample) if sample[:1] != b"{" else sample
        signer = signing.Signer(Ed25519PrivateKey.generate())
        sign_s = median_of(opts.rounds, lambda: _time(lambda: signer.sign(body), 200))
        _, unsigned = gateway_side(tmp, opts.records, opts.batch, False)
        key = Ed25519PrivateKey.generate()
        box = Outbox(tmp / "signed.db")
        for i in range(opts.records):
            box.append("digest", f"line-1/m-{i % 40:02d}", {**DIGEST, "window_start": 1.7e9 + i})
        box.flush()
        uplink = Uplink("gw1", box, Metrics(), SystemClock())
        uplink.signer = signing.Signer(key)
        signed: list[bytes] = []
        cursor = 0
        while True:
            rows, link = box.read_linked("digest", cursor, opts.batch, 1 << 30)
            if not rows:
                break
            signed.append(compress(uplink._encode("digest", rows, link)))  # noqa: SLF001
            cursor = rows[-1][0]
        box.close()
        # Interleaved, so that load from elsewhere on the machine hits both alike.
        bases, checks = [], []
        for _ in range(opts.rounds):
            bases.append(cloud_side(tmp, unsigned, None))
            checks.append(cloud_side(tmp, signed, key))
        base, checked = statistics.median(bases), statistics.median(checks)
    per_batch = opts.batch
    result = {
        "gateway_batch_us_unsigned": plain_s * 1e6,
        "gateway_batch_us_signed": signed_s * 1e6,
        "gateway_sign_us_per_batch": (signed_s - plain_s) * 1e6,
        "gateway_sign_only_us": sign_s * 1e6,
        "cloud_records_per_s_unchecked": base,
        "cloud_records_per_s_verified": checked,
        "cloud_cost_pct": 100 * (1 - checked / base),
        "cloud_verify_us_per_batch": (per_batch / checked - per_batch / base) * 1e6,
        "cloud_trust_share_pct": 100 * SPENT["trust"] / SPENT["drain"],
        "cloud_trust_us_per_batch": SPENT["trust"] / (opts.rounds * len(signed)) * 1e6,
    }
    print(f"batches of {opts.batch} digests ({len(signed)} batches, median of {opts.rounds})")
    print(f"gateway: Signer.sign alone {sign_s * 1e6:.0f} us on a {len(body):,}-byte batch")
    print(
        f"gateway: read+encode+compress {plain_s * 1e6:.0f} us/batch; with signing {signed_s * 1e6:.0f} us/batch (+{(signed_s - plain_s) * 1e6:.0f} us)"
    )
    print(
        f"cloud:   drain {base:,.0f} records/s unchecked; {checked:,.0f} records/s verified ({result['cloud_cost_pct']:.1f}% less, +{result['cloud_verify_us_per_batch']:.0f} us/batch)"
    )
    print(
        f"cloud:   inside the verified drains, signature + chain checks took "
        f"{result['cloud_trust_us_per_batch']:.0f} us/batch, "
        f"{result['cloud_trust_share_pct']:.1f}% of the drain time (decompression included: "
        "the parser then skips it)"
    )
    return result


if __name__ == "__main__":
    main()
