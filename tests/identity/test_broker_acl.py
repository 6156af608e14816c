"""Gateway identity enforced by a real mosquitto with the files `fogline cloud gateway add`
writes: a gateway publishes and reads only its own topics, and a revoked one is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from identitykit import Client, SecureBroker

from cloud.db import make_engine, migrate
from cloud.provision import add_gateway, revoke_gateway
from fogline.identity import Identity


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    broker = SecureBroker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _wait(check, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def _provision(engine, secure: SecureBroker, gid: str) -> Identity:  # type: ignore[no-untyped-def]
    identity = add_gateway(engine, gid, Ed25519PrivateKey.generate(), broker=secure.files)
    secure.reload()
    return identity


def test_a_gateway_writes_and_reads_only_its_own_topics(secure: SecureBroker, engine) -> None:  # type: ignore[no-untyped-def]
    x, y = _provision(engine, secure, "gw-x"), _provision(engine, secure, "gw-y")
    cloud = Client(secure.port, "fogline-cloud", secure.cloud_password, ["fogline/+/up/#"])
    gx = Client(secure.port, x.username, x.password, ["fogline/gw-x/down/#", "fogline/gw-y/down/#"])
    gy = Client(secure.port, y.username, y.password, ["fogline/gw-y/down/#"])
    try:
        gx.publish("fogline/gw-x/up/alert", b"mine")
        gx.publish("fogline/gw-y/up/alert", b"forged as y")  # refused by the ACL
        gx.publish("fogline/gw-x/down/ack", b"an ack to myself")  # only the cloud writes down/
        gx.publish("fogline/gw-x/up/alert", b"done")
        # The broker handles one client's messages in order: once "done" is in, the two
        # forgeries were refused, or would have come first. No sleep needed.
        assert _wait(lambda: cloud.got("fogline/gw-x/up/alert") == [b"mine", b"done"])
        cloud.publish("fogline/gw-y/down/ack", b"for y")
        cloud.publish("fogline/gw-x/down/ack", b"for x")  # after "for y", to x and y alike
        assert _wait(lambda: gy.got("fogline/gw-y/down/ack") == [b"for y"])
        assert _wait(lambda: gx.got("fogline/gw-x/down/ack") == [b"for x"])
        assert cloud.got("fogline/gw-y/up/alert") == []
        assert gx.got("fogline/gw-y/down/ack") == []  # x cannot read y's acks
        assert gx.got("fogline/gw-x/down/ack") == [b"for x"]  # not its own forged ack
    finally:
        for c in (cloud, gx, gy):
            c.close()


def test_the_cloud_reads_through_its_shared_subscription(secure: SecureBroker, engine) -> None:  # type: ignore[no-untyped-def]
    x = _provision(engine, secure, "gw-x")
    cloud = Client(
        secure.port, "fogline-cloud", secure.cloud_password, ["$share/fogline/fogline/+/up/#"]
    )
    gx = Client(secure.port, x.username, x.password)
    try:
        gx.publish("fogline/gw-x/up/digest", b"d")
        assert _wait(lambda: cloud.got("fogline/gw-x/up/digest") == [b"d"])
    finally:
        cloud.close()
        gx.close()


def test_anonymous_and_wrong_passwords_are_refused(secure: SecureBroker, engine) -> None:  # type: ignore[no-untyped-def]
    x = _provision(engine, secure, "gw-x")
    anonymous = Client(secure.port, None, None)
    wrong = Client(secure.port, x.username, "not-the-password")
    try:
        assert _wait(lambda: anonymous.refused and wrong.refused)
    finally:
        anonymous.close()
        wrong.close()


def test_a_revoked_gateway_is_disconnected_and_refused(secure: SecureBroker, engine) -> None:  # type: ignore[no-untyped-def]
    x, y = _provision(engine, secure, "gw-x"), _provision(engine, secure, "gw-y")
    cloud = Client(secure.port, "fogline-cloud", secure.cloud_password, ["fogline/+/up/#"])
    gx = Client(secure.port, x.username, x.password)
    gy = Client(secure.port, y.username, y.password)
    try:
        assert not gx.refused
        assert revoke_gateway(engine, "gw-x", broker=secure.files) == 1
        secure.reload()
        assert _wait(gx.disconnected.is_set), "mosquitto kept the revoked gateway connected"
        again = Client(secure.port, x.username, x.password)
        assert _wait(lambda: again.refused), "the revoked credentials still connect"
        again.client.publish("fogline/gw-x/up/alert", b"after revocation", qos=1)
        again.close()
        # A marker from a gateway still trusted, sent after: once the cloud has it, what
        # the revoked one sent would have come too.
        gy.publish("fogline/gw-y/up/alert", b"marker")
        assert _wait(lambda: cloud.got("fogline/gw-y/up/alert") == [b"marker"])
        assert cloud.got("fogline/gw-x/up/alert") == []
    finally:
        for c in (cloud, gx, gy):
            c.close()
