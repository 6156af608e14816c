"""mqtts:// with a CA made in the test: server checked, mutual TLS when the broker asks,
and the cloud's HTTPS; wrong trust is refused with a message that says so."""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from identitykit import Client, Pki, SecureBroker
from support import eventually

from cloud.app import Cloud, CloudOptions
from cloud.db import make_engine, migrate
from cloud.provision import add_gateway
from fogline.mqtt import MqttLink
from fogline.tls import TlsFiles
from fogline.urls import parse_broker_url


def _identity(broker: SecureBroker, tmp_path: Path, gid: str = "gw1"):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'ids.db'}")
    migrate(engine)
    identity = add_gateway(engine, gid, Ed25519PrivateKey.generate(), broker=broker.files)
    engine.dispose()
    broker.reload()
    return identity


async def _link(url: str, tls: TlsFiles | None, within: float = 3.0) -> MqttLink:
    link = MqttLink(
        parse_broker_url(url),
        f"t-{uuid.uuid4().hex[:6]}",
        name="t",
        wait_connected=within,
        tls=tls,
    )
    await link.__aenter__()
    return link


@pytest.mark.parametrize("mutual", [False, True])
async def test_a_gateway_publishes_over_mqtts_with_the_private_ca(
    tmp_path: Path, mutual: bool
) -> None:
    pki = Pki(tmp_path / "pki")
    broker = SecureBroker(tmp_path, pki, mutual=mutual)
    broker.start()
    try:
        identity = _identity(broker, tmp_path)
        cloud = Client(broker.port, "fogline-cloud", broker.cloud_password, ["fogline/+/up/#"])
        url = f"mqtts://{identity.username}:{identity.password}@127.0.0.1:{broker.tls_port}"
        files = TlsFiles(pki.ca, *pki.issue("gw1", server=False)) if mutual else TlsFiles(pki.ca)
        link = await _link(url, files)
        try:
            assert link.connected.is_set()
            link.publish("fogline/gw1/up/event", b"over tls", 1)
            await eventually(lambda: cloud.got("fogline/gw1/up/event") == [b"over tls"], 5, "tls")
        finally:
            await link.__aexit__(None, None, None)
            cloud.close()
        # the system's CAs do not know ours: refused
        stranger = await _link(url, None, within=1.0)
        try:
            assert not stranger.connected.is_set()
        finally:
            await stranger.__aexit__(None, None, None)
        if mutual:  # the broker asks for a client certificate: without one, refused
            anonymous = await _link(url, TlsFiles(pki.ca), within=1.0)
            try:
                assert not anonymous.connected.is_set()
            finally:
                await anonymous.__aexit__(None, None, None)
    finally:
        broker.stop()


async def test_a_broker_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    broker = SecureBroker(tmp_path, pki)
    broker.start()
    try:
        identity = _identity(broker, tmp_path)
        # the certificate names 127.0.0.1 and localhost; "127.0.0.2" is another host
        url = f"mqtts://{identity.username}:{identity.password}@127.0.0.2:{broker.tls_port}"
        link = await _link(url, TlsFiles(pki.ca), within=1.5)
        try:
            assert not link.connected.is_set()
        finally:
            await link.__aexit__(None, None, None)
    finally:
        broker.stop()


async def test_refused_credentials_say_how_to_provision(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = SecureBroker(tmp_path)
    broker.start()
    try:
        link = await _link(f"mqtt://gw1:wrong@127.0.0.1:{broker.port}", None, within=1.0)
        try:
            await eventually(lambda: link.errors.get("refused", 0) >= 1, 5, "a refusal")
            assert not link.connected.is_set()
        finally:
            await link.__aexit__(None, None, None)
        text = caplog.text
        assert "refused the credentials of user 'gw1'" in text
        assert "fogline cloud gateway add" in text
    finally:
        broker.stop()


async def test_the_cloud_serves_https(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki = Pki(tmp_path / "pki")
    cert, key = pki.issue("cloud", server=True)
    options = CloudOptions(
        parse_broker_url(broker.url),
        f"sqlite:///{tmp_path}/cloud.db",
        http_port=0,
        replica="tls",
        wait_broker=None,
        https=(cert, key),
    )
    async with Cloud(options) as cloud:
        context = ssl.create_default_context(cafile=str(pki.ca))
        url = f"https://127.0.0.1:{cloud.http_port}/healthz"
        status = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, context=context, timeout=5).status
        )
        assert status == 200
