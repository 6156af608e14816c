"""People on the API, through a real uvicorn, on SQLite and PostgreSQL: who gets 401 and who
403 on every route, tokens hashed at rest and revocable, session cookies with CSRF, the
OpenAPI security schemes, and the people CLI."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cloudkit import NOW, Database, alert, api_token, batch
from sqlalchemy import select
from support import Broker

from cloud import people
from cloud.app import Cloud, CloudOptions
from cloud.db import make_engine
from cloud.models import ApiToken, User
from fogline.urls import parse_broker_url


@pytest.fixture
async def cloud(broker: Broker, database: Database) -> AsyncIterator[Cloud]:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="auth",
        wait_broker=None,
    )
    async with Cloud(options) as c:
        yield c


def client(cloud: Cloud, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}", headers=headers)


def api_routes(cloud: Cloud) -> list[tuple[str, str]]:
    """(method, path) of every /api route in the OpenAPI document, with ids filled in."""
    assert cloud.app is not None
    found = []
    for path, methods in cloud.app.openapi()["paths"].items():
        if path.startswith("/api/"):
            for name in ("{gateway_id}", "{step}", "{alert_id}", "{silence_id}"):
                path = path.replace(name, "1")  # noqa: PLW2901
            found.extend((method.upper(), path) for method in methods)
    return found


async def test_every_api_route_refuses_anonymous_callers(cloud: Cloud) -> None:
    routes = api_routes(cloud)
    assert ("POST", "/api/alerts/actions") in routes
    assert ("PUT", "/api/gateways/1/models/1") in routes
    assert len(routes) >= 14
    async with client(cloud) as anonymous, client(cloud, "fgl_0123456789abcdef_forged") as forged:
        for method, path in routes:
            for http in (anonymous, forged):
                response = await http.request(method, path, json={})
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
    # The service endpoints stay open: load balancers and Prometheus hold no token.
    async with client(cloud) as anonymous:
        assert (await anonymous.get("/healthz")).status_code in (200, 503)
        assert (await anonymous.get("/metrics")).status_code == 200


async def test_roles_reads_for_viewers_actions_for_operators_models_for_admins(
    cloud: Cloud,
) -> None:
    cloud.store.write([batch("gw1", "alert", [(1, "line-1/m-01", alert("hot/1", "raised"))])])
    viewer = api_token(cloud.engine, "viewer")
    operator = api_token(cloud.engine, "operator")
    admin = api_token(cloud.engine, "admin")
    ack = {"ids": [1], "action": "acknowledge"}
    silence = {"gateway": "gw1", "rule": "hot", "until": NOW * 2}
    async with client(cloud, viewer) as v, client(cloud, operator) as o, client(cloud, admin) as a:
        assert (await v.get("/api/alerts")).status_code == 200
        refused = await v.post("/api/alerts/actions", json=ack)
        assert refused.status_code == 403
        assert refused.json()["detail"] == "needs the operator role; test-viewer is viewer"
        assert (await v.post("/api/silences", json=silence)).status_code == 403
        assert (await v.get("/api/alerts/1")).json()["state"] == "open"  # nothing changed

        done = await o.post("/api/alerts/actions", json=ack)
        assert done.status_code == 200, done.text
        assert done.json() == {"changed": [1], "unchanged": [], "missing": []}
        assert (await o.post("/api/silences", json=silence)).status_code == 201
        assert (await o.put("/api/gateways/gw1/models/s", content=b"x")).status_code == 403

        junk = await a.put("/api/gateways/gw1/models/s", content=b"not a model")
        assert junk.status_code == 404  # past the role check, refused by the target check
        assert junk.json()["detail"] == "gateway 'gw1' has no infer step 's' (none reported)"
    episode = (await _get(cloud, admin, "/api/alerts/1")).json()
    assert (episode["state"], episode["acknowledged_by"]) == ("acknowledged", "test-operator")


async def _get(cloud: Cloud, token: str, path: str) -> httpx.Response:
    async with client(cloud, token) as http:
        return await http.get(path)


async def test_tokens_are_hashed_at_rest_and_revocable(cloud: Cloud) -> None:
    token = api_token(cloud.engine, "viewer")
    secret = token.rsplit("_", 1)[1]
    with cloud.engine.connect() as conn:
        rows = conn.execute(select(ApiToken.lookup, ApiToken.secret_hash)).all()
        hashes = conn.execute(select(User.password_hash)).scalars().all()
    assert len(rows) == 1
    assert secret not in rows[0].secret_hash
    assert hashes == [None]  # a token-only user
    assert (await _get(cloud, token, "/api/alerts")).status_code == 200
    (token_id, *_), *_ = people.list_tokens(cloud.engine)
    assert people.revoke_token(cloud.engine, token_id, NOW)
    assert (await _get(cloud, token, "/api/alerts")).status_code == 401
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (await _get(cloud, tampered, "/api/alerts")).status_code == 401


async def test_a_session_cookie_reads_but_writes_only_with_its_csrf_token(cloud: Cloud) -> None:
    cloud.store.write([batch("gw1", "alert", [(1, "line-1/m-01", alert("hot/1", "raised"))])])
    people.add_user(cloud.engine, "ana", "operator", "correct horse", NOW)
    with cloud.engine.connect() as conn:
        stored = conn.execute(select(User.password_hash).where(User.name == "ana")).scalar_one()
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    user = people.sign_in(cloud.engine, "ana", "correct horse")
    assert user is not None
    assert people.sign_in(cloud.engine, "ana", "wrong horse") is None
    assert people.sign_in(cloud.engine, "nobody", "correct horse") is None
    cookie, csrf = people.open_session(cloud.engine, user.user_id, NOW * 2)
    async with client(cloud) as http:
        http.cookies.set("fogline_session", cookie)
        assert (await http.get("/api/alerts")).status_code == 200
        ack = {"ids": [1], "action": "acknowledge"}
        assert (await http.post("/api/alerts/actions", json=ack)).status_code == 403
        bad = await http.post("/api/alerts/actions", json=ack, headers={"X-CSRF-Token": "x"})
        assert bad.status_code == 403
        good = await http.post("/api/alerts/actions", json=ack, headers={"X-CSRF-Token": csrf})
        assert good.status_code == 200


async def test_openapi_declares_the_security_schemes(cloud: Cloud) -> None:
    async with client(cloud) as http:
        doc = (await http.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: `fogline cloud token add --user NAME` prints one.",
    }
    assert schemes["session"]["in"] == "cookie"
    alerts = doc["paths"]["/api/alerts"]["get"]
    assert {"token": []} in alerts["security"]
    assert {"401", "403"} <= set(alerts["responses"])
    assert {"token": []} in doc["paths"]["/api/gateways/{gateway_id}/models/{step}"]["put"][
        "security"
    ]


async def test_a_cloud_without_users_says_how_to_make_the_first_admin(
    broker: Broker, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="empty",
        wait_broker=None,
    )
    with caplog.at_level(logging.WARNING, "fogline.cloud"):
        async with Cloud(options) as c, client(c) as http:
            page = (await http.get("/login")).text
    assert "no users yet: nobody can sign in to the console or call the API" in caplog.text
    assert "fogline cloud user add NAME --role admin --db " in caplog.text
    assert "No users yet." in page
    assert "fogline cloud user add NAME --role admin" in page


def fogline(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline.cli", "cloud", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_people_cli_adds_users_and_prints_a_token_once(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/people.db"
    made = fogline("user", "add", "root", "--role", "admin", "--password-stdin", "--db", db,
                   stdin="a long password\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout == "user root added (admin)\n"
    again = fogline("user", "add", "root", "--password-stdin", "--db", db, stdin="x" * 9)
    assert (again.returncode, again.stderr) == (
        2,
        "fogline cloud user: user 'root' exists; pick another name\n",
    )
    short = fogline("user", "add", "eve", "--password-stdin", "--db", db, stdin="short\n")
    assert short.stderr == "fogline cloud user: password: at least 8 characters\n"
    no_password = fogline("user", "add", "eve", "--db", db)
    assert "no password: pass --password-stdin" in no_password.stderr
    token = fogline("--db", db, "token", "add", "--user", "root", "--name", "ci")
    assert token.returncode == 0, token.stderr
    printed = token.stdout.strip()
    assert printed.startswith("fgl_")
    assert "shown this once" in token.stderr
    listed = fogline("token", "list", "--db", db)
    assert printed not in listed.stdout
    assert listed.stdout.startswith("1\troot\tci\tmade ")
    engine = make_engine(db)
    try:
        found = people.token_principal(engine, printed, NOW)
        assert found is not None
        assert (found.name, found.role) == ("root", "admin")
        assert people.sign_in(engine, "root", "a long password") is not None
    finally:
        engine.dispose()
