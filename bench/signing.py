"""What signing and verifying cost, measured side by side with the same work unsigned.

    python bench/signing.py [--messages 100000] [--repeat 5] [--records 20000] [--rounds 5]
    python bench/signing.py --quick        # ~1 min smoke run, numbers too small to trust

1. Gateway QoS 1 drain (the measure of bench/gateway_throughput.py): a backlog of
   `--messages` readings at QoS 1 on a private mosquitto, the gateway (pinned to one core)
   frozen while it fills, then let go. Timed from then until every reading is in, and
   until the outbox is empty again (every record sent and acknowledged by a stand-in
   cloud); the gateway's CPU per reading over the whole span. Pipelines: every reading
   forwarded as an `event` (the worst case for signing: 500 records per batch, every
   record chained), and pipelines/factory.yaml (a demo pipeline: digests and alerts).
   *On* is `fogline gateway --insecure-unsigned` (no identity, but every batch signed and
   chained, as always); *off* is the same gateway with the signer and the chain taken
   out (`--unsigned-gateway`, here only: the product cannot turn signing off). The two
   alternate, `--repeat` times each; medians (and the least CPU per reading).
2. Per batch, in process: the gateway's uplink path (outbox append and group commit,
   read, encode, compress, ack, and with signing the chain and the signature) and the
   cloud's `Ingest._drain` into SQLite (parse, one transaction per 32 messages, acks)
   over the batches the real uplink made, unchecked versus verified for a registered
   gateway (signature, chain links compared, heads stored with the records). CPU time of
   this process (and the cloud's wall time), interleaved rounds, medians of `--rounds`;
   event-sized and digest-sized records. Beside the A/B, the CPU spent inside the
   chain's and the signature's own functions (gateway) and inside the trust checks
   (cloud), measured within the signed runs: on a shared machine the A/B moves by more
   than what it measures, the time inside does not.

The machine may be shared: the runs alternate so that load from elsewhere hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway_throughput as gt  # its broker, publisher and gateway helpers

ROOT = Path(__file__).resolve().parents[1]

# Every reading of the publisher's machines goes up as an `event`.
FORWARD_ALL = """
name: forward_all
key: [line, machine]
sources:
  - mqtt: {topics: ["factory/{line}/{machine}/telemetry"], qos: 1, timestamp: ts}
outputs:
  - uplink: {from: source, kind: event}
"""

DIGEST = {
    "line": "line-1", "machine": "m-03", "window_start": 1.7e9, "window_end": 1.7e9 + 10,
    "count": 50, "vibration_rms": 2.31, "vibration_p95": 2.75, "vibration_mean": 2.29,
    "vibration_max": 2.9, "temperature_mean": 61.2, "temperature_max": 62.0, "current_mean": 12.1,
    "vibration_rms_z": 0.4, "ts": 1.7e9 + 10,
}  # fmt: skip
EVENT = {"ts": 1.7e9, "temperature": 61.25, "vibration": 2.31, "current": 12.1, "rpm": 1480}
SHAPES = {"event": EVENT, "digest": DIGEST}


def unsigned_gateway(argv: list[str]) -> int:
    """`fogline gateway` with no signer and no chain: the counterfactual for the A/B."""
    from fogline import cli  # noqa: PLC0415
    from gateway import app, outbox  # noqa: PLC0415

    def unlinked(_: outbox.Outbox, appends: list[outbox.Pending]) -> list[tuple[Any, ...]]:
        return [(p.seq, p.cls, p.device, p.data, p.created, None) for p in appends]

    app.Signer = lambda _key: None  # type: ignore[assignment,misc,return-value]
    outbox.Outbox._linked = unlinked  # type: ignore[method-assign]  # noqa: SLF001
    return cli.main(argv)


# -- 1. the gateway's QoS 1 drain ------------------------------------------------------------


def start_gateway(
    bench: gt.Bench, pipeline: Path, signed: bool, metrics_port: int
) -> subprocess.Popen[bytes]:
    url = f"mqtt://127.0.0.1:{bench.port}"
    data = bench.tmp / f"data-{metrics_port}"
    args = [
        "--log-level", "WARNING", "gateway", "--pipeline", str(pipeline), "--broker", url, "--uplink", url,
        "--id", gt.GATEWAY_ID, "--metrics-port", str(metrics_port), "--data-dir", str(data),
        "--insecure-unsigned",
    ]  # fmt: skip
    if signed:
        argv = [sys.executable, "-m", "fogline.cli", *args]
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "--unsigned-gateway", *args]
    with (bench.tmp / "gateway.log").open("ab") as out:
        proc = subprocess.Popen(gt.pinned(bench.sub_core, argv), stdout=out, stderr=out, cwd=ROOT)
    gt.wait_port(metrics_port, proc, "fogline gateway", timeout=30)
    return proc


def drain_once(bench: gt.Bench, pipeline: Path, signed: bool) -> dict[str, float]:
    n = bench.args.messages
    port = gt.free_port()
    proc = start_gateway(bench, pipeline, signed, port)
    try:
        bench.warm_up(port)
        idle = lambda m: m.get("fogline_outbox_records", 0) == 0  # noqa: E731
        deadline = time.monotonic() + 30
        while not idle(gt.scrape(port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        count0 = gt.scrape(port)["fogline_messages_in_total"]
        acked0 = sum(bench.cloud.records.values()) if bench.cloud else 0
        with gt.frozen(proc.pid):
            bench.publish(n, 1, f"sg{int(signed)}")
            t0, cpu0 = time.monotonic(), gt.proc_cpu(proc.pid)
        t_in = cpu_in = 0.0
        while True:
            now, m = time.monotonic(), gt.scrape(port)
            if not t_in and m["fogline_messages_in_total"] - count0 >= n:
                t_in, cpu_in = now, gt.proc_cpu(proc.pid)
            if t_in and idle(m):
                break
            if now - t0 > 300:
                raise RuntimeError(f"the drain did not finish in 300 s: {bench.tmp}")
            time.sleep(bench.args.sample_every)
        t_out, cpu_out = time.monotonic(), gt.proc_cpu(proc.pid)
        acked = sum(bench.cloud.records.values()) - acked0 if bench.cloud else 0
        return {
            "rate_in": n / (t_in - t0),
            "rate_done": n / (t_out - t0),
            "cpu_us": (cpu_out - cpu0) / n * 1e6,
            "cpu_in_us": (cpu_in - cpu0) / n * 1e6,
            "uplink_records": acked,
        }
    finally:
        gt.stop(proc)


def gateway_drains(opts: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    args = gt.parse_args(["--messages", str(opts.messages)])
    bench = gt.Bench(args, tmp)
    pipelines = {"forward_all": tmp / "forward_all.yaml", "factory": gt.PIPELINE}
    pipelines["forward_all"].write_text(FORWARD_ALL)
    results: dict[str, dict[str, Any]] = {}
    try:
        bench.start_broker()
        bench.cloud = gt.CloudAcker(bench.port, gt.GATEWAY_ID)
        for name, path in pipelines.items():
            if name not in opts.pipeline:
                continue
            runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for _ in range(opts.repeat):
                for signed in (False, True):
                    r = drain_once(bench, path, signed)
                    runs[signed].append(r)
                    gt.log(
                        f"  {name:11} signing {'on ' if signed else 'off'}: in "
                        f"{r['rate_in']:,.0f}/s, done {r['rate_done']:,.0f}/s, "
                        f"{r['cpu_us']:.2f} µs CPU/reading, {r['uplink_records']:,.0f} records up"
                    )
            results[name] = {
                ("on" if signed else "off"): {
                    **{key: statistics.median(r[key] for r in rs) for key in rs[0]},
                    "cpu_us_min": min(r["cpu_us"] for r in rs),
                }
                for signed, rs in runs.items()
            }
            # Each signed run against the unsigned run just before it: load from elsewhere
            # drifts over minutes, a pair shares it.
            pairs = list(zip(runs[False], runs[True], strict=True))
            extra = [on["cpu_us"] - off["cpu_us"] for off, on in pairs]
            results[name]["paired"] = {
                "cpu_us": statistics.mean(extra),
                "cpu_us_se": statistics.stdev(extra) / len(extra) ** 0.5 if len(extra) > 1 else 0,
                "cpu_pct": 100
                * statistics.mean(extra)
                / statistics.mean(r["cpu_us"] for r in runs[False]),
                "rate_pct": 100
                * statistics.median(on["rate_done"] / off["rate_done"] - 1 for off, on in pairs),
            }
    finally:
        bench.close()
    return results


# -- 2. per batch, in process ----------------------------------------------------------------


TRUST_CPU = [0.0]  # CPU seconds inside `CloudTrust.open` and `check_chains`
SIGN_CPU = [0.0]  # inside the outbox's chain (`_linked`, `_hash_at`, `_prune_chain`), `sign`


def _counted(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        t0 = time.process_time()
        try:
            return fn(*args)
        finally:
            into[0] += time.process_time() - t0

    return wrapper


def _spent(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) that `fn` took."""
    t0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - t0, time.perf_counter() - w0


def uplink_batches(
    tmp: Path, kind: str, records: int, batch: int, signer: Any
) -> tuple[float, list[bytes]]:
    """CPU seconds per record for append + group commit + read + encode + compress + ack
    (+ chain and signature), and the payloads made. With a signer, the time inside the
    chain's and the signature's own functions is added to SIGN_CPU (an upper bound:
    `_linked` also builds the rows an unsigned outbox builds)."""
    from fogline import signing  # noqa: PLC0415
    from fogline.envelope import compress  # noqa: PLC0415
    from gateway.clock import SystemClock  # noqa: PLC0415
    from gateway.metrics import Metrics  # noqa: PLC0415
    from gateway.outbox import Outbox  # noqa: PLC0415
    from gateway.uplink import Uplink  # noqa: PLC0415

    box = Outbox(tmp / f"outbox-{time.monotonic_ns()}.db")
    if signer is None:
        box._linked = lambda appends: [  # type: ignore[method-assign]  # noqa: SLF001
            (p.seq, p.cls, p.device, p.data, p.created, None) for p in appends
        ]
    else:
        for name in ("_linked", "_hash_at", "_prune_chain"):
            setattr(box, name, _counted(getattr(box, name), SIGN_CPU))
        signer = signing.Signer(signer.key)
        signer.sign = _counted(signer.sign, SIGN_CPU)  # type: ignore[method-assign]
    uplink = Uplink("gw1", box, Metrics(), SystemClock())
    uplink.signer = signer
    shape = SHAPES[kind]
    payloads: list[bytes] = []

    def run() -> None:
        for i in range(records):
            box.append(kind, f"line-1/m-{i % 40:02d}", {**shape, "ts": 1.7e9 + i})
            if i % 1000 == 999:
                box.flush()
        box.flush()
        cursor = 0
        while True:
            if signer is None:
                rows, link = box.read(kind, cursor, batch, 1 << 30), None
            else:
                rows, link = box.read_linked(kind, cursor, batch, 1 << 30)
            if not rows:
                break
            payloads.append(compress(uplink._encode(kind, rows, link)))  # noqa: SLF001
            cursor = rows[-1][0]
            box.ack([(rows[0][0], cursor)])  # the cloud's ack, applied with the next group
            if len(payloads) % 2 == 0:
                box.flush()

    seconds, _ = _spent(run)
    box.close()
    return seconds / records, payloads


def ingest(tmp: Path, kind: str, payloads: list[bytes], key: Any) -> tuple[float, float]:
    """CPU and wall seconds per record through `Ingest._drain`, 32 messages per drain (the
    wall time holds the commits' fsyncs: `synchronous=FULL`)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    from cloud.db import make_engine, migrate  # noqa: PLC0415
    from cloud.ingest import Ingest  # noqa: PLC0415
    from cloud.metrics import CloudMetrics  # noqa: PLC0415
    from cloud.provision import add_gateway  # noqa: PLC0415
    from cloud.store import Store  # noqa: PLC0415
    from cloud.trust import CloudTrust  # noqa: PLC0415
    from fogline import signing  # noqa: PLC0415
    from fogline.envelope import uplink_topic  # noqa: PLC0415
    from fogline.urls import parse_broker_url  # noqa: PLC0415

    engine = make_engine(f"sqlite:///{tmp / f'cloud-{time.monotonic_ns()}.db'}")
    migrate(engine)
    trust = None
    if key is not None:
        cloud_key = Ed25519PrivateKey.generate()
        add_gateway(engine, "gw1", cloud_key, public_key=signing.public_text(key))
        trust = CloudTrust(engine, signing.Signer(cloud_key), allow_unregistered=False)
        trust.open = _counted(trust.open, TRUST_CPU)  # type: ignore[method-assign]
        trust.check_chains = _counted(trust.check_chains, TRUST_CPU)  # type: ignore[method-assign]
    broker = parse_broker_url("mqtt://127.0.0.1:1")
    ingest = Ingest(Store(engine), broker, "bench", CloudMetrics(), trust=trust)
    messages = [(uplink_topic("gw1", kind), p) for p in payloads]
    stored = 0

    def run() -> None:
        nonlocal stored
        for i in range(0, len(messages), 32):
            outcome = ingest._drain(messages[i : i + 32])  # noqa: SLF001
            stored += sum(outcome.report.stored.values())

    cpu, wall = _spent(run)
    engine.dispose()
    if stored == 0:
        raise RuntimeError(f"nothing stored from the {kind} batches ({'signed' if key else ''})")
    return cpu / stored, wall / stored


def per_batch(opts: argparse.Namespace, tmp: Path) -> dict[str, dict[str, float]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    from fogline import signing  # noqa: PLC0415

    key = Ed25519PrivateKey.generate()
    signer = signing.Signer(key)
    out: dict[str, dict[str, float]] = {}
    for kind in SHAPES:
        gw: dict[bool, list[float]] = {False: [], True: []}
        cloud: dict[bool, list[float]] = {False: [], True: []}
        walls: dict[bool, list[float]] = {False: [], True: []}
        sizes: list[int] = []
        trust: list[float] = []  # CPU seconds per record inside the trust checks
        inside: list[float] = []  # CPU seconds per record inside the chain and signature
        for _ in range(opts.rounds):
            for signed in (False, True):
                before_sign = SIGN_CPU[0]
                seconds, payloads = uplink_batches(
                    tmp, kind, opts.records, opts.batch, signer if signed else None
                )
                gw[signed].append(seconds)
                if signed:
                    inside.append((SIGN_CPU[0] - before_sign) / opts.records)
                before = TRUST_CPU[0]
                cpu, wall = ingest(tmp, kind, payloads, key if signed else None)
                cloud[signed].append(cpu)
                walls[signed].append(wall)
                if signed:
                    trust.append((TRUST_CPU[0] - before) / opts.records)
                sizes.append(len(payloads[0]))
        g0, g1 = statistics.median(gw[False]), statistics.median(gw[True])
        c0, c1 = statistics.median(cloud[False]), statistics.median(cloud[True])
        out[kind] = {
            "gateway_us_off": g0 * 1e6,
            "gateway_us_on": g1 * 1e6,
            "cloud_us_off": c0 * 1e6,
            "cloud_us_on": c1 * 1e6,
            "cloud_wall_us_off": statistics.median(walls[False]) * 1e6,
            "cloud_wall_us_on": statistics.median(walls[True]) * 1e6,
            "payload_bytes": float(statistics.median(sizes)),
            "trust_us": statistics.median(trust) * 1e6,
            "sign_us": statistics.median(inside) * 1e6,
        }
        gt.log(
            f"  {kind:6}: gateway uplink path {g0 * 1e6:.2f} -> {g1 * 1e6:.2f} µs/record "
            f"(+{(g1 - g0) * opts.batch * 1e6:.0f} µs per batch of {opts.batch}; inside the chain "
            f"and signature {out[kind]['sign_us']:.2f} µs/record); cloud ingest "
            f"{1 / c0:,.0f} -> {1 / c1:,.0f} records/s of CPU ({(c1 / c0 - 1):+.1%}); inside "
            f"the trust checks {out[kind]['trust_us'] * opts.batch:.0f} µs per batch, "
            f"{out[kind]['trust_us'] / (c1 * 1e6):.1%} of the verified ingest"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--unsigned-gateway"]:
        return unsigned_gateway(argv[1:])
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small samples, one round")
    p.add_argument("--messages", type=int, help="readings per gateway drain (default 100000)")
    p.add_argument("--repeat", type=int, help="gateway drains per variant (default 5)")
    p.add_argument("--records", type=int, help="records per in-process round (default 20000)")
    p.add_argument("--batch", type=int, default=500, help="records per batch (the uplink's)")
    p.add_argument("--rounds", type=int, help="in-process rounds per variant (default 5)")
    p.add_argument("--only", choices=["drain", "batch"], help="one part only")
    p.add_argument(
        "--pipeline",
        choices=["forward_all", "factory"],
        action="append",
        help="drain with these pipelines only (repeatable; default both)",
    )
    opts = p.parse_args(argv)
    opts.pipeline = opts.pipeline or ["forward_all", "factory"]
    opts.messages = opts.messages or (20_000 if opts.quick else 100_000)
    opts.repeat = opts.repeat or (1 if opts.quick else 5)
    opts.records = opts.records or (5_000 if opts.quick else 20_000)
    opts.rounds = opts.rounds or (1 if opts.quick else 5)
    with tempfile.TemporaryDirectory(prefix="fogline-signing-") as name:
        tmp = Path(name)
        if opts.only in (None, "batch"):
            gt.log(f"per batch, in process ({opts.records:,} records, {opts.rounds} rounds):")
            batches = per_batch(opts, tmp)
        if opts.only in (None, "drain"):
            gt.log(f"gateway QoS 1 drain ({opts.messages:,} readings, {opts.repeat} runs each):")
            drains = gateway_drains(opts, tmp)
    if opts.only in (None, "drain"):
        print("\n| pipeline | signing off | signing on | cost |\n| --- | --- | --- | --- |")
        for name, r in drains.items():
            off, on = r["off"], r["on"]
            for key, label in (("rate_in", "readings in"), ("rate_done", "all acked")):
                cost = 1 - on[key] / off[key]
                print(f"| {name}, {label} | {off[key]:,.0f}/s | {on[key]:,.0f}/s | {cost:.1%} |")
            for key, label in (("cpu_us", "median"), ("cpu_us_min", "least")):
                cost = on[key] / off[key] - 1
                print(
                    f"| {name}, gateway CPU per reading ({label}) | {off[key]:.2f} µs | "
                    f"{on[key]:.2f} µs | {cost:+.1%} |"
                )
            pair = r["paired"]
            print(
                f"| {name}, paired (each on run with the off run before it) | | | CPU "
                f"{pair['cpu_us']:+.2f} ± {pair['cpu_us_se']:.2f} µs per reading "
                f"({pair['cpu_pct']:+.1f}%), all-acked rate {pair['rate_pct']:+.1f}% (median) |"
            )
    if opts.only in (None, "batch"):
        print(
            "\n| records | gateway uplink path, µs/record | gateway, inside the chain and "
            "signature | cloud ingest, records/s of CPU "
            "| cloud ingest, records/s (wall) | cloud, inside the trust checks |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for kind, b in batches.items():
            g = b["gateway_us_on"] / b["gateway_us_off"] - 1
            c0, c1 = 1e6 / b["cloud_us_off"], 1e6 / b["cloud_us_on"]
            w0, w1 = 1e6 / b["cloud_wall_us_off"], 1e6 / b["cloud_wall_us_on"]
            print(
                f"| {kind} ({b['payload_bytes']:,.0f} B per batch) | {b['gateway_us_off']:.2f} "
                f"-> {b['gateway_us_on']:.2f} ({g:+.1%}) | {b['sign_us']:.2f} µs/record, "
                f"{b['sign_us'] / b['gateway_us_on']:.1%} | {c0:,.0f} -> {c1:,.0f} "
                f"({1 - c1 / c0:.1%} less) | {w0:,.0f} -> {w1:,.0f} ({1 - w1 / w0:.1%} less) | "
                f"{b['trust_us'] * opts.batch:.0f} µs per batch, "
                f"{b['trust_us'] / b['cloud_us_on']:.1%} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
