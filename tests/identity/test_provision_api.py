"""Provisioning through the API (issue 9, part 1): `POST /api/gateways` and
`DELETE /api/gateways/{id}` do what `fogline cloud gateway add|revoke` do, for admins only,
and only on a cloud given the broker's files."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from identitykit import Client, SecureBroker, signed_batch
from sqlalchemy import select
from support import Broker, eventually

from cloud import people
from cloud.app import Cloud, CloudOptions
from cloud.models import Event
from cloud.provision import ACL, BrokerFiles
from fogline import signing
from fogline.envelope import uplink_topic
from fogline.identity import Identity, read_identity
from fogline.urls import parse_broker_url

NOW = 1_700_000_000.0


def token(cloud: Cloud, role: str) -> dict[str, str]:
    name = f"{role}-{uuid.uuid4().hex[:6]}"
    people.add_user(cloud.engine, name, role, None, NOW)
    return {"Authorization": f"Bearer {people.add_token(cloud.engine, name, 'tests', NOW)[1]}"}


def options(url: str, tmp_path: Path, files: BrokerFiles | None) -> CloudOptions:
    return CloudOptions(
        parse_broker_url(url),
        f"sqlite:///{tmp_path}/cloud.db",
        http_port=0,
        replica=f"r-{uuid.uuid4().hex[:6]}",
        wait_broker=None,
        signing_key=tmp_path / "cloud.key",
        allow_unregistered=False,
        broker_files=files,
        warn_no_users=False,
    )


@pytest.fixture
async def cloud(broker: Broker, tmp_path: Path) -> AsyncIterator[Cloud]:
    """A strict cloud on the anonymous test broker (anyone may publish as any gateway: the
    cloud's own checks are what is tested), given a folder for the broker's files."""
    async with Cloud(options(broker.url, tmp_path, BrokerFiles(tmp_path / "broker"))) as c:
        yield c


@pytest.fixture
async def http(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as client:
        yield client


def stored(cloud: Cloud, gid: str) -> list[int]:
    with cloud.engine.connect() as conn:
        return sorted(conn.execute(select(Event.seq).where(Event.gateway_id == gid)).scalars())


async def test_only_an_admin_provisions_and_revokes(cloud: Cloud, http: httpx.AsyncClient) -> None:
    key = signing.public_text(Ed25519PrivateKey.generate())
    body = {"id": "gw7", "public_key": key}
    for headers, status in [
        ({}, 401),
        (token(cloud, "viewer"), 403),
        (token(cloud, "operator"), 403),
    ]:
        assert (await http.post("/api/gateways", json=body, headers=headers)).status_code == status
        assert (await http.delete("/api/gateways/gw7", headers=headers)).status_code == status
    files = cloud.options.broker_files
    assert files is not None
    assert files.users() == {}  # nothing was written


async def test_an_admin_provisions_a_gateway_whose_batches_are_stored_until_revoked(
    cloud: Cloud, http: httpx.AsyncClient, collector_factory: Callable, tmp_path: Path
) -> None:
    admin = token(cloud, "admin")
    files = cloud.options.broker_files
    assert files is not None
    key = Ed25519PrivateKey.generate()
    response = await http.post(
        "/api/gateways", json={"id": "gw7", "public_key": signing.public_text(key)}, headers=admin
    )
    assert response.status_code == 201, response.text
    made = response.json()
    assert cloud.trust.signer is not None
    assert made == {
        "v": 1,
        "gateway": "gw7",
        "username": "gw7",
        "password": made["password"],
        "cloud_public_key": signing.public_text(cloud.trust.signer.key),
        "gateway_public_key": signing.public_text(key),
        "key_id": signing.key_id(key),
        "broker": f"reload the broker so that it reads {files.passwords}: kill -HUP "
        "<mosquitto's pid> (or pass --reload 'CMD')",
    }
    assert len(made["password"]) >= 24
    # The broker's files: a user gw7 with that password, and the ACL confining it.
    assert set(files.users()) == {"gw7"}
    assert files.acl.read_text() == ACL
    # The answer is an identity file a gateway reads as it is.
    (tmp_path / "identity.json").write_bytes(response.content)
    assert read_identity(tmp_path / "identity.json") == Identity(
        "gw7", "gw7", made["password"], made["cloud_public_key"], made["gateway_public_key"]
    )

    wire = collector_factory([])
    rejects = cloud.metrics.rejects.copy()
    wire.publish(uplink_topic("gw7", "event"), signed_batch(key, "gw7", [(1, "m", {"n": 1})]))
    await eventually(lambda: stored(cloud, "gw7") == [1], 10, "gw7's batch stored")

    response = await http.delete("/api/gateways/gw7", headers=admin)
    assert response.status_code == 204, response.text
    assert files.users() == {}
    wire.publish(uplink_topic("gw7", "event"), signed_batch(key, "gw7", [(2, "m", {"n": 2})]))
    await eventually(lambda: (cloud.metrics.rejects - rejects)["revoked"] == 1, 10, "refused")
    assert stored(cloud, "gw7") == [1]

    again = await http.delete("/api/gateways/gw7", headers=admin)
    assert again.status_code == 404
    assert again.json()["detail"] == "gateway 'gw7' has no live key to revoke"
    # A revoked key stays revoked: the gateway must make a new one.
    readd = await http.post(
        "/api/gateways", json={"id": "gw7", "public_key": signing.public_text(key)}, headers=admin
    )
    assert readd.status_code == 409
    assert readd.json()["detail"].startswith(f"key {signing.key_id(key)} of gw7 was revoked")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"id": "fogline-cloud", "public_key": "x"}, "gateway id 'fogline-cloud': expected"),
        ({"id": "gw8", "public_key": "not a key"}, "--public-key: "),
        ({"id": "a/b", "public_key": "x"}, "body.id: "),
        ({"id": "gw8"}, "body.public_key: "),
    ],
)
async def test_bad_ids_and_keys_are_422_with_the_reason(
    cloud: Cloud, http: httpx.AsyncClient, body: dict[str, str], detail: str
) -> None:
    response = await http.post("/api/gateways", json=body, headers=token(cloud, "admin"))
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail), response.json()
    files = cloud.options.broker_files
    assert files is not None
    assert files.users() == {}


async def test_without_the_broker_files_the_api_says_how_to_enable_it(
    broker: Broker, tmp_path: Path
) -> None:
    async with (
        Cloud(options(broker.url, tmp_path, None)) as cloud,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as http,
    ):
        admin = token(cloud, "admin")
        key = signing.public_text(Ed25519PrivateKey.generate())
        for response in [
            await http.post("/api/gateways", json={"id": "gw7", "public_key": key}, headers=admin),
            await http.delete("/api/gateways/gw7", headers=admin),
        ]:
            assert response.status_code == 409
            assert response.json()["detail"].startswith(
                "provisioning through the API is off: start the cloud with --broker-dir DIR"
            )


def lets_in(broker: SecureBroker, user: str, password: str) -> bool:
    client = Client(broker.port, user, password)
    client.close()
    return not client.refused


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    broker = SecureBroker(tmp_path / "secure")
    broker.start()
    yield broker
    broker.stop()


async def test_the_broker_lets_in_a_gateway_provisioned_by_the_api_until_it_is_revoked(
    secure: SecureBroker, tmp_path: Path
) -> None:
    """Against a mosquitto that enforces the files: the password the API answered works
    once the broker reloaded (the cloud runs the reload command), and no more after a
    DELETE."""
    assert secure.proc is not None
    files = BrokerFiles(secure.files.directory, f"kill -HUP {secure.proc.pid}")
    async with (
        Cloud(options(secure.cloud_url, tmp_path, files)) as cloud,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as http,
    ):
        admin = token(cloud, "admin")
        key = Ed25519PrivateKey.generate()
        made = await http.post(
            "/api/gateways",
            json={"id": "gw7", "public_key": signing.public_text(key)},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        identity = made.json()
        assert identity["broker"] == "the broker reloaded its password file"
        password = identity["password"]
        await eventually(lambda: lets_in(secure, "gw7", password), 5, "gw7 let in")
        gw = Client(secure.port, "gw7", password)
        try:
            gw.publish(uplink_topic("gw7", "event"), signed_batch(key, "gw7", [(1, "m", {})]))
            await eventually(lambda: stored(cloud, "gw7") == [1], 10, "stored via the broker")
        finally:
            gw.close()
        assert (await http.delete("/api/gateways/gw7", headers=admin)).status_code == 204
        await eventually(lambda: not lets_in(secure, "gw7", password), 5, "gw7 refused")
