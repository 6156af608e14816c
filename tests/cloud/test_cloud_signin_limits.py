"""Sign-in throttling per account and per source address, and sessions that end when idle
and at their absolute lifetime: through a real uvicorn, on SQLite and PostgreSQL, with a
clock the test moves."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from cloudkit import NOW, Database
from inferkit import Clock
from support import Broker

from cloud import people
from cloud.app import Cloud, CloudOptions
from cloud.throttle import SignInThrottle
from fogline.urls import parse_broker_url

PASSWORD = "a long password"  # noqa: S105 - a test user's


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cloud(broker: Broker, database: Database, clock: Clock) -> AsyncIterator[Cloud]:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="signin",
        wait_broker=None,
        clock=clock,
    )
    async with Cloud(options) as c:
        assert c.app is not None
        c.app.state.signin_throttle = SignInThrottle(per_account=3, per_address=5, window=600)
        people.add_user(c.engine, "ana", "operator", PASSWORD, NOW)
        yield c


async def attempt(http: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    form = await http.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return await http.post(
        "/login", data={"name": name, "password": password, "csrf": csrf.group(1)}
    )


def counted(metrics: str, name: str) -> float:
    found = re.search(rf"^fogline_cloud_{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


async def test_an_account_is_throttled_after_failures_and_frees_up_after_the_window(
    cloud: Cloud, clock: Clock
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as http:
        for _ in range(3):
            assert (await attempt(http, "ana", "not her password")).status_code == 401
        refused = await attempt(http, "ana", PASSWORD)  # right, but refused unchecked
        assert refused.status_code == 429
        assert "Too many failed sign-ins for this name: try again in 10 minutes" in refused.text
        assert refused.headers["retry-after"] == "600"
        assert "fogline_session" not in refused.cookies
        metrics = (await http.get("/metrics")).text
        assert counted(metrics, "signin_failures_total") == 3
        assert counted(metrics, 'signin_refused_total{by="account"}') == 1
        clock.now += 601
        assert (await attempt(http, "ana", PASSWORD)).status_code == 303
        assert (await http.get("/alerts")).status_code == 200


async def test_one_address_is_throttled_across_names(cloud: Cloud, clock: Clock) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as http:
        for n in range(5):
            assert (await attempt(http, f"guess-{n}", "password1")).status_code == 401
        refused = await attempt(http, "ana", PASSWORD)
        assert refused.status_code == 429
        assert "Too many failed sign-ins from this address" in refused.text
        metrics = (await http.get("/metrics")).text
        assert counted(metrics, 'signin_refused_total{by="address"}') == 1
        clock.now += 300  # half the window: still refused, and told how long is left
        again = await attempt(http, "ana", PASSWORD)
        assert (again.status_code, again.headers["retry-after"]) == (429, "300")


async def test_a_session_ends_when_idle_and_at_its_lifetime(cloud: Cloud, clock: Clock) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as http:
        assert (await attempt(http, "ana", PASSWORD)).status_code == 303
        idle = people.SESSION_IDLE_MINUTES * 60
        clock.now += idle - 5  # used just in time: the idle clock starts again
        assert (await http.get("/alerts")).status_code == 200
        clock.now += idle - 5
        assert (await http.get("/alerts")).status_code == 200
        clock.now += idle + 1  # left alone past the idle time
        page = await http.get("/alerts")
        assert (page.status_code, page.headers["location"]) == (303, "/login?next=/alerts")
        assert (await http.get("/api/alerts")).status_code == 401  # the cookie on the API too

        assert (await attempt(http, "ana", PASSWORD)).status_code == 303
        started = clock.now
        while clock.now + idle - 60 < started + people.SESSION_HOURS * 3600:
            clock.now += idle - 60  # busy all shift long
            assert (await http.get("/alerts")).status_code == 200
        clock.now = started + people.SESSION_HOURS * 3600 + 1
        assert (await http.get("/alerts")).status_code == 303  # the lifetime is absolute


def test_the_throttle_forgets_old_failures_and_caps_what_it_follows() -> None:
    throttle = SignInThrottle(per_account=2, per_address=100, window=60, keys=3)
    throttle.failed("a", "10.0.0.1", 0)
    throttle.failed("a", "10.0.0.1", 30)
    refusal = throttle.check("a", "10.0.0.1", 40)
    assert refusal is not None
    assert (refusal.by, refusal.retry_after) == ("account", 20)
    assert throttle.check("a", "10.0.0.1", 60) is None  # the first failure aged out
    throttle.failed("a", "10.0.0.1", 61)
    assert throttle.check("a", "10.0.0.1", 62) is not None
    throttle.succeeded("a")
    assert throttle.check("a", "10.0.0.1", 62) is None
    for n in range(10):  # a flood of names: only the 3 newest are followed
        throttle.failed(f"x{n}", "10.0.0.2", 70)
        throttle.failed(f"x{n}", "10.0.0.2", 70)
    assert throttle.check("x9", "10.0.0.3", 71) is not None
    assert throttle.check("x0", "10.0.0.3", 71) is None
