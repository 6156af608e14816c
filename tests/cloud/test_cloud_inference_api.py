"""Escalations uplinked as a gateway sends them, through a real mosquitto, into both
databases: decided before the ack, listed with both decisions, filtered and paged; and
`/api/inference` from the escalations and the gateway's health."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudkit import NOW, Database, batch, bearer, payload
from inferkit import FACTORY_LABELS, Clock, escalation, inputs_for, running_cloud, tiny_model
from sqlalchemy.orm import Session
from support import Broker, eventually

from cloud import people, queries
from cloud.app import Cloud
from fogline.envelope import decode_ack, uplink_topic


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cloud(
    broker: Broker, database: Database, tmp_path: Path, clock: Clock
) -> AsyncIterator[Cloud]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "factory-vibration-cloud.tflite").write_bytes(tiny_model())
    async with running_cloud(broker, database, models, clock=clock) as c:
        yield c


@pytest.fixture
async def http(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", headers=bearer(cloud.engine)
    ) as client:
        yield client


async def items(http: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of every page, following `next`."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await http.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        found += body["items"]
        cursor = body["next"]
        if cursor is None:
            return found


async def test_an_uplinked_escalation_is_decided_by_the_time_it_is_acked(
    cloud: Cloud, http: httpx.AsyncClient, clock: Clock, collector_factory
) -> None:
    watch = collector_factory(["fogline/+/down/ack"])
    records = [
        (41, "line-1/m-03", escalation("imbalance", inputs_for("normal"))),
        (42, "line-1/m-03", escalation("normal", inputs_for("normal", vibration_cv=None))),
        (43, "line-1/m-04", escalation("bearing", inputs_for("bearing"), machine="m-04")),
    ]
    body = payload("gw1", "escalation", records)
    watch.publish(uplink_topic("gw1", "escalation"), body)
    await eventually(lambda: watch.on("fogline/gw1/down/ack"), what="the ack")
    listed = await items(http, "/api/escalations")
    assert [i["seq"] for i in listed] == [43, 42, 41]  # same window end: last stored first
    decided = listed[2]
    assert set(decided) == {
        "gateway", "seq", "device", "at", "ts", "model", "edge", "cloud", "agree", "reason",
        "inputs", "data",
    }  # fmt: skip
    assert (decided["gateway"], decided["device"], decided["model"]) == (
        "gw1",
        "line-1/m-03",
        "factory-vibration",
    )
    assert decided["edge"] == {
        "label": "imbalance",
        "confidence": 0.52,
        "entropy": 0.71,
        "model_version": "1",
        "probabilities": {"normal": 0.1, "imbalance": 0.52, "bearing": 0.1},
    }
    cloud_says = decided["cloud"]
    assert (cloud_says["label"], cloud_says["model_version"], cloud_says["decided_at"]) == (
        "normal",
        "7",
        clock.now,
    )
    assert cloud_says["confidence"] == pytest.approx(0.9999, abs=1e-4)
    assert set(cloud_says["probabilities"]) == set(FACTORY_LABELS)
    assert (decided["agree"], decided["reason"]) == (False, None)
    assert decided["inputs"] == inputs_for("normal")
    assert decided["data"]["machine"] == "m-03"
    undecided = listed[1]
    assert (undecided["cloud"], undecided["agree"]) == (None, None)
    assert undecided["reason"] == "inputs missing: vibration_cv"

    decided_at = clock.now
    clock.now += 60
    watch.publish(uplink_topic("gw1", "escalation"), body)  # the gateway resends
    await eventually(lambda: len(watch.on("fogline/gw1/down/ack")) == 2, what="a second ack")
    assert [decode_ack(p) for _, p in watch.on("fogline/gw1/down/ack")] == [[(41, 43)]] * 2
    again = await items(http, "/api/escalations")
    assert [i["cloud"] and i["cloud"]["decided_at"] for i in again] == [
        decided_at,
        None,
        decided_at,
    ]
    assert cloud.metrics.duplicates == {"escalation": 3}
    # Only the fault the cloud diagnosed raised an alert (once).
    (alert,) = (await http.get("/api/alerts")).json()["items"]
    assert (alert["rule"], alert["severity"], alert["state"]) == (
        "model:bearing",
        "warning",
        "open",
    )
    assert (alert["device"], alert["seq"]) == ("line-1/m-04", 43)
    assert alert["message"] == "line-1/m-04: the cloud model factory-vibration says bearing"


async def test_escalation_filters_and_pages(cloud: Cloud, http: httpx.AsyncClient) -> None:
    records = []
    for seq in range(1, 31):
        said = FACTORY_LABELS[seq % 3]
        edge = said if seq % 2 else FACTORY_LABELS[(seq + 1) % 3]
        machine = f"m-{seq % 3}"
        data = escalation(edge, inputs_for(said), window_end=NOW + seq, machine=machine)
        records.append((seq, f"line-1/{machine}", data))
    cloud.store.write([batch("gw1", "escalation", records)])
    farm = escalation("normal", {"x": 1.0}, window_end=NOW + 100, model="farm-irrigation")
    cloud.store.write([batch("gw2", "escalation", [(1, "farm/f-1", farm)])])

    everything = await items(http, "/api/escalations", limit=4)
    assert len(everything) == 31
    assert [i["at"] for i in everything] == sorted((i["at"] for i in everything), reverse=True)
    assert everything[0]["reason"] == "no cloud model named 'farm-irrigation'"
    agreed = await items(http, "/api/escalations", agree=True, limit=3)
    assert sorted(i["seq"] for i in agreed) == list(range(1, 31, 2))
    assert all(i["edge"]["label"] == i["cloud"]["label"] for i in agreed)
    disagreed = await items(http, "/api/escalations", agree="false")
    assert sorted(i["seq"] for i in disagreed) == list(range(2, 31, 2))
    by_device = await items(
        http, "/api/escalations", gateway="gw1", device="line-1/m-1", model="factory-vibration"
    )
    assert sorted(i["seq"] for i in by_device) == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
    window = await items(http, "/api/escalations", since=NOW + 10, until=NOW + 20)
    assert [i["seq"] for i in window] == list(range(19, 9, -1))
    assert await items(http, "/api/escalations", model="farm-irrigation") == [everything[0]]
    assert await items(http, "/api/escalations", gateway="gw3") == []
    bad = await http.get("/api/escalations", params={"cursor": "nope"})
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("invalid cursor")
    assert (await http.get("/api/escalations", params={"limit": 1001})).status_code == 422


def health(inference: dict[str, Any], ts: float = NOW) -> dict[str, Any]:
    return {"ts": ts, "version": "0.1.0", "pipeline": "factory", "inference": inference}


def step(name: str, edge: int, budget: int, escalated: int, version: str = "1") -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "sha256": f"{name}-{version}".encode().hex(),
        "threshold": 0.45,
        "edge": edge,
        "budget": budget,
        "escalated": escalated,
    }


async def test_inference_summary_from_escalations_and_health(
    cloud: Cloud, http: httpx.AsyncClient
) -> None:
    cloud.store.write(
        [
            batch(
                "gw1",
                "escalation",
                [
                    (1, "line-1/m-01", escalation("normal", inputs_for("normal"))),
                    (2, "line-1/m-01", escalation("normal", inputs_for("bearing"))),
                    (3, "line-1/m-02", escalation("bearing", inputs_for("bearing"))),
                    (4, "line-1/m-02", escalation("bearing", inputs_for("bearing", vibration_cv=None))),
                    (5, "line-1/m-02", escalation("normal", {}, model=None)),
                ],
            ),
            batch("gw1", "health", [(6, "", health({"diagnosis": step("factory-vibration", 1200, 3, 97)}))]),
            batch(
                "gw2",
                "health",
                [
                    (1, "", health({"a": step("farm-irrigation", 10, 0, 0)})),
                    (2, "", health({"a": step("farm-irrigation", 30, 5, 15, version="2"),
                                    "b": step("farm-irrigation", 50, 0, 0, version="2"),
                                    "c": {"name": "broken", "edge": -1, "threshold": "high"},
                                    "d": "not an object"}, ts=NOW + 60)),
                ],
            ),
        ]
    )  # fmt: skip
    summary = (await http.get("/api/inference")).json()["items"]
    assert [(i["gateway"], i["model"]) for i in summary] == [
        ("gw1", None),
        ("gw1", "factory-vibration"),
        ("gw2", "broken"),
        ("gw2", "farm-irrigation"),
    ]
    nameless, factory, broken, farm = summary
    assert (nameless["escalations"], nameless["undecided"], nameless["steps"]) == (1, 1, [])
    assert nameless["local_exit_rate"] is None
    assert {k: factory[k] for k in ("escalations", "decided", "undecided", "agreed")} == {
        "escalations": 4,
        "decided": 3,
        "undecided": 1,
        "agreed": 2,
    }
    assert factory["agreement_rate"] == pytest.approx(2 / 3)
    assert factory["local_exit_rate"] == pytest.approx(1203 / 1300)
    assert factory["health_ts"] == NOW
    assert factory["steps"] == [
        {"step": "diagnosis", **step("factory-vibration", 1200, 3, 97)},
    ]
    assert (farm["escalations"], farm["agreement_rate"], farm["health_ts"]) == (0, None, NOW + 60)
    assert [(s["step"], s["version"]) for s in farm["steps"]] == [("a", "2"), ("b", "2")]
    assert farm["local_exit_rate"] == pytest.approx((35 + 50) / 100)  # both steps' counts
    assert broken["steps"] == [
        {"step": "c", "name": "broken", "version": None, "sha256": None, "threshold": None,
         "edge": None, "budget": None, "escalated": None},
    ]  # fmt: skip
    assert broken["local_exit_rate"] is None
    only = (await http.get("/api/inference", params={"gateway": "gw2"})).json()["items"]
    assert only == [broken, farm]
    assert (await http.get("/api/inference", params={"gateway": "gw9"})).json() == {"items": []}


async def test_local_exit_rate_per_hour_from_health_counters(cloud: Cloud) -> None:
    h0 = NOW // 3600 * 3600
    h1, h2 = h0 + 3600, h0 + 7200

    def at(ts: float, edge: int, budget: int, escalated: int) -> dict[str, Any]:
        return health({"diagnosis": step("factory-vibration", edge, budget, escalated)}, ts)

    cloud.store.write(
        [
            batch("gw1", "health", [
                (1, "", at(h0 + 100, 100, 0, 0)),
                (2, "", at(h0 + 3000, 200, 0, 0)),  # the last of h0: h1 counts from here
                (3, "", at(h1 + 10, 290, 5, 5)),
                (4, "", at(h1 + 2000, 380, 10, 10)),  # h1: 190 local of 200
                (5, "", at(h2 + 5, 9, 0, 1)),  # restarted: its counters begin again
            ]),
            batch("gw2", "health", [
                (1, "", at(h1 + 100, 50, 0, 50)),  # no earlier hour: a baseline only
                (2, "", at(h2 + 100, 80, 0, 70)),  # h2: 30 local of 50
            ]),
            batch("gw3", "health", [
                (1, "", at(h2 + 10, 10, 0, 10)),  # its first record: a baseline
                (2, "", at(h2 + 20, 20, 0, 10)),  # neither first nor last of h2: not read
                (3, "", at(h2 + 30, 40, 0, 20)),  # h2: 30 local of 40 since its first
            ]),
        ]
    )  # fmt: skip
    with Session(cloud.engine) as db:
        assert queries.local_exit_trend(db, h1) == pytest.approx(
            {h1: 190 / 200, h2: (9 + 30 + 30) / (10 + 50 + 40)}
        )
        assert queries.local_exit_trend(db, h2 + 3600) == {}
    user = people.add_user(cloud.engine, "ana", "viewer", None, NOW)
    cookie, _ = people.open_session(cloud.engine, user, h2)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", cookies={"fogline_session": cookie}
    ) as http:
        page = (await http.get("/models")).text
    block = re.search(r'<script type="application/json" id="trend">(.*?)</script>', page, re.DOTALL)
    assert block is not None
    trend = json.loads(block.group(1))
    assert trend["series"]["local exit (%)"][trend["x"].index(h2)] == 69.0
