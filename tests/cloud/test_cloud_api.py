"""The read API through a real uvicorn on a free port, with httpx: filters, keyset
pagination, gateway detail with gaps, errors, metrics, health and the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cloudkit import NOW, Database, alert, batch, bearer, digest, digests
from support import Broker, eventually

from cloud.app import Cloud, CloudOptions
from fogline.envelope import uplink_topic
from fogline.urls import parse_broker_url


@pytest.fixture
async def cloud(broker: Broker, database: Database) -> AsyncIterator[Cloud]:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="api",
        wait_broker=None,
    )
    async with Cloud(options) as c:
        yield c


@pytest.fixture
async def http(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", headers=bearer(cloud.engine)
    ) as client:
        yield client


async def walk(http: httpx.AsyncClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following `next` until it is null."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await http.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next"]
        if cursor is None:
            return pages


def seed_digests(cloud: Cloud) -> None:
    """gw1: 3 devices x 40 windows (ties on window_end across devices); gw2: 30 windows."""
    records = [
        (w * 3 + d + 1, f"line-1/m-{d}", digest(NOW + w * 10, machine=f"m-{d}"))
        for w in range(40)
        for d in range(3)
    ]
    cloud.store.write([batch("gw1", "digest", records)])
    cloud.store.write(
        [batch("gw2", "digest", [(s, "farm/f-1", digest(NOW + s * 10)) for s in range(1, 31)])]
    )


async def test_digest_pages_cover_everything_once_newest_first(
    cloud: Cloud, http: httpx.AsyncClient
) -> None:
    seed_digests(cloud)
    pages = await walk(http, "/api/digests", limit=17)
    items = [item for page in pages for item in page]
    assert [len(p) for p in pages[:-1]] == [17] * (len(pages) - 1)
    assert len(items) == 150
    assert len({(i["gateway"], i["seq"]) for i in items}) == 150
    ends = [i["window_end"] for i in items]
    assert ends == sorted(ends, reverse=True)
    first = items[0]
    assert set(first) == {
        "gateway", "seq", "device", "window_start", "window_end", "ts", "metrics",
    }  # fmt: skip
    assert first["metrics"]["count"] == 10


async def test_digest_filters(cloud: Cloud, http: httpx.AsyncClient) -> None:
    seed_digests(cloud)
    pages = await walk(http, "/api/digests", gateway="gw1", device="line-1/m-2", limit=7)
    items = [i for p in pages for i in p]
    assert len(items) == 40
    assert {(i["gateway"], i["device"]) for i in items} == {("gw1", "line-1/m-2")}
    since, until = NOW + 100, NOW + 200  # [since, until) on window_end
    items = [i for p in await walk(http, "/api/digests", since=since, until=until) for i in p]
    assert len(items) == 10 * 3 + 10
    assert all(since <= i["window_end"] < until for i in items)
    iso = "2023-11-14T22:15:00Z"  # NOW + 100 s, as ISO 8601
    by_iso = await http.get("/api/digests", params={"since": iso, "gateway": "gw2"})
    assert min(i["window_end"] for i in by_iso.json()["items"]) == NOW + 100
    empty = await http.get("/api/digests", params={"gateway": "nobody"})
    assert empty.json() == {"items": [], "next": None}


def seed_alerts(cloud: Cloud) -> None:
    events = []
    seq = 0
    for n in range(12):
        severity = ("info", "warning", "critical")[n % 3]
        seq += 1
        events.append(
            (seq, f"line-1/m-{n % 2}", alert(f"a{n}", "raised", NOW + n, severity=severity))
        )
        if n % 4 == 0:
            seq += 1
            cleared = alert(f"a{n}", "cleared", NOW + n, NOW + n + 5, severity=severity)
            events.append((seq, f"line-1/m-{n % 2}", cleared))
    cloud.store.write([batch("gw1", "alert", events)])
    cloud.store.write([batch("gw2", "alert", [(1, "farm/f-1", alert("b0", "raised", NOW + 50))])])


async def test_alert_episodes_filters_and_pages(cloud: Cloud, http: httpx.AsyncClient) -> None:
    seed_alerts(cloud)
    items = [i for p in await walk(http, "/api/alerts", limit=5) for i in p]
    assert len(items) == 13
    assert [i["alert_id"] for i in items[:3]] == ["b0", "a11", "a10"]
    cleared = (await http.get("/api/alerts", params={"state": "cleared"})).json()["items"]
    assert sorted(i["alert_id"] for i in cleared) == ["a0", "a4", "a8"]
    episode = next(i for i in cleared if i["alert_id"] == "a4")
    assert (episode["raised_at"], episode["cleared_at"]) == (NOW + 4, NOW + 9)
    assert set(episode["payload"]) == {"raised", "cleared"}
    assert episode["seq"] == episode["raised_seq"]
    query = {"gateway": "gw1", "severity": "critical", "device": "line-1/m-1", "state": "open"}
    found = (await http.get("/api/alerts", params=query)).json()["items"]
    assert [i["alert_id"] for i in found] == ["a11", "a5"]
    window = {"since": NOW + 3, "until": NOW + 6}
    found = (await http.get("/api/alerts", params=window)).json()["items"]
    assert [i["alert_id"] for i in found] == ["a5", "a4", "a3"]
    bad = await http.get("/api/alerts", params={"state": "closed"})
    assert bad.status_code == 422


async def test_gateways_list_and_detail_with_gaps(cloud: Cloud, http: httpx.AsyncClient) -> None:
    for n in range(5):
        cloud.store.write([batch(f"gw{n}", "digest", [(1, "d", digest())])])
    cloud.store.write([batch("gw1", "digest", [(s, "d", digest()) for s in (2, 6, 7, 10)])])
    health = {
        "ts": NOW, "gateway": "gw1", "version": "0.1.0", "pipeline": "factory",
        "edge_connected": True, "uplink_pending": 0,
        "outbox": {"depth": 3, "bytes": 900, "evicted": {"digest": 2}, "evicted_ranges": [[3, 4]],
                   "pending_from": 11},
    }  # fmt: skip
    cloud.store.write([batch("gw1", "health", [(11, "", health)])])
    pages = await walk(http, "/api/gateways", limit=2)
    assert [[g["gateway"] for g in p] for p in pages] == [["gw0", "gw1"], ["gw2", "gw3"], ["gw4"]]
    response = await http.get("/api/gateways/gw1")
    assert response.status_code == 200
    gw = response.json()
    assert (gw["received"], gw["max_seq"], gw["evicted"]) == (6, 11, 2)
    assert gw["gaps"] == [
        {"from": 3, "to": 4, "explained": "evicted"},
        {"from": 5, "to": 5, "explained": None},
        {"from": 8, "to": 9, "explained": None},
    ]
    # The gateway held nothing below 11 any more: 5, 8 and 9 were lost on the way.
    assert (gw["missing"], gw["unexplained"], gw["gaps_truncated"]) == (5, 3, False)
    assert (gw["in_flight"], gw["in_flight_from"], gw["pending_from"]) == (0, 11, 11)
    assert (gw["status"], gw["silent_since"]) == ("online", None)
    assert gw["last_known_backlog"]["records"] == 3  # outbox.depth: no uplink object
    assert (gw["version"], gw["pipeline"], gw["outbox_depth"]) == ("0.1.0", "factory", 3)
    assert gw["outbox_evicted"] == {"digest": 2}
    assert gw["health"]["uplink_pending"] == 0
    missing = await http.get("/api/gateways/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "unknown gateway 'nope'"}


async def test_bad_cursor_and_limits(cloud: Cloud, http: httpx.AsyncClient) -> None:
    response = await http.get("/api/digests", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid cursor")
    for path in ("/api/digests", "/api/alerts", "/api/gateways"):
        assert (await http.get(path, params={"limit": 1001})).status_code == 422
        assert (await http.get(path, params={"limit": 1000})).status_code == 200


async def test_ingest_to_api_metrics_health_and_openapi(
    cloud: Cloud, http: httpx.AsyncClient, collector_factory
) -> None:
    watch = collector_factory(["fogline/+/down/ack"])
    body = digests("gw9", range(1, 11))
    watch.publish(uplink_topic("gw9", "digest"), body)
    watch.publish(uplink_topic("gw9", "digest"), body)
    watch.publish(uplink_topic("gw9", "digest"), b"{nope")
    await eventually(lambda: len(watch.on("fogline/gw9/down/ack")) == 2, what="acks")
    items = (await http.get("/api/digests", params={"gateway": "gw9"})).json()["items"]
    assert sorted(i["seq"] for i in items) == list(range(1, 11))
    metrics = (await http.get("/metrics")).text
    for line in (
        "fogline_cloud_messages_in_total 3",
        'fogline_cloud_records_stored_total{kind="digest"} 10',
        'fogline_cloud_duplicates_total{kind="digest"} 10',
        'fogline_cloud_rejects_total{reason="corrupt"} 1',
        "fogline_cloud_acks_published_total 2",
        "fogline_cloud_drain_seconds_count",
        "fogline_cloud_queue_depth 0",
    ):
        assert line in metrics
    health = await http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "broker_connected": True, "database": True}
    spec = (await http.get("/openapi.json")).json()
    assert {"/api/gateways", "/api/gateways/{gateway_id}", "/api/alerts", "/api/digests"} <= set(
        spec["paths"]
    )
    assert {"DigestPage", "AlertPage", "GatewayDetail", "GapOut"} <= set(
        spec["components"]["schemas"]
    )


async def test_healthz_reports_a_missing_broker(
    broker: Broker, cloud: Cloud, http: httpx.AsyncClient
) -> None:
    broker.stop()
    await eventually(lambda: not cloud.ingest.connected(), what="the link to notice")
    health = await http.get("/healthz")
    assert health.status_code == 503
    assert health.json()["broker_connected"] is False
