"""`fogline demo`: a private mosquitto, the factory pipeline, a small simulated plant, and a
live view of what the gateway decides and sends to the cloud.

Eight machines on two lines report 5 times a second. After 15 s machine m-03 starts to
overheat (the gateway stops it within milliseconds); after 70 s, once the anomaly scores
have warmed up on six 10 s windows, m-06 develops a bearing fault: its vibration rises and
the z-score alert fires after two windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import orjson

from fogline.envelope import decode_batch
from fogline.mqtt import MqttLink
from fogline.urls import parse_broker_url
from gateway.app import Gateway, GatewayOptions
from gateway.spec import load_pipeline

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "factory.yaml"
MACHINES = [(f"line-{1 + i // 4}", f"m-{i + 1:02d}") for i in range(8)]
RATE_HZ = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_broker(workdir: Path) -> tuple[asyncio.subprocess.Process, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not shutil.which(binary):
        raise SystemExit("fogline demo needs mosquitto: apt-get install -y mosquitto")
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-c",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc, port
        await asyncio.sleep(0.02)
    raise SystemExit("mosquitto did not start")


def _reading(machine: str, t: float, elapsed: float, rng: random.Random) -> dict[str, float]:
    temperature = 62.0 + 2.0 * math.sin(t / 30) + rng.gauss(0, 0.4)
    vibration = abs(2.0 + rng.gauss(0, 0.15))
    if machine == "m-03" and elapsed > 15:
        temperature += min(40.0, (elapsed - 15) * 4.0)  # overheating
    if machine == "m-06" and elapsed > 70:
        vibration += min(3.0, (elapsed - 70) * 0.3) * abs(math.sin(t * 40))  # bearing defect
    return {"ts": t, "vibration": round(vibration, 3), "temperature": round(temperature, 2)}


def _show(topic: str, payload: bytes, start: float) -> None:
    at = f"[{time.monotonic() - start:6.1f}s]"
    if topic.endswith("/actions"):
        print(f"{at} ACTION  {topic}: {payload.decode()}")
        return
    batch = decode_batch(payload)
    kind = batch["kind"]
    for rec in batch["records"]:
        data = rec["data"]
        if kind == "alert":
            print(
                f"{at} ALERT   #{rec['seq']} {data['severity']} {data['state']}: {data['message']}"
            )
        elif kind == "digest":
            print(
                f"{at} digest  #{rec['seq']} {data['line']}/{data['machine']} n={data['count']} "
                f"vib_rms={data['vibration_rms']:.2f} temp_max={data['temperature_max']:.1f}"
            )


async def run_demo(duration: float) -> int:
    with tempfile.TemporaryDirectory(prefix="fogline-demo-") as tmp:
        broker, port = await _start_broker(Path(tmp))
        url = parse_broker_url(f"mqtt://127.0.0.1:{port}")
        start = time.monotonic()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"fogline demo: mosquitto on port {port}, pipeline {PIPELINE.name}; Ctrl-C stops")
        print(
            f"  watch the wire: mosquitto_sub -p {port} -v -t 'fogline/#' -t 'factory/+/+/actions'"
        )
        try:
            options = GatewayOptions(
                load_pipeline(PIPELINE), url, url, "demo-gw", Path(tmp), status=False
            )
            viewer = MqttLink(
                url,
                "fogline-demo-viewer",
                name="viewer",
                subscriptions=[
                    ("fogline/demo-gw/up/alert", 1),
                    ("fogline/demo-gw/up/digest", 1),
                    ("factory/+/+/actions", 1),
                ],
                on_message=lambda t, p: _show(t, p, start),
            )
            plant = MqttLink(url, "fogline-demo-plant", name="plant")
            async with Gateway(options), viewer, plant:
                rng = random.Random(7)
                while not stop.is_set():
                    elapsed = time.monotonic() - start
                    if duration and elapsed >= duration:
                        break
                    now = time.time()
                    for line, machine in MACHINES:
                        body = orjson.dumps(_reading(machine, now, elapsed, rng))
                        plant.publish(f"factory/{line}/{machine}/telemetry", body, qos=1)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1 / RATE_HZ)
        finally:
            broker.terminate()
            await broker.wait()
    print("fogline demo: stopped")
    return 0
