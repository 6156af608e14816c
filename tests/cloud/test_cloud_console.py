"""The console's pages over HTTP (the browser tests drive the same pages in Chromium): the
filters and keyset pages of the list, sign-in and its redirects, roles on forms, the
live stream, and every page rendering on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cloudkit import NOW, Database, alert, apply_patch, batch, digest
from sqlalchemy import insert, select
from support import Broker

from cloud import people, silence
from cloud.app import Cloud, CloudOptions
from cloud.models import Alert
from fogline.urls import parse_broker_url


@pytest.fixture
async def cloud(broker: Broker, database: Database) -> AsyncIterator[Cloud]:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="console",
        wait_broker=None,
        live_interval=0.05,
    )
    async with Cloud(options) as c:
        yield c


async def signed_in(cloud: Cloud, role: str = "operator") -> httpx.AsyncClient:
    user = people.add_user(cloud.engine, f"u-{role}", role, None, NOW)
    cookie, _ = people.open_session(cloud.engine, user, NOW * 2)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}")
    http.cookies.set("fogline_session", cookie)
    return http


def seed(cloud: Cloud) -> None:
    records = [
        (
            i + 1,
            f"line-1/m-{i % 3}",
            alert(f"a{i}", "raised", raised_at=NOW + i, severity=("critical", "warning")[i % 2],
                  rule=("hot", "cold")[i % 2]),
        )
        for i in range(60)
    ]  # fmt: skip
    cloud.store.write([batch("gw1", "alert", records)])
    digests = [
        (100 + i, "line-1/m-0", digest(NOW + 10 * i, temperature_max=60.0 + i)) for i in range(30)
    ]
    cloud.store.write([batch("gw1", "digest", digests)])


def numbers(cloud: Cloud) -> dict[int, int]:
    """Episode id -> i of its alert id `a<i>` (ids follow insertion order, not i)."""
    with cloud.engine.connect() as conn:
        return {pk: int(a[1:]) for pk, a in conn.execute(select(Alert.id, Alert.alert_id))}


def ids(html: str, cloud: Cloud) -> list[int]:
    """The `i` of each listed episode, in order."""
    known = numbers(cloud)
    return [known[int(i)] for i in re.findall(r'<tr data-id="(\d+)"', html)]


async def test_filters_and_keyset_pages(cloud: Cloud) -> None:
    seed(cloud)
    async with await signed_in(cloud) as http:
        first = await http.get("/alerts")
        assert first.status_code == 200
        assert ids(first.text, cloud) == list(range(59, 9, -1))  # 50 a page, newest raise first
        older = re.search(r'href="(/alerts\?[^"]*cursor=[^"]+)">Older alerts', first.text)
        assert older is not None
        second = await http.get(older.group(1).replace("&amp;", "&"))
        assert ids(second.text, cloud) == list(range(9, -1, -1))
        assert "Older alerts" not in second.text
        rows = (
            await http.get("/alerts/rows", params={"severity": "critical", "device": "line-1/m-0"})
        ).text
        assert ids(rows, cloud) == [i for i in range(59, -1, -1) if i % 2 == 0 and i % 3 == 0]
        since = {"since": "2023-11-14T22:13:40Z", "until": str(NOW + 25), "rule": "cold"}
        assert ids((await http.get("/alerts/rows", params=since)).text, cloud) == [23, 21]
        counts = (await http.get("/alerts/rows", params={"rule": "hot"})).text
        assert re.search(r"open <strong>30</strong>", counts)
        none = (await http.get("/alerts/rows", params={"gateway": "nope"})).text
        assert "No alerts match these filters." in none


async def test_pages_need_a_session_and_keep_where_you_were_going(cloud: Cloud) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as http:
        page = await http.get("/gateways/gw1?x=1")
        assert (page.status_code, page.headers["location"]) == (
            303,
            "/login?next=/gateways/gw1%3Fx%3D1",
        )
        token_only = await http.get("/alerts", headers={"Authorization": "Bearer fgl_x"})
        assert token_only.status_code == 303  # pages are for people: sessions only
        stream = await http.get("/live/alerts")
        assert stream.status_code == 401


async def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_open_redirects(
    cloud: Cloud,
) -> None:
    people.add_user(cloud.engine, "ana", "viewer", "a long password", NOW)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as http:
        form = await http.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        data = {"name": "ana", "password": "a long password", "csrf": csrf.group(1)}
        wrong = await http.post("/login", data={**data, "password": "nope nope"})
        assert wrong.status_code == 401
        assert "Wrong name or password." in wrong.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', wrong.text)
        assert csrf is not None
        done = await http.post(
            "/login", data={**data, "csrf": csrf.group(1), "next": "//evil.example/x"}
        )
        assert (done.status_code, done.headers["location"]) == (303, "/")
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain HTTP here; HTTPS sets it
        assert (await http.get("/alerts")).status_code == 200
        page = await http.get("/alerts")
        token = re.search(r'action="/logout">.*?name="csrf" value="([^"]+)"', page.text, re.DOTALL)
        assert token is not None
        out = await http.post("/logout", data={"csrf": token.group(1)})
        assert out.headers["location"] == "/login"
        assert (await http.get("/alerts")).status_code == 303
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.http_port}") as fresh:
        stale = await fresh.post("/login", data={**data, "csrf": "not the cookie's"})
        assert stale.status_code == 403


async def test_every_page_renders_and_forms_follow_roles(cloud: Cloud) -> None:
    seed(cloud)
    async with await signed_in(cloud, "viewer") as viewer, await signed_in(cloud, "admin") as admin:
        for path in ("/alerts", "/alerts?state=all", "/alerts/1", "/silences", "/gateways",
                     "/gateways/gw1", "/gateways/gw1/devices/line-1/m-0?range=7d", "/models",
                     "/notifications"):  # fmt: skip
            for http in (viewer, admin):
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text[:500])
                assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert 'id="bulk"' not in (await viewer.get("/alerts")).text
        assert 'id="bulk"' in (await admin.get("/alerts")).text
        assert "Send a model" not in (await viewer.get("/models")).text
        assert "Send a model" in (await admin.get("/models")).text
        device = (await admin.get("/gateways/gw1/devices/line-1/m-0?range=7d")).text
        assert "temperature" in device
        assert "count" not in re.findall(r"<figcaption>([^<]*)</figcaption>", device)
        missing = await admin.get("/alerts/999")
        assert missing.status_code == 404
        assert "No alert episode 999." in missing.text


async def test_an_episode_the_gateway_no_longer_holds_shows_who_closed_it_and_why(
    cloud: Cloud,
) -> None:
    cloud.store.write([batch("gw1", "alert", [(1, "line-1/m-0", alert("a0", "raised"))])])
    health = {"ts": NOW + 60, "alerts_raised": {"ids": [], "complete": True}}
    cloud.store.write([batch("gw1", "health", [(2, "", health)])])
    (episode_id,) = numbers(cloud)
    async with await signed_in(cloud, "viewer") as http:
        page = (await http.get(f"/alerts/{episode_id}")).text
        api = (await http.get(f"/api/alerts/{episode_id}")).json()
    assert "Closed by the gateway" in page
    assert "the gateway no longer holds this alert (restart or state reset)" in page
    assert "health seq 2" in page
    assert (api["state"], api["closed_by"], api["cleared_at"]) == ("cleared", "gateway", NOW + 60)
    assert api["close_reason"].startswith("the gateway no longer holds this alert")
    assert [a["action"] for a in api["activity"]] == ["raised", "closed"]


async def test_the_live_stream_sends_changes(cloud: Cloud) -> None:
    async with (
        await signed_in(cloud, "viewer") as http,
        http.stream("GET", "/live/alerts") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        chunks = stream.aiter_text()
        assert "connected" in await anext(chunks)
        cloud.store.write([batch("gw1", "alert", [(1, "line-1/m-01", alert("hot/1", "raised"))])])
        event = await asyncio.wait_for(anext(chunks), 5)
        assert event.startswith("event: alert\nid: 1\ndata: ")
        assert '"action":"raised"' in event
        assert '"state":"open"' in event


async def test_the_live_stream_carries_the_rendered_list_of_a_view(cloud: Cloud) -> None:
    async with (
        await signed_in(cloud, "viewer") as http,
        http.stream(
            "GET", "/live/alerts", params={"rows": "state=active&severity=critical"}
        ) as stream,
    ):
        chunks = stream.aiter_text()
        assert "connected" in await anext(chunks)
        cloud.store.write([batch("gw1", "alert", [(1, "line-1/m-01", alert("hot/1", "raised"))])])
        text = ""
        while "event: rows" not in text or not text.endswith("\n\n"):
            text += await asyncio.wait_for(anext(chunks), 5)
        rows = text[text.index("event: rows") :]
        html = "\n".join(line.removeprefix("data: ") for line in rows.splitlines()[1:])
        assert '<tr data-id="1"' in html
        assert "open <strong>1</strong>" in html
        assert 'name="ids"' not in html  # a viewer's list has no checkboxes
        # The next change comes as a patch against the list this browser holds.
        cloud.store.write([batch("gw1", "alert", [(2, "line-1/m-02", alert("hot/2", "raised"))])])
        text = ""
        while "event: patch" not in text or not text.endswith("\n\n"):
            text += await asyncio.wait_for(anext(chunks), 5)
        patch = text[text.index("event: patch") :].encode()
        assert len(patch) < len(html.encode())
        patched = apply_patch(html, patch.strip())
        assert '<tr data-id="2"' in patched
        assert "open <strong>2</strong>" in patched
        viewer_list = await http.get(
            "/alerts/rows", params={"state": "active", "severity": "critical"}
        )
        assert patched == viewer_list.text  # what a fresh rendering of the view says
    assert cloud.app is not None
    renders = cloud.app.state.fragments.renders
    async with await signed_in(cloud, "operator") as other:
        page = await other.get("/alerts/rows", params={"state": "active", "severity": "critical"})
    assert 'name="ids"' in page.text  # another role, another rendering
    assert cloud.app.state.fragments.renders == renders + 1


def health(
    ts: float, messages_in: dict[str, int], outputs: dict[str, int], **more: float
) -> dict[str, object]:
    return {"ts": ts, "messages_in": messages_in, "outputs": outputs, **more}


async def test_gateway_rates_come_from_the_growth_between_the_last_two_health_records(
    cloud: Cloud,
) -> None:
    write = cloud.store.write
    write([batch("gw1", "health", [(1, "", health(NOW, {"mqtt": 100}, {"uplink": 10}))])])
    async with await signed_in(cloud, "viewer") as http:
        one = (await http.get("/api/gateways/gw1")).json()
        assert (one["rate_in"], one["rate_out"]) == (None, None)  # one record: no rate yet
        later = health(NOW + 10, {"mqtt": 600, "coap": 100}, {"uplink": 50, "actions": 10})
        write([batch("gw1", "health", [(2, "", later)])])
        two = (await http.get("/api/gateways/gw1")).json()
        assert (two["rate_in"], two["rate_out"]) == (60.0, 5.0)
        listed = (await http.get("/gateways")).text
        assert re.search(r'class="rate">60 in, 5 out', listed)
        page = (await http.get("/gateways/gw1")).text
        assert re.search(r'id="rates">60 in, 5 out', page)
        # A restart between records: counters start again from zero, over its uptime.
        restarted = health(NOW + 40, {"mqtt": 200}, {"uplink": 40}, uptime_s=10.0)
        write([batch("gw1", "health", [(3, "", restarted)])])
        three = (await http.get("/api/gateways/gw1")).json()
        assert (three["rate_in"], three["rate_out"]) == (20.0, 4.0)
        # Without an uptime, a counter that went down still counts from zero.
        write([batch("gw1", "health", [(4, "", health(NOW + 50, {"mqtt": 50}, {}))])])
        four = (await http.get("/api/gateways")).json()["items"][0]
        assert (four["rate_in"], four["rate_out"]) == (5.0, 0.0)


def charts(html: str) -> dict[str, dict[str, Any]]:
    """The device page's chart data, by title."""
    found = re.findall(r'<script type="application/json" id="chart-\d+">(.*?)</script>', html)
    return {c["title"]: c for c in map(json.loads, found)}


async def test_the_device_page_draws_the_whole_range_downsampled(cloud: Cloud) -> None:
    # A week of 2-minute windows: 5,040 digests, more than the page once read (4,000).
    week = 7 * 86400
    for start in range(0, 5040, 504):
        records = [
            (i + 1, "line-1/m-0", digest(NOW - week + 120 * (i + 1), temperature_max=float(i)))
            for i in range(start, start + 504)
        ]
        cloud.store.write([batch("gw1", "digest", records)])
    # A device that sends text where a number was: that value is left out, not a failure.
    odd = {**digest(NOW - 30), "temperature_max": "n/a"}
    cloud.store.write([batch("gw1", "digest", [(6000, "line-1/m-0", odd)])])
    async with await signed_in(cloud, "viewer") as http:
        page = (await http.get("/gateways/gw1/devices/line-1/m-0?range=7d")).text
        assert re.search(r'id="digest-count">5041 digests in \d+ points', page)
        temperature = charts(page)["temperature"]
        assert len(temperature["x"]) <= 2000
        assert temperature["x"][0] < NOW - week + 400  # the oldest day is drawn too
        assert temperature["x"][-1] > NOW - 400
        assert temperature["series"]["temperature_max"][-1] == 5039.0  # a bucket's peak
        assert temperature["series"]["temperature_mean"][0] == 20.5
        # From and to, sent as UTC by the page's script: just that span, at full detail.
        span = {"from": "2023-11-14T22:00:00.000Z", "to": "2023-11-14T22:10:00.000Z"}
        narrow = (await http.get("/gateways/gw1/devices/line-1/m-0", params=span)).text
        assert 'id="digest-count">5 digests in 5 points.' in narrow
        assert charts(narrow)["temperature"]["series"]["temperature_max"] == [
            5033.0, 5034.0, 5035.0, 5036.0, 5037.0
        ]  # fmt: skip
        bad = await http.get("/gateways/gw1/devices/line-1/m-0", params={"from": "yesterday"})
        assert bad.status_code == 422
        assert (
            "from: expected a date and time like 2026-12-04T10:00Z, got &#39;yesterday&#39;"
            in bad.text
        )
        backwards = await http.get(
            "/gateways/gw1/devices/line-1/m-0", params={"from": span["to"], "to": span["from"]}
        )
        assert backwards.status_code == 422
        assert "from: must be before to" in backwards.text


async def test_an_outage_is_named_only_on_evidence(cloud: Cloud) -> None:
    """The cloud clock is today, the records' 2023: every alert here arrived years late."""
    write = cloud.store.write
    # gw1: the health record after the raise says the uplink was down with a backlog.
    write([batch("gw1", "alert", [(1, "line-1/m-0", alert("a", "raised", raised_at=NOW))])])
    down = {
        "ts": NOW + 30,
        "health_every": 30.0,
        "uplink": {"status": "degraded", "reasons": ["no ack for 45 s"], "connected": False,
                   "backlog_records": 12, "oldest_age_s": 30.0},
    }  # fmt: skip
    write([batch("gw1", "health", [(2, "", down)])])
    # gw2: its health around the raise is fine: a late arrival with no outage on record.
    write([batch("gw2", "health", [(1, "", {"ts": NOW - 10, "health_every": 30.0})])])
    write([batch("gw2", "alert", [(2, "line-1/m-0", alert("b", "raised", raised_at=NOW))])])
    fine = {"ts": NOW + 20, "health_every": 30.0,
            "uplink": {"status": "ok", "connected": True, "backlog_records": 0}}  # fmt: skip
    write([batch("gw2", "health", [(3, "", fine)])])
    # gw3: health records missing around the raise (10 periods between the two around it).
    write([batch("gw3", "health", [(1, "", {"ts": NOW - 100, "health_every": 30.0})])])
    write([batch("gw3", "alert", [(2, "line-1/m-0", alert("c", "raised", raised_at=NOW))])])
    write([batch("gw3", "health", [(3, "", {"ts": NOW + 200, "health_every": 30.0})])])
    # gw4: the cloud raised gateway_silent over the raise time.
    write([batch("gw4", "alert", [(1, "line-1/m-0", alert("d", "raised", raised_at=NOW))])])
    silent = silence._episode("gw4", NOW - 60, 90.0, None, None, NOW + 30)
    with cloud.engine.begin() as conn:
        conn.execute(insert(Alert).values({**silent, "cleared_at": NOW + 100, "state": "cleared"}))
    with cloud.engine.connect() as conn:
        episode = {
            g: pk
            for pk, g in conn.execute(
                select(Alert.id, Alert.gateway_id).where(Alert.rule != silence.RULE)
            )
        }
    async with await signed_in(cloud, "viewer") as http:
        outage = (await http.get(f"/alerts/{episode['gw1']}")).text
        neutral = (await http.get(f"/alerts/{episode['gw2']}")).text
        missing = (await http.get(f"/alerts/{episode['gw3']}")).text
        unheard = (await http.get(f"/alerts/{episode['gw4']}")).text
    assert (
        "by an outage.</strong> The gateway&#39;s health record of 2023-11-14 22:13:50 UTC "
        in outage
    )
    assert "reports its uplink disconnected; uplink degraded: no ack for 45 s; 12 records" in outage
    assert "by an outage" not in neutral
    assert re.search(r'id="delay-note">Delayed [\d.]+ d between its raise at the edge', neutral)
    assert "shows no outage then" in neutral
    assert "by an outage.</strong> No health record of gw3 arrived between" in missing
    assert (
        "by an outage.</strong> The cloud heard nothing from gw4 from 2023-11-14 22:12:20"
        in unheard
    )
