"""Operators' work on alerts through the API, on SQLite and PostgreSQL: the four states and
who moved them, bulk actions, silences that mark but never drop, counts, and the audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cloudkit import NOW, Database, alert, batch, bearer
from support import Broker

from cloud.app import Cloud, CloudOptions
from fogline.urls import parse_broker_url


@pytest.fixture
async def cloud(broker: Broker, database: Database) -> AsyncIterator[Cloud]:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="work",
        wait_broker=None,
        clock=lambda: NOW + 1000,
    )
    async with Cloud(options) as c:
        yield c


@pytest.fixture
async def http(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", headers=bearer(cloud.engine, "operator")
    ) as client:
        yield client


def raise_(cloud: Cloud, seq: int, alert_id: str, device: str = "line-1/m-01", **kw: Any) -> None:
    cloud.store.write([batch("gw1", "alert", [(seq, device, alert(alert_id, "raised", **kw))])])


def clear(cloud: Cloud, seq: int, alert_id: str) -> None:
    record = alert(alert_id, "cleared", cleared_at=NOW + 60)
    cloud.store.write([batch("gw1", "alert", [(seq, "line-1/m-01", record)])])


async def act(http: httpx.AsyncClient, ids: list[int], action: str, text: str | None = None) -> Any:
    response = await http.post(
        "/api/alerts/actions", json={"ids": ids, "action": action, "text": text}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def episode(http: httpx.AsyncClient, alert_id: int) -> Any:
    response = await http.get(f"/api/alerts/{alert_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_open_acknowledged_cleared_resolved_and_who_did_it(
    cloud: Cloud, http: httpx.AsyncClient
) -> None:
    raise_(cloud, 1, "hot/1")
    assert (await act(http, [1], "acknowledge"))["changed"] == [1]
    assert (await act(http, [1], "acknowledge"))["unchanged"] == [1]  # once is enough
    one = await episode(http, 1)
    assert (one["state"], one["acknowledged_by"], one["acknowledged_at"]) == (
        "acknowledged",
        "test-operator",
        NOW + 1000,
    )
    clear(cloud, 2, "hot/1")
    assert (await episode(http, 1))["state"] == "cleared"
    await act(http, [1], "resolve")
    clear(cloud, 2, "hot/1")  # a retransmitted clear changes nothing
    one = await episode(http, 1)
    assert (one["state"], one["resolved_by"], one["cleared_at"]) == (
        "resolved",
        "test-operator",
        NOW + 60,
    )
    log = [(a["actor"], a["action"], a["detail"].get("to")) for a in one["activity"]]
    assert log == [
        ("gateway gw1", "raised", None),
        ("test-operator", "acknowledge", "acknowledged"),
        ("gateway gw1", "cleared", None),
        ("test-operator", "resolve", "resolved"),
    ]


async def test_a_clear_after_resolve_keeps_it_resolved(
    cloud: Cloud, http: httpx.AsyncClient
) -> None:
    raise_(cloud, 1, "hot/1")
    await act(http, [1], "resolve")
    clear(cloud, 2, "hot/1")
    one = await episode(http, 1)
    assert (one["state"], one["cleared_at"], one["cleared_seq"]) == ("resolved", NOW + 60, 2)


async def test_bulk_assign_comment_and_false_alarm(cloud: Cloud, http: httpx.AsyncClient) -> None:
    for seq in (1, 2, 3):
        raise_(cloud, seq, f"hot/{seq}", raised_at=NOW + seq)
    done = await act(http, [1, 2, 3, 99], "assign", "ana")
    assert done == {"changed": [1, 2, 3], "unchanged": [], "missing": [99]}
    await act(http, [2, 3], "comment", "checked the cooling loop")
    empty = await http.post(
        "/api/alerts/actions", json={"ids": [1], "action": "comment", "text": " "}
    )
    assert empty.status_code == 422
    assert empty.json()["detail"] == "comment: say why (a non-empty text is required)"
    await act(http, [3], "false_alarm", "sensor unplugged for cleaning")
    items = {i["id"]: i for i in (await http.get("/api/alerts")).json()["items"]}
    assert {i["assignee"] for i in items.values()} == {"ana"}
    assert (items[3]["state"], items[3]["false_alarm"]) == (
        "resolved",
        "sensor unplugged for cleaning",
    )
    assert items[2]["state"] == "open"
    comments = [a for a in (await episode(http, 2))["activity"] if a["action"] == "comment"]
    assert [c["detail"]["text"] for c in comments] == ["checked the cooling loop"]


async def test_silences_mark_and_count_but_never_drop(
    cloud: Cloud, http: httpx.AsyncClient
) -> None:
    raise_(cloud, 1, "hot/1")
    made = await http.post(
        "/api/silences",
        json={"gateway": "gw1", "device": "line-1/m-01", "rule": "hot", "until": NOW + 5000},
    )
    assert made.status_code == 201, made.text
    silence = made.json()
    assert (silence["active"], silence["covered"], silence["created_by"]) == (
        True,
        1,
        "test-operator",
    )
    raise_(cloud, 2, "hot/2")  # the same rule and device: silenced as it arrives
    raise_(cloud, 3, "hot/3", device="line-1/m-02")  # another device: not silenced
    raise_(cloud, 4, "cold/1", rule="cold")  # another rule: not silenced
    items = {i["alert_id"]: i for i in (await http.get("/api/alerts")).json()["items"]}
    assert len(items) == 4  # stored and listed, all of them
    assert {k for k, v in items.items() if v["silence"] == silence["id"]} == {"hot/1", "hot/2"}
    counts = (await http.get("/api/alerts/counts")).json()
    assert counts == {
        "state": {"open": 4, "acknowledged": 0, "cleared": 0, "resolved": 0},
        "severity": {"info": 0, "warning": 0, "critical": 4},
        "silenced": 2,
    }
    hidden = (await http.get("/api/alerts", params={"silenced": False})).json()["items"]
    assert sorted(i["alert_id"] for i in hidden) == ["cold/1", "hot/3"]
    assert (await http.delete(f"/api/silences/{silence['id']}")).status_code == 204
    assert (await http.delete(f"/api/silences/{silence['id']}")).status_code == 404
    raise_(cloud, 5, "hot/5")
    assert (await episode(http, 5))["silence"] is None
    listed = (await http.get("/api/silences")).json()["items"]
    assert [(s["active"], s["covered"]) for s in listed] == [(False, 2)]
    past = await http.post("/api/silences", json={"gateway": "gw1", "rule": "hot", "until": NOW})
    assert past.status_code == 422


async def test_counts_follow_the_filters(cloud: Cloud, http: httpx.AsyncClient) -> None:
    raise_(cloud, 1, "a", severity="warning")
    raise_(cloud, 2, "b", severity="critical")
    raise_(cloud, 3, "c", severity="critical", rule="cold")
    await act(http, [2], "resolve")
    counts = (await http.get("/api/alerts/counts", params={"rule": "hot"})).json()
    assert counts["state"] == {"open": 1, "acknowledged": 0, "cleared": 0, "resolved": 1}
    assert counts["severity"] == {"info": 0, "warning": 1, "critical": 0}  # not resolved only
