"""The console's two numbers: (1) from the cloud's commit of a raised alert to its row in a
connected browser (Chromium, live list over SSE), p50/p99; (2) server-side render time of
the alert list, an alert page and the gateway pages with a large store.

    python bench/console_bench.py latency [--alerts 200]
    python bench/console_bench.py edge [--alerts 200]
    python bench/console_bench.py streams [--browsers 100 --rounds 10]
    python bench/console_bench.py render --db sqlite:////tmp/big.db|postgresql+psycopg://... \
        [--alerts 100000 --gateways 1000 --digests 1000000]

All run the real `Cloud` (uvicorn, ingest's store, the live feed) in this process. `edge`
adds two private mosquittos (the edge broker and the cloud's), a real `Gateway` in this
process between them, and a device publishing readings on the edge broker; the others
give the cloud a broker URL that points nowhere (nothing there needs one).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import async_playwright
from sqlalchemy import insert, select, text, update

from cloud import people
from cloud.app import Cloud, CloudOptions
from cloud.models import Activity, Alert, Digest, Gateway, Health
from cloud.parse import parse_message
from fogline.envelope import encode_batch, uplink_topic
from fogline.urls import parse_broker_url

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
PHASE = 25  # drains per half-round of `streams`
PASSWORD = "bench password"  # noqa: S105 - a throwaway user of a throwaway store


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def options(db: str, **kw: Any) -> CloudOptions:
    return CloudOptions(
        parse_broker_url("mqtt://127.0.0.1:9"), db, http_port=0, replica="bench",
        warn_no_users=False, **kw,
    )  # fmt: skip


def raised(n: int, now: float) -> Any:
    record = {
        "machine": f"m-{n % 8}", "rule": "hot", "severity": "critical", "state": "raised",
        "alert_id": f"bench/{n}", "raised_at": now, "cleared_at": None,
        "message": f"m-{n % 8} at 97.{n % 10} °C", "values": {"temperature": 97.0}, "ts": now,
    }  # fmt: skip
    return parse_message(
        uplink_topic("gw1", "alert"), encode_batch("gw1", "alert", [(n, "line-1/m-0", record)], now)
    )


def drain(n: int, now: float) -> list[Any]:
    """What ingest writes in one transaction: a batch of 500 digests and one alert."""
    seq = 1_000_000 + n * 501
    digests = [
        (seq + i, f"line-1/m-{i % 8}",
         {"window_start": now - 10, "window_end": now, "count": 10, "temperature_mean": 61.0})
        for i in range(500)
    ]  # fmt: skip
    batch = parse_message(
        uplink_topic("gw1", "digest"), encode_batch("gw1", "digest", digests, now)
    )
    return [batch, raised(seq + 500, now)]


async def sign_in(page: Any) -> None:
    await page.goto("/login")
    await page.get_by_label("Name").fill("bench")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/alerts")


async def live_alerts(pw: Any, cloud: Cloud) -> tuple[Any, Any]:
    """Chromium signed in as a viewer on the alert list, once its live stream is up."""
    people.add_user(cloud.engine, "bench", "viewer", PASSWORD, time.time())
    browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    context = await browser.new_context(
        base_url=f"http://127.0.0.1:{cloud.http_port}", bypass_csp=True
    )
    page = await context.new_page()
    await sign_in(page)
    await page.wait_for_function(
        "document.getElementById('live-status').textContent.startsWith('Live:')"
    )
    return browser, page


async def latency(count: int, tmp: Path) -> None:
    db = f"sqlite:///{tmp / 'latency.db'}"
    async with Cloud(options(db)) as cloud, async_playwright() as pw:
        browser, page = await live_alerts(pw, cloud)
        # Each new row notes when it entered the DOM (the browser's wall clock = ours).
        await page.evaluate("""() => {
            window.seen = {};
            new MutationObserver(() => {
              for (const r of document.querySelectorAll('tr[data-id]'))
                if (!(r.dataset.id in window.seen)) window.seen[r.dataset.id] = performance.timeOrigin + performance.now();
            }).observe(document.getElementById('alert-results'), {childList: true, subtree: true});
        }""")
        committed: dict[int, float] = {}
        for n in range(1, count + 1):
            await asyncio.to_thread(cloud.store.write, [raised(n, time.time())])
            committed[n] = time.time() * 1000  # the write returned: committed
            await page.wait_for_function(
                f"Object.keys(window.seen).includes('{n}')", timeout=10_000
            )
            await asyncio.sleep(random.uniform(0.05, 0.4))  # not in step with the poll
        seen = await page.evaluate("window.seen")
        delays = [seen[str(n)] - committed[n] for n in committed]
        print(f"commit -> row in the browser, {count} alerts, live poll "
              f"{cloud.options.live_interval * 1000:.0f} ms: p50 {pct(delays, 50):.0f} ms, "
              f"p90 {pct(delays, 90):.0f} ms, p99 {pct(delays, 99):.0f} ms, "
              f"max {max(delays):.0f} ms")  # fmt: skip
        await browser.close()


EDGE_PIPELINE = """
name: bench_edge
key: [machine]
sources:
  - mqtt: {topics: ["plant/{machine}/t"], qos: 1}
steps:
  - validate:
      id: readings
      fields: {temperature: {type: number}}
  - alert:
      id: alerts
      rules:
        - {name: hot, raise: temperature > 90, clear: temperature < 80, severity: critical,
           message: "{machine} is hot"}
outputs:
  - uplink: {from: alerts, kind: alert}
"""


@contextmanager
def mosquitto(workdir: Path, name: str) -> Iterator[str]:
    """A private mosquitto on a free port (persistence off); its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = workdir / f"{name}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"mosquitto ({name}) did not start") from None
                time.sleep(0.05)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def edge(count: int, tmp: Path) -> None:
    """From a reading published on the edge broker to the alert's row in a connected
    browser, through a real gateway (its rule raises, its outbox and uplink send) and the
    cloud (ingest commits, the live feed, the SSE stream): the issue's "within 1 s + the
    uplink latency of the edge's raise". Each alert is a new machine's first hot reading."""
    import paho.mqtt.client as paho  # noqa: PLC0415 - only this mode publishes

    from gateway.app import Gateway as EdgeGateway  # noqa: PLC0415
    from gateway.app import GatewayOptions  # noqa: PLC0415
    from gateway.spec import parse_pipeline  # noqa: PLC0415

    with mosquitto(tmp, "edge") as edge_url, mosquitto(tmp, "cloud") as cloud_url:
        cloud_options = CloudOptions(
            parse_broker_url(cloud_url), f"sqlite:///{tmp / 'edge.db'}", http_port=0,
            replica="bench", warn_no_users=False,
        )  # fmt: skip
        gateway_options = GatewayOptions(
            parse_pipeline(EDGE_PIPELINE, "bench-edge.yaml"), parse_broker_url(edge_url),
            parse_broker_url(cloud_url), "gw-edge", tmp / "gw-edge", status=False,
        )  # fmt: skip
        async with (
            Cloud(cloud_options) as cloud,
            EdgeGateway(gateway_options),
            async_playwright() as pw,
        ):
            browser, page = await live_alerts(pw, cloud)
            await page.evaluate("""() => {
                window.seen = {};
                new MutationObserver(() => {
                  for (const r of document.querySelectorAll('tr[data-id]')) {
                    const m = r.textContent.match(/(b-\\d+) is hot/);
                    if (m && !(m[1] in window.seen)) window.seen[m[1]] = performance.timeOrigin + performance.now();
                  }
                }).observe(document.getElementById('alert-results'), {childList: true, subtree: true});
            }""")
            device = paho.Client(
                paho.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}"
            )
            device.connect("127.0.0.1", int(edge_url.rsplit(":", 1)[1]))
            device.loop_start()
            published: dict[str, float] = {}
            for n in range(1, count + 1):
                machine = f"b-{n:04d}"
                published[machine] = time.time() * 1000
                device.publish(f"plant/{machine}/t", '{"temperature": 95.0}', qos=1)
                await page.wait_for_function(f"'{machine}' in window.seen", timeout=15_000)
                await asyncio.sleep(random.uniform(0.05, 0.4))  # not in step with the poll
            device.loop_stop()
            device.disconnect()
            seen = await page.evaluate("window.seen")
            with cloud.engine.connect() as conn:
                stored = {
                    device_: (raised_at * 1000, at * 1000)
                    for device_, raised_at, at in conn.execute(
                        select(Alert.device, Alert.raised_at, Activity.at)
                        .join(Activity, Activity.alert == Alert.id)
                        .where(Activity.action == "raised")
                    )
                }
            await browser.close()
    rows = {
        "reading published -> row in the browser": [seen[m] - published[m] for m in published],
        "raised at the edge -> row in the browser": [seen[m] - stored[m][0] for m in published],
        "raised at the edge -> committed by the cloud (uplink)": [
            stored[m][1] - stored[m][0] for m in published
        ],
        "committed -> row in the browser": [seen[m] - stored[m][1] for m in published],
    }
    print(f"{count} alerts, one reading each through a gateway and the cloud, live poll "
          f"{cloud_options.live_interval * 1000:.0f} ms")  # fmt: skip
    for name, values in rows.items():
        print(f"  {name:55s} p50 {pct(values, 50):5.0f} ms  p90 {pct(values, 90):5.0f} ms  "
              f"p99 {pct(values, 99):5.0f} ms  max {max(values):5.0f} ms")  # fmt: skip


def seed(cloud: Cloud, alerts: int, gateways: int, digests: int) -> None:
    """Rows straight into the tables (ingest's own path is benchmarked elsewhere); on
    PostgreSQL generated by the server (`generate_series`), with every index in place, in
    transactions of 1M rows that each report their rate, resuming where a run stopped."""
    if cloud.engine.dialect.name == "postgresql":
        seed_sql(cloud, alerts, gateways, digests)
    else:
        seed_sqlite(cloud, alerts, gateways, digests)
    seed_dense(cloud, time.time())
    seed_health(cloud, time.time())


def seed_health(cloud: Cloud, now: float) -> None:
    """Two health records per gateway 30 s apart, the later one on its row, once: what the
    gateways list reads for its rates (one lookup of the earlier record per gateway)."""
    with cloud.engine.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM health")).scalar_one():
            return
        ids = [g for (g,) in conn.execute(select(Gateway.id))]
        rows = []
        for g in ids:
            for seq, ts, n in ((20_000, now - 40, 1000), (20_001, now - 10, 1300)):
                data = {"ts": ts, "health_every": 30.0, "uptime_s": 3600.0,
                        "messages_in": {"mqtt": n * 10}, "outputs": {"uplink": n}}  # fmt: skip
                rows.append({"gateway_id": g, "seq": seq, "ts": ts, "data": data})
        conn.execute(insert(Health), rows)
        latest = {r["gateway_id"]: r for r in rows if r["seq"] == 20_001}
        for g, r in latest.items():
            conn.execute(
                update(Gateway)
                .where(Gateway.id == g)
                .values(health=r["data"], health_seq=r["seq"], health_ts=r["ts"], health_every=30.0)
            )


def seed_sqlite(cloud: Cloud, alerts: int, gateways: int, digests: int) -> None:
    now = time.time()
    rng = random.Random(7)
    states = ["open"] * 5 + ["acknowledged"] * 2 + ["cleared"] * 3 + ["resolved"] * 40
    with cloud.engine.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM alerts")).scalar_one() >= alerts:
            return
        conn.execute(insert(Gateway), [
            {"id": f"gw-{g:04d}", "first_seen": now - 86400, "last_seen": now - rng.uniform(0, 600),
             "received": 10_000, "max_seq": 10_000, "evicted": {}, "expired": {},
             "outbox_depth": rng.randint(0, 500), "outbox_bytes": rng.randint(0, 10**6),
             "pipeline": "factory", "version": "0.1.0"}
            for g in range(gateways)
        ])  # fmt: skip
        for start in range(0, alerts, 10_000):
            conn.execute(insert(Alert), [
                {"gateway_id": f"gw-{i % gateways:04d}", "alert_id": f"a/{i}", "raised_seq": i + 1,
                 "cleared_seq": None, "device": f"line-{i % 7}/m-{i % 50:02d}",
                 "rule": rng.choice(["hot", "vibration", "sensor_gap", "dry_soil"]),
                 "severity": rng.choice(["info", "warning", "warning", "critical"]),
                 "state": rng.choice(states), "raised_at": now - (alerts - i) * 30,
                 "cleared_at": None, "acknowledged_at": None, "message": f"reading {i} out of range",
                 "payload": {"raised": {"values": {"temperature": 97.5}}}, "updated_at": now}
                for i in range(start, min(alerts, start + 10_000))
            ])  # fmt: skip
        for start in range(0, digests, 50_000):
            conn.execute(insert(Digest), [
                {"gateway_id": f"gw-{i % gateways:04d}", "seq": 100_000 + i,
                 "device": f"line-{i % 7}/m-{i % 50:02d}", "window_start": now - (digests - i) - 10,
                 "window_end": now - (digests - i), "ts": None,
                 "metrics": {"count": 10, "temperature_mean": 60 + rng.random(), "temperature_max": 61.0}}
                for i in range(start, min(digests, start + 50_000))
            ])  # fmt: skip


GATEWAYS_SQL = """
INSERT INTO gateways (id, first_seen, last_seen, received, max_seq, evicted, expired,
                      outbox_depth, outbox_bytes, pipeline, version)
SELECT 'gw-' || lpad(g::text, 4, '0'), :now - 86400, :now - random() * 600, 10000, 10000,
       '{}', '{}', (random() * 500)::int, (random() * 1e6)::int, 'factory', '0.1.0'
FROM generate_series(0, :n - 1) AS g
"""
ALERTS_SQL = """
INSERT INTO alerts (gateway_id, alert_id, raised_seq, device, rule, severity, state,
                    raised_at, message, payload, updated_at)
SELECT 'gw-' || lpad((i % :gateways)::text, 4, '0'), 'a/' || i, i + 1,
       'line-' || i % 7 || '/m-' || lpad((i % 50)::text, 2, '0'),
       (ARRAY['hot', 'vibration', 'sensor_gap', 'dry_soil'])[1 + floor(random() * 4)::int],
       (ARRAY['info', 'warning', 'warning', 'critical'])[1 + floor(random() * 4)::int],
       CASE WHEN r < 0.1 THEN 'open' WHEN r < 0.14 THEN 'acknowledged'
            WHEN r < 0.2 THEN 'cleared' ELSE 'resolved' END,
       :now - (:n - i) * 30, 'reading ' || i || ' out of range',
       '{"raised": {"values": {"temperature": 97.5}}}', :now
FROM (SELECT i, random() AS r FROM generate_series(0, :n - 1) AS i) AS s
"""
DIGESTS_SQL = """
INSERT INTO digests (gateway_id, seq, device, window_start, window_end, metrics)
SELECT 'gw-' || lpad((i % :gateways)::text, 4, '0'), 100000 + i,
       'line-' || i % 7 || '/m-' || lpad((i % 50)::text, 2, '0'),
       :now - (:n - i) - 10, :now - (:n - i),
       jsonb_build_object('count', 10, 'temperature_mean', 60 + random(),
                          'temperature_max', 61.0)
FROM generate_series(:lo, :hi - 1) AS i
"""


DENSE = "line-dense/m-00"  # on gw-0007: a week of 10 s windows, what a 7d chart reads
DENSE_DIGESTS = 7 * 8640
DENSE_SQL = """
INSERT INTO digests (gateway_id, seq, device, window_start, window_end, metrics)
SELECT 'gw-0007', 900000000 + i, :device, :now - (:n - i) * 10 - 10, :now - (:n - i) * 10,
       jsonb_build_object('count', 10, 'temperature_mean', 60 + random(),
                          'temperature_min', 59 + random(), 'temperature_max', 61 + random(),
                          'vibration_rms', random())
FROM generate_series(0, :n - 1) AS i
"""


def seed_dense(cloud: Cloud, now: float) -> None:
    """One device with a week of 10 s digests (60,480), once."""
    with cloud.engine.begin() as conn:
        have = conn.execute(
            text("SELECT count(*) FROM digests WHERE device = :d"), {"d": DENSE}
        ).scalar_one()
        if have:
            return
        if conn.dialect.name == "postgresql":
            conn.execute(text(DENSE_SQL), {"now": now, "n": DENSE_DIGESTS, "device": DENSE})
            conn.execute(text("ANALYZE digests"))  # as autovacuum would after such an insert
            return
        rng = random.Random(11)
        conn.execute(insert(Digest), [
            {"gateway_id": "gw-0007", "seq": 900_000_000 + i, "device": DENSE,
             "window_start": now - (DENSE_DIGESTS - i) * 10 - 10,
             "window_end": now - (DENSE_DIGESTS - i) * 10, "ts": None,
             "metrics": {"count": 10, "temperature_mean": 60 + rng.random(),
                         "temperature_min": 59 + rng.random(), "temperature_max": 61 + rng.random(),
                         "vibration_rms": rng.random()}}
            for i in range(DENSE_DIGESTS)
        ])  # fmt: skip


def seed_sql(cloud: Cloud, alerts: int, gateways: int, digests: int) -> None:
    now = time.time()
    with cloud.engine.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM gateways")).scalar_one() < gateways:
            conn.execute(text(GATEWAYS_SQL), {"now": now, "n": gateways})
        if conn.execute(text("SELECT count(*) FROM alerts")).scalar_one() < alerts:
            conn.execute(text(ALERTS_SQL), {"now": now, "n": alerts, "gateways": gateways})
    with cloud.engine.connect() as conn:
        have = conn.execute(text("SELECT coalesce(max(seq) - 99999, 0) FROM digests")).scalar_one()
    step = 1_000_000
    for lo in range(int(have), digests, step):
        hi = min(digests, lo + step)
        started = time.monotonic()
        with cloud.engine.begin() as conn:
            conn.execute(
                text(DIGESTS_SQL),
                {"now": now, "n": digests, "gateways": gateways, "lo": lo, "hi": hi},
            )
        took = time.monotonic() - started
        print(f"  digests {lo:,}-{hi:,}: {took:.0f} s ({(hi - lo) / took:,.0f} rows/s)", flush=True)
    with cloud.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


async def render(db: str, alerts: int, gateways: int, digests: int, runs: int) -> None:
    async with Cloud(options(db)) as cloud:
        started = time.monotonic()
        await asyncio.to_thread(seed, cloud, alerts, gateways, digests)
        print(f"seeded {alerts} alerts, {gateways} gateways, {digests} digests "
              f"({cloud.engine.dialect.name}) in {time.monotonic() - started:.0f} s")  # fmt: skip
        if "bench" not in {n for n, _, _ in people.list_users(cloud.engine)}:
            people.add_user(cloud.engine, "bench", "operator", PASSWORD, time.time())
        base = f"http://127.0.0.1:{cloud.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            page = await http.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None  # noqa: S101 - a script
            await http.post(
                "/login", data={"name": "bench", "password": PASSWORD, "csrf": csrf.group(1)}
            )
            one = (await http.get("/alerts?state=all")).text
            found = re.search(r'href="/alerts/(\d+)"', one)
            alert_id = found.group(1) if found else "1"
            paths = {
                "alert list (default: not resolved)": "/alerts",
                "alert list, all states": "/alerts?state=all",
                "alert list, 1 gateway + severity": "/alerts?state=all&gateway=gw-0007&severity=critical",
                "alert list, live fragment": "/alerts/rows?state=active",
                "alert page": f"/alerts/{alert_id}",
                "gateways (first 200)": "/gateways",
                "gateway page": "/gateways/gw-0007",
                "device page, 6h (10 s digests)": f"/gateways/gw-0007/devices/{DENSE}?range=6h",
                "device page, 24h": f"/gateways/gw-0007/devices/{DENSE}?range=24h",
                "device page, 7d (60,480 digests)": f"/gateways/gw-0007/devices/{DENSE}?range=7d",
                "device page, 1,000 days of sparse digests": "/gateways/gw-0007/devices/line-0/m-07"
                f"?from={time.time() - 1000 * 86400:.0f}",
            }
            for name, path in paths.items():
                times = []
                for _ in range(runs):
                    t = time.perf_counter()
                    response = await http.get(path)
                    times.append((time.perf_counter() - t) * 1000)
                    if response.status_code != 200:
                        raise SystemExit(f"{path}: {response.status_code}")
                print(f"  {name:40s} p50 {pct(times, 50):6.1f} ms  p95 {pct(times, 95):6.1f} ms")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


CLIENTS = """
import asyncio, sys, httpx
# Like console.js on the first page of the list: one stream that carries the list.
async def one(base, cookie, ready):
    async with httpx.AsyncClient(base_url=base, timeout=None, cookies={"fogline_session": cookie}) as c:
        async with c.stream("GET", "/live/alerts", params={"rows": "state=active"}) as r:
            ready.append(1)
            async for _ in r.aiter_bytes():
                pass
async def main(base, cookie, n):
    ready = []
    tasks = [asyncio.create_task(one(base, cookie, ready)) for _ in range(n)]
    while len(ready) < n:
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    await asyncio.gather(*tasks)
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def streams(count: int, rounds: int, tmp: Path) -> None:
    """What `count` connected browsers cost the cloud process and its ingest: drains written
    without and with the streams open, in alternating rounds of `PHASE` (so that other work
    on the machine weighs on both sides alike); the slowdown is the median over rounds of
    each round's ratio of p50s, and the pooled p50s."""
    async with Cloud(options(f"sqlite:///{tmp / 'streams.db'}")) as cloud:
        assert cloud.app is not None  # noqa: S101 - a script
        state = cloud.app.state
        user = people.add_user(cloud.engine, "bench", "viewer", None, time.time())
        cookie, _ = people.open_session(cloud.engine, user, time.time())
        n = 0

        async def phase(writes: list[float]) -> float:
            """`PHASE` drains at random 50-400 ms intervals; the process's CPU meanwhile."""
            nonlocal n
            cpu = time.process_time()
            for _ in range(PHASE):
                n += 1
                t = time.perf_counter()
                await asyncio.to_thread(cloud.store.write, drain(n, time.time()))
                writes.append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(random.uniform(0.05, 0.4))
            return time.process_time() - cpu

        await phase([])  # warm up: the first drains create the tables' pages
        without: list[float] = []
        with_streams: list[float] = []
        ratios: list[float] = []
        cpu = [0.0, 0.0]
        before = peak = rss_mb()
        polls, renders = cloud.feed.polls, state.fragments.renders
        for _ in range(rounds):
            alone: list[float] = []
            cpu[0] += await phase(alone)
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLIENTS, f"http://127.0.0.1:{cloud.http_port}",
                cookie, str(count), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert child.stdout is not None  # noqa: S101 - a script
            await child.stdout.readline()
            open_streams = cloud.feed.watchers
            watched: list[float] = []
            cpu[1] += await phase(watched)
            peak = max(peak, rss_mb())
            child.terminate()
            await child.wait()
            while cloud.feed.watchers:  # noqa: ASYNC110 - a count the server keeps, no event
                await asyncio.sleep(0.05)
            ratios.append(pct(watched, 50) / pct(alone, 50))
            without += alone
            with_streams += watched
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        clients = usage.ru_utime + usage.ru_stime
        changes = PHASE * rounds
        print(f"{open_streams} streams open: RSS {before:.0f} -> {peak:.0f} MB "
              f"(+{peak - before:.1f} MB, {(peak - before) * 1024 / count:.0f} KB each); "
              f"{cloud.feed.polls - polls} live polls, {state.fragments.renders - renders} "
              f"list renderings for {changes} changes while streams were open")  # fmt: skip
        pooled = pct(with_streams, 50) / pct(without, 50) - 1
        print(f"one drain (500 digests + 1 alert, one transaction), {changes} each way in "
              f"{rounds} rounds: without streams p50 {pct(without, 50):.1f} ms, "
              f"with {count} streams p50 {pct(with_streams, 50):.1f} ms (pooled {pooled:+.1%}, "
              f"median of rounds {pct(ratios, 50) - 1:+.1%}); "
              f"p95 {pct(without, 95):.1f} / {pct(with_streams, 95):.1f} ms")  # fmt: skip
        print(f"CPU per drain: cloud process {cpu[0] / changes * 1000:.1f} ms without, "
              f"{cpu[1] / changes * 1000:.1f} ms with streams; the {count} clients "
              f"{clients / changes * 1000:.1f} ms (with starting Python and opening the "
              "streams each round)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--alerts", type=int, default=200)
    ed = sub.add_parser("edge")
    ed.add_argument("--alerts", type=int, default=200)
    st = sub.add_parser("streams")
    st.add_argument("--browsers", type=int, default=100)
    st.add_argument("--rounds", type=int, default=10)
    ren = sub.add_parser("render")
    ren.add_argument("--db", required=True)
    ren.add_argument("--alerts", type=int, default=100_000)
    ren.add_argument("--gateways", type=int, default=1000)
    ren.add_argument("--digests", type=int, default=1_000_000)
    ren.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    if args.what in ("latency", "streams", "edge"):
        import tempfile  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as tmp:
            if args.what == "latency":
                asyncio.run(latency(args.alerts, Path(tmp)))
            elif args.what == "edge":
                asyncio.run(edge(args.alerts, Path(tmp)))
            else:
                asyncio.run(streams(args.browsers, args.rounds, Path(tmp)))
    else:
        asyncio.run(render(args.db, args.alerts, args.gateways, args.digests, args.runs))


if __name__ == "__main__":
    main()
