"""The edge broker as shipped (deploy/mosquitto-edge.conf, deploy/edge-acl, started by
deploy/edge-users.sh), against a real mosquitto: each device has its own user and may only
publish its own readings and read its own commands; the gateway cannot publish a reading.

Each check publishes what the ACL must refuse, then something it allows, from the same
client: mosquitto handles one client's messages in order, so once the allowed one has
arrived the refused one would have arrived before it. No sleep needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from identitykit import Client
from support import eventually, free_port, start_mosquitto

from fogline.mqtt import MqttLink
from fogline.urls import parse_broker_url

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEVICES = ("line-1/m-01", "line-1/m-02", "north/plot-7")
OBSERVER = "look"  # the password of the test's own user, which reads everything


@dataclass
class EdgeBroker:
    port: int
    secrets: Path
    proc: subprocess.Popen[bytes]

    def password(self, user: str) -> str:
        if user == "observer":
            return OBSERVER
        shared = user in ("devices", "gateway")
        return (self.secrets / user if shared else self.secrets / "devices.d" / user).read_text()

    def client(self, user: str, topics: list[str] = ()) -> Client:  # type: ignore[assignment]
        client = Client(self.port, user, self.password(user), topics)
        assert not client.refused, f"{user} could not connect"
        return client


def edge_conf(tmp_path: Path, port: int) -> Path:
    """deploy/mosquitto-edge.conf with the container's paths moved into tmp_path, and an
    observer that reads everything appended to a copy of deploy/edge-acl."""
    acl = tmp_path / "edge-acl"
    acl.write_text((DEPLOY / "edge-acl").read_text() + "\nuser observer\ntopic read #\n")
    text = (DEPLOY / "mosquitto-edge.conf").read_text()
    moved = {
        "password_file": f"password_file {tmp_path / 'auth' / 'passwords'}",
        "acl_file": f"acl_file {acl}",
        "listener": f"listener {port} 127.0.0.1",
        "persistence": "persistence false",
        "persistence_location": "",
    }
    lines = []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        lines.append(moved.get(key, line))
    assert all(re.search(rf"^{k}\b", text, re.MULTILINE) for k in moved), "the shipped conf changed"
    # Tests run as root; mosquitto would drop to its own user, which cannot enter tmp_path.
    if os.geteuid() == 0:
        lines.insert(0, "user root")
    conf = tmp_path / "mosquitto-edge.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeBroker]:
    port = free_port()
    conf = edge_conf(tmp_path, port)
    secrets = tmp_path / "secrets"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "EDGE_AUTH_DIR": str(tmp_path / "auth"),
        "EDGE_SECRETS_DIR": str(secrets),
        "EDGE_CONF": str(conf),
        "EDGE_DEVICES": " ".join(DEVICES),
    }
    proc = start_mosquitto(
        conf, tmp_path / "edge.log", port, ["sh", str(DEPLOY / "edge-users.sh")], env
    )
    # The observer is the test's own user (not shipped): added like the script adds one.
    subprocess.run(
        ["mosquitto_passwd", "-b", str(tmp_path / "auth" / "passwords"), "observer", OBSERVER],
        check=True,
        env=env,
    )
    proc.send_signal(signal.SIGHUP)  # mosquitto reads the password file again
    deadline = time.monotonic() + 5
    while True:
        probe = Client(port, "observer", OBSERVER)
        probe.close()
        if not probe.refused:
            break
        assert time.monotonic() < deadline, "the observer was never let in"
        time.sleep(0.05)
    yield EdgeBroker(port, secrets, proc)
    proc.terminate()
    proc.wait(5)


def wait_for(check, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


def test_each_device_publishes_only_its_own_readings(edge: EdgeBroker) -> None:
    observer = edge.client("observer", ["#"])
    m01 = edge.client("line-1/m-01")
    try:
        m01.publish("factory/line-1/m-02/telemetry", b"as m-02")  # another machine's
        m01.publish("factory/line-2/m-01/telemetry", b"as m-01 of another line")
        m01.publish("factory/line-1/m-01/actions", b"stop myself")  # an action
        m01.publish("factory/line-1/m-02/actions", b"stop m-02")
        m01.publish("fogline/gw1/deadletter", b"x")
        m01.publish("factory/line-1/m-01/telemetry", b"mine")
        assert wait_for(lambda: observer.got("factory/line-1/m-01/telemetry") == [b"mine"])
        assert [t for t, _ in observer.messages] == ["factory/line-1/m-01/telemetry"]
    finally:
        for c in (observer, m01):
            c.close()


def test_each_device_reads_only_its_own_commands(edge: EdgeBroker) -> None:
    m01 = edge.client(
        "line-1/m-01",
        ["factory/line-1/m-01/actions", "factory/line-1/m-02/actions", "factory/+/+/actions"],
    )
    plot = edge.client("north/plot-7", ["farm/+/+/valve/set", "factory/#"])
    gateway = edge.client("gateway")
    try:
        gateway.publish("factory/line-1/m-02/actions", b"stop m-02")
        gateway.publish("farm/north/plot-3/valve/set", b"close plot-3")
        gateway.publish("factory/line-1/m-01/actions", b"stop m-01")
        gateway.publish("farm/north/plot-7/valve/set", b"close plot-7")
        assert wait_for(lambda: plot.got("farm/north/plot-7/valve/set") == [b"close plot-7"])
        assert wait_for(lambda: b"stop m-01" in [p for _, p in m01.messages])
        assert {p for _, p in m01.messages} == {b"stop m-01"}
        assert [p for _, p in plot.messages] == [b"close plot-7"]
    finally:
        for c in (m01, plot, gateway):
            c.close()


def test_the_gateway_cannot_publish_a_reading_and_the_fleet_user_no_action(
    edge: EdgeBroker,
) -> None:
    observer = edge.client("observer", ["#"])
    gateway = edge.client("gateway", ["factory/+/+/telemetry"])
    fleet = edge.client("devices", ["factory/+/+/actions"])
    try:
        gateway.publish("factory/line-1/m-01/telemetry", b"forged reading")
        gateway.publish("factory/line-1/m-01/actions", b"stop")
        assert wait_for(lambda: observer.got("factory/line-1/m-01/actions") == [b"stop"])
        assert wait_for(lambda: fleet.got("factory/line-1/m-01/actions") == [b"stop"])
        # The simulated fleet: readings of any machine, no action.
        fleet.publish("factory/line-1/m-01/actions", b"stop from the fleet")
        fleet.publish("farm/north/plot-7/telemetry", b"a plot's reading")
        fleet.publish("factory/line-1/m-02/telemetry", b"a machine's reading")
        assert wait_for(
            lambda: observer.got("factory/line-1/m-02/telemetry") == [b"a machine's reading"]
        )
        assert observer.got("farm/north/plot-7/telemetry") == [b"a plot's reading"]
        assert observer.got("factory/line-1/m-01/telemetry") == []  # the gateway's forgery
        assert observer.got("factory/line-1/m-01/actions") == [b"stop"]  # not the fleet's
        assert wait_for(
            lambda: gateway.got("factory/line-1/m-02/telemetry") == [b"a machine's reading"]
        )
    finally:
        for c in (observer, gateway, fleet):
            c.close()


async def _refusing_proxy(broker_port: int) -> asyncio.Server:
    """In front of the real broker, a proxy that turns every SUBACK's grant into 0x87 (not
    authorized), as brokers with subscribe ACLs answer; mosquitto's acl_file grants every
    subscription and filters at delivery, so the refusal is injected here."""

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refuse: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readexactly(1)
                length, size, shift = b"", 0, 0
                while True:  # the remaining length, a varint
                    byte = await reader.readexactly(1)
                    length += byte
                    size |= (byte[0] & 0x7F) << shift
                    shift += 7
                    if not byte[0] & 0x80:
                        break
                body = await reader.readexactly(size)
                if refuse and head[0] >> 4 == 9:
                    body = body[:-1] + b"\x87"  # one topic per SUBSCRIBE: its grant is last
                writer.write(head + length + body)
                await writer.drain()
        writer.close()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", broker_port)
        await asyncio.gather(pipe(client_r, broker_w, False), pipe(broker_r, client_w, True))

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_ready_means_subscribed_and_a_refused_subscription_is_not_ready(
    edge: EdgeBroker,
) -> None:
    """Readiness waits for the SUBACK: a reading published the moment the link says ready
    reaches it. A subscription the broker refuses leaves the link connected but not ready,
    with a count (before, such a gateway reported ready and never heard a reading)."""
    topics = [("factory/+/+/telemetry", 1)]
    got: list[bytes] = []
    url = f"mqtt://gateway:{edge.password('gateway')}@127.0.0.1:{{}}"
    gateway = MqttLink(
        parse_broker_url(url.format(edge.port)),
        f"t-{uuid.uuid4().hex[:6]}",
        name="gateway",
        subscriptions=topics,
        on_message=lambda _t, payload: got.append(payload),
    )
    fleet = edge.client("devices")
    proxy = await _refusing_proxy(edge.port)
    deaf = MqttLink(
        parse_broker_url(url.format(proxy.sockets[0].getsockname()[1])),
        f"t-{uuid.uuid4().hex[:6]}",
        name="refused",
        subscriptions=topics,
        wait_connected=2.0,
    )
    try:
        async with gateway:
            assert gateway.subscribed.is_set()
            fleet.publish("factory/line-1/m-01/telemetry", b"first")
            await eventually(lambda: got == [b"first"], what="the first reading")
        async with deaf:
            assert deaf.connected.is_set()
            assert not deaf.subscribed.is_set()
            assert deaf.errors == {"subscribe_refused": 1}
    finally:
        fleet.close()
        proxy.close()


def test_a_bad_device_name_stops_the_script_with_a_clear_line(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "EDGE_AUTH_DIR": str(tmp_path / "auth"),
        "EDGE_SECRETS_DIR": str(tmp_path / "secrets"),
        "EDGE_CONF": str(tmp_path / "none.conf"),
        "EDGE_DEVICES": "line-1/m-01 m-02",
    }
    result = subprocess.run(
        ["sh", str(DEPLOY / "edge-users.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr == (
        "edge-users.sh: EDGE_DEVICES: 'm-02' is not <line>/<machine> (letters, digits, '.', "
        "'_', '-' and one '/'), e.g. line-1/m-01\n"
    )
    assert not (tmp_path / "auth").exists()
