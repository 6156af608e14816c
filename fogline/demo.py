"""`fogline demo`: the whole platform on one machine, live.

A private mosquitto; the cloud (SQLite in a temporary folder, API on a free port); a
gateway running the factory pipeline; and a simulated line of eight machines
(`fogline devices factory`). After 15 s machine m-03 starts to overheat and the gateway
stops it within milliseconds; after 70 s m-06 develops a bearing fault: the diagnosis
model on the gateway names it within a window or two (windows it is unsure of go to the
cloud's model as escalations), and the vibration-anomaly alert fires once the anomaly
scores have warmed up. Every action, alert, escalation and digest is printed as it
happens; the console (sign-in printed at start) shows it live,
the API too (a token is printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cloud import people
from cloud.app import Cloud, CloudOptions
from fogline import demo_trust
from fogline.envelope import decode_batch
from fogline.mqtt import MqttLink
from fogline.urls import parse_broker_url
from gateway.app import Gateway, GatewayOptions
from gateway.spec import load_pipeline

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "factory.yaml"
FAULTS = "overheating:m-03@15s,bearing:m-06@70s"

log = logging.getLogger("fogline.demo")
T = TypeVar("T")


DEMO_USER = "demo"


def _demo_user(cloud: Cloud) -> tuple[str, str]:
    """An admin for this run only: a fresh random password and API token, printed once."""
    password = secrets.token_urlsafe(9)
    now = time.time()
    people.add_user(cloud.engine, DEMO_USER, "admin", password, now)
    return password, people.add_token(cloud.engine, DEMO_USER, "demo", now)[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_broker(workdir: Path, extra: str = "") -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not shutil.which(binary):
        raise SystemExit("fogline demo needs mosquitto: apt-get install -y mosquitto")
    port = _free_port()
    log.debug("starting mosquitto on port %d", port)
    conf = workdir / "mosquitto.conf"
    # Queue for a gateway that holds acknowledgements until its commit (gateway/delivery.py).
    settings = "persistence false\nset_tcp_nodelay true\nmax_queued_messages 100000\n"
    conf.write_text(f"listener {port} 127.0.0.1\n{settings}{extra}")
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - a fork and exec: see _end
        [binary, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Out of the terminal's process group: Ctrl-C reaches the demo alone, which stops
        # the devices, the gateway and the cloud while their broker is still there.
        start_new_session=True,
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return proc, port
            await asyncio.sleep(0.02)
    except BaseException:  # Ctrl-C while it starts: its own session keeps it from the signal
        await _end(proc)
        raise
    await _end(proc)
    raise SystemExit("mosquitto did not start")


async def _end(proc: subprocess.Popen[bytes]) -> None:
    """Terminate it and wait. The demo's children are plain `Popen`s: asyncio's own race a
    child watcher thread against `Popen.poll` over who reaps the child (CPython gh-86276),
    which a Ctrl-C at the wrong moment turned into a WARNING on the demo's way out."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it may have just exited
            proc.terminate()
    await asyncio.to_thread(proc.wait)


async def _in_thread(work: Callable[[], T]) -> T:
    """`work` in a thread; a Ctrl-C meanwhile waits for it to end, so that the temporary
    folder it writes into is not removed under it."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _show(topic: str, payload: bytes, start: float) -> None:
    at = f"[{time.monotonic() - start:6.1f}s]"
    if topic.endswith("/actions"):
        print(f"{at} ACTION  {topic}: {payload.decode()}")
        return
    batch = decode_batch(payload)
    for rec in batch["records"]:
        data = rec["data"]
        if batch["kind"] == "alert":
            state = f"{data['severity']} {data['state']}"
            print(f"{at} ALERT   #{rec['seq']} {state}: {data['message']}")
        elif batch["kind"] == "escalation":
            print(
                f"{at} ESCALATE #{rec['seq']} {rec['device']}: the edge is unsure "
                f"({data['label']} at {data['confidence']:.0%}, entropy {data['entropy']:.2f}); "
                "the cloud's model decides"
            )
        elif batch["kind"] == "digest":
            print(
                f"{at} digest  #{rec['seq']} {rec['device']} n={data['count']} "
                f"vib_rms={data['vibration_rms']:.2f} temp_max={data['temperature_max']:.1f}"
            )


async def run_demo(duration: float) -> int:
    with tempfile.TemporaryDirectory(prefix="fogline-demo-") as tmp:
        db_url = f"sqlite:///{tmp}/cloud.db"
        log.debug("setting up the broker's users and provisioning %s", demo_trust.GATEWAY)
        trust = await _in_thread(lambda: demo_trust.setup(Path(tmp), db_url))
        broker, port = await _start_broker(Path(tmp), trust.broker_conf())
        url = parse_broker_url(trust.url("fogline-cloud", port))
        edge = parse_broker_url(trust.url("demo-edge", port))
        start = time.monotonic()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        devices: subprocess.Popen[bytes] | None = None
        try:
            cloud = Cloud(
                CloudOptions(
                    url,
                    db_url,
                    http_port=0,
                    replica="demo",
                    signing_key=trust.cloud_key,
                    allow_unregistered=False,
                    warn_no_users=False,
                )
            )
            gateway = Gateway(
                GatewayOptions(
                    load_pipeline(PIPELINE),
                    edge,
                    parse_broker_url(f"mqtt://127.0.0.1:{port}"),  # its identity logs it in
                    demo_trust.GATEWAY,
                    Path(tmp) / "gw",
                    status=False,
                    identity=trust.identity,
                )
            )
            viewer = MqttLink(
                parse_broker_url(trust.url("demo-viewer", port)),
                "fogline-demo-viewer",
                name="viewer",
                subscriptions=[
                    ("fogline/demo-gw/up/alert", 1),
                    ("fogline/demo-gw/up/digest", 1),
                    ("fogline/demo-gw/up/escalation", 1),
                    ("factory/+/+/actions", 1),
                ],
                on_message=lambda t, p: _show(t, p, start),
            )
            async with cloud, gateway, viewer:
                api = f"http://127.0.0.1:{cloud.http_port}"
                password, token = await asyncio.to_thread(_demo_user, cloud)
                print(f"fogline demo: broker mqtt://127.0.0.1:{port}, pipeline {PIPELINE.name}")
                print(f"  the console: {api}/  sign in as {DEMO_USER} / {password}")
                print(f"  the gateway: {api}/gateways/{demo_trust.GATEWAY} (health, gaps, models)")
                print(
                    f"  the API: curl -H 'Authorization: Bearer {token}' {api}/api/alerts "
                    f"(also /api/escalations, /api/inference; reference at {api}/docs)"
                )
                topics = "-t 'fogline/#' -t 'factory/+/+/actions'"
                viewer_login = f"-u demo-viewer -P {trust.passwords['demo-viewer']}"
                print(f"  the wire: mosquitto_sub -p {port} {viewer_login} -v {topics}")
                print(
                    f"  trust: every party has its own broker user; {demo_trust.GATEWAY} may "
                    f"only write fogline/{demo_trust.GATEWAY}/up/# and read its down/#, signs "
                    f"each batch (key {gateway.uplink.signer.kid if gateway.uplink.signer else '-'}"
                    "), and takes only acks and models the cloud signed"
                )
                print(f"  faults: {FAULTS}; Ctrl-C stops")
                devices = subprocess.Popen(  # noqa: S603, ASYNC220 - see _end
                    [sys.executable, "-m", "fogline.cli", "--log-level", "WARNING",
                     "devices", "factory", "--count", "8", "--rate", "1",
                     "--qos", "1", "--faults", FAULTS], stdout=subprocess.DEVNULL,
                    # the URL holds a password: in the environment, not on `ps`
                    env={**os.environ, "FOGLINE_BROKER": trust.url("demo-devices", port)},
                    start_new_session=True,  # Ctrl-C is the demo's to pass on, see _start_broker
                )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), duration or None)
        finally:
            for proc in (devices, broker):
                if proc is not None:
                    await _end(proc)
    print("fogline demo: stopped")
    return 0
