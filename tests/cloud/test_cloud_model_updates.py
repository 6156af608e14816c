"""Models over the air from the cloud, against a real mosquitto and both databases: an upload
becomes retained chunks that `fogline.ota.Assembler` turns back into the same bytes, a
shorter one clears the extra chunks, bad uploads are refused with the reason, and the
gateway's `model_update` events and health move the upload's status."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudkit import NOW, Database, batch, bearer, console, payload
from inferkit import FACTORY, Clock, running_cloud, tiny_model
from sqlalchemy import select
from support import Broker, Collector, eventually

from cloud.app import Cloud
from cloud.model_updates import WINDOW
from cloud.models import Activity
from fogline import ota
from fogline.envelope import uplink_topic
from fogline.model import Model, ModelError

CHUNK = 400  # the shipped edge model makes more chunks than one window
LIMIT = 8000
# The cloud sends a model only to an infer step the gateway's health names.
HEALTH = {"ts": NOW, "version": "0.1.0", "inference": {"diagnosis": {}, "spare": {}}}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cloud(
    broker: Broker, database: Database, tmp_path: Path, clock: Clock
) -> AsyncIterator[Cloud]:
    async with running_cloud(
        broker, database, tmp_path, clock=clock, model_chunk_size=CHUNK, max_model_bytes=LIMIT
    ) as c:
        c.store.write([batch("gw1", "health", [(1, "", HEALTH)])])
        yield c


@pytest.fixture
async def http(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", headers=bearer(cloud.engine)
    ) as client:
        yield client


async def put(
    http: httpx.AsyncClient,
    data: bytes,
    step: str = "diagnosis",
    gateway: str = "gw1",
    **params: str,
) -> httpx.Response:
    return await http.put(
        f"/api/gateways/{gateway}/models/{step}",
        content=data,
        params=params,
        headers={"content-type": "application/octet-stream"},
    )


async def retained(broker: Broker, collector_factory, count: int) -> list[tuple[str, bytes]]:
    """What a gateway connecting now receives on its model topics."""
    watch: Collector = collector_factory(["fogline/gw1/down/model/#"])
    await eventually(lambda: len(watch.messages) >= count, what=f"{count} retained chunks")
    return sorted(watch.messages)


def assemble(messages: list[tuple[str, bytes]]) -> tuple[ota.Manifest, bytes]:
    assembler = ota.Assembler()
    done = [assembler.add(p) for _, p in messages if p]
    whole = [d for d in done if d is not None]
    assert len(whole) == 1
    return whole[0]


async def test_an_upload_is_published_retained_in_chunks_and_a_shorter_one_clears_the_rest(
    cloud: Cloud, http: httpx.AsyncClient, broker: Broker, clock: Clock, collector_factory
) -> None:
    data = FACTORY.read_bytes()
    info = Model(data).info
    count = -(-len(data) // CHUNK)
    assert count > WINDOW
    response = await put(http, data)
    assert response.status_code == 200, response.text
    first = response.json()
    assert first == {
        "id": first["id"],
        "gateway": "gw1",
        "step": "diagnosis",
        "name": info.name,
        "version": info.version,
        "serial": int(clock.now * 1_000_000),  # the first upload: the time in microseconds
        "sha256": info.sha256,
        "size": len(data),
        "chunks": count,
        "uploaded_at": clock.now,
        "status": "published",
        "reason": None,
        "reported_at": None,
        "current": False,
    }
    chunks = await retained(broker, collector_factory, count)
    assert [t for t, _ in chunks] == sorted(ota.topic("gw1", "diagnosis", i) for i in range(count))
    manifest, whole = assemble(chunks)
    assert whole == data
    assert (manifest.step, manifest.version, manifest.sha256, manifest.count) == (
        "diagnosis",
        info.version,
        info.sha256,
        count,
    )

    listening = collector_factory(["fogline/gw1/down/model/#"])
    await eventually(lambda: len(listening.messages) == count, what="the retained chunks")
    smaller = tiny_model(kind="edge")
    fewer = -(-len(smaller) // CHUNK)
    assert 1 < fewer < count
    response = await put(http, smaller, version="2")
    assert response.status_code == 200, response.text
    second = response.json()
    assert (second["version"], second["chunks"], second["id"] > first["id"]) == ("2", fewer, True)
    # Live subscribers see the new chunks, then the old chunks' topics emptied...
    cleared = [ota.topic("gw1", "diagnosis", i) for i in range(fewer, count)]
    await eventually(
        lambda: [t for t, p in listening.messages[count:] if not p] == cleared,
        what="the extra chunk topics cleared",
    )
    # ...and a gateway that connects now gets the new model alone.
    now = await retained(broker, collector_factory, fewer)
    assert [t for t, _ in now] == sorted(ota.topic("gw1", "diagnosis", i) for i in range(fewer))
    manifest, whole = assemble(now)
    assert (whole, manifest.version) == (smaller, "2")

    listed = (await http.get("/api/gateways/gw1/models")).json()
    assert listed["gateway"] == "gw1"
    assert [s["step"] for s in listed["running"]] == ["diagnosis", "spare"]  # from HEALTH
    assert [u["id"] for u in listed["uploads"]] == [second["id"], first["id"]]
    assert listed["uploads"][1] == first
    assert [
        u["id"]
        for u in (await http.get("/api/gateways/gw1/models", params={"limit": 1})).json()["uploads"]
    ] == [second["id"]]


def event(
    step: str, sha256: str, status: str, ts: float, reason: str | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": "model_update",
        "step": step,
        "version": "2",
        "sha256": sha256,
        "status": status,
        "ts": ts,
    }
    if reason is not None:
        data["reason"] = reason
    return data


async def test_the_gateways_reports_set_running_or_refused(
    cloud: Cloud, http: httpx.AsyncClient, collector_factory
) -> None:
    good = (await put(http, FACTORY.read_bytes())).json()
    odd = (await put(http, tiny_model(kind="edge"), step="spare")).json()
    watch = collector_factory(["fogline/+/down/ack"])
    events = [
        (2, "", event("diagnosis", good["sha256"], "running", NOW + 10)),
        (3, "", event("spare", odd["sha256"], "refused", NOW + 11, "inputs ['x'] are not fields")),
        (4, "", event("spare", "0" * 64, "running", NOW + 12)),  # bytes nobody uploaded
        (5, "", event("diagnosis", good["sha256"], "downloading", NOW + 13)),  # not a verdict
        (6, "", {"event": "restarted", "ts": NOW + 14}),
    ]
    watch.publish(uplink_topic("gw1", "event"), payload("gw1", "event", events))
    await eventually(lambda: watch.on("fogline/gw1/down/ack"), what="the ack")
    uploads = {u["step"]: u for u in (await http.get("/api/gateways/gw1/models")).json()["uploads"]}
    assert {k: (u["status"], u["reason"], u["reported_at"]) for k, u in uploads.items()} == {
        "diagnosis": ("running", None, NOW + 10),
        "spare": ("refused", "inputs ['x'] are not fields", NOW + 11),
    }
    # An older report arriving late changes nothing; a newer one wins.
    cloud.store.write(
        [
            batch(
                "gw1",
                "event",
                [(7, "", event("diagnosis", good["sha256"], "refused", NOW + 5, "late"))],
            )
        ]
    )
    cloud.store.write(
        [batch("gw1", "event", [(8, "", event("spare", odd["sha256"], "running", NOW + 20))])]
    )
    # The health record says what each step runs.
    running = {
        "diagnosis": {"name": good["name"], "version": good["version"], "sha256": good["sha256"],
                      "threshold": 0.45, "edge": 10, "budget": 0, "escalated": 2},
    }  # fmt: skip
    cloud.store.write([batch("gw1", "health", [(9, "", {**HEALTH, "inference": running})])])
    listed = (await http.get("/api/gateways/gw1/models")).json()
    uploads = {u["step"]: u for u in listed["uploads"]}
    assert {k: (u["status"], u["reason"], u["current"]) for k, u in uploads.items()} == {
        "diagnosis": ("running", None, True),
        "spare": ("running", None, False),
    }
    assert listed["running"] == [{"step": "diagnosis", **running["diagnosis"]}]
    again = (await put(http, FACTORY.read_bytes())).json()  # the same bytes once more
    assert (again["status"], again["current"]) == ("published", True)


async def test_bad_uploads_are_refused_with_the_reason(
    cloud: Cloud, http: httpx.AsyncClient, broker: Broker
) -> None:
    garbage = b"this is no model"
    with pytest.raises(ModelError) as why:
        Model(garbage)
    response = await put(http, garbage)
    assert response.status_code == 422
    assert response.json() == {"detail": f"not a loadable Fogline model: {why.value}"}
    empty = await put(http, b"")
    assert empty.status_code == 422
    assert empty.json()["detail"].startswith("not a loadable Fogline model: ")
    # Past the file checks, a tensor name that is not UTF-8 fails inside the runtime.
    mangled = await put(http, tiny_model(kind="edge", input_name=b"\xff\xfe"))
    assert mangled.status_code == 422
    assert mangled.json()["detail"].startswith("not a loadable Fogline model: ")

    big = FACTORY.read_bytes() + b"\0" * LIMIT
    response = await put(http, big)
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"a model may have {LIMIT} bytes at most, got {len(big)} or more"
    }

    async def chunked():  # no Content-Length: the limit applies while reading
        for _ in range(LIMIT // 1000 + 1):
            yield b"\0" * 1000

    response = await http.put("/api/gateways/gw1/models/diagnosis", content=chunked())
    assert response.status_code == 413
    assert response.json()["detail"].startswith(f"a model may have {LIMIT} bytes at most, got ")

    model = tiny_model(kind="edge")
    for gateway, step, detail in [
        ("nope", "diagnosis", "unknown gateway 'nope'"),
        ("gw1", "a+b", "step must be 1 to 128 characters, without '/', '+', '#' or NUL"),
        ("gw1", "s" * 129, "step must be 1 to 128 characters, without '/', '+', '#' or NUL"),
        (
            "g+1",
            "diagnosis",
            "gateway id must be 1 to 128 characters, without '/', '+', '#' or NUL",
        ),
    ]:
        response = await put(http, model, step=step, gateway=gateway)
        assert (response.status_code, response.json()) == (
            404 if gateway == "nope" else 422,
            {"detail": detail},
        )
    response = await put(http, tiny_model(kind="edge", version="v" * 65))
    assert response.status_code == 422
    assert response.json() == {"detail": "version must be 1 to 64 characters"}
    assert (await put(http, model, version="")).status_code == 422  # checked by FastAPI
    missing = await http.get("/api/gateways/nope/models")
    assert (missing.status_code, missing.json()) == (404, {"detail": "unknown gateway 'nope'"})
    assert (await http.get("/api/gateways/gw1/models")).json()["uploads"] == []

    broker.stop()
    await eventually(lambda: not cloud.ingest.connected(), what="the link to notice")
    response = await put(http, model)
    assert response.status_code == 503
    assert response.json() == {
        "detail": "the broker is not taking messages from the cloud; try again later"
    }
    assert (await http.get("/api/gateways/gw1/models")).json()["uploads"] == []


async def test_openapi_documents_the_new_endpoints(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert {
        "/api/escalations",
        "/api/inference",
        "/api/gateways/{gateway_id}/models",
        "/api/gateways/{gateway_id}/models/{step}",
    } <= set(spec["paths"])
    put_op = spec["paths"]["/api/gateways/{gateway_id}/models/{step}"]["put"]
    assert "application/octet-stream" in put_op["requestBody"]["content"]
    assert {"413", "422", "503"} <= set(put_op["responses"])
    assert {"EscalationPage", "InferenceList", "GatewayModels", "ModelUploadOut"} <= set(
        spec["components"]["schemas"]
    )


CRASHER = (Path(__file__).resolve().parents[1] / "corpus" / "models" / "segv-1.tflite").read_bytes()


async def test_bytes_that_crash_the_runtime_are_refused_and_the_cloud_lives_on(
    cloud: Cloud, http: httpx.AsyncClient
) -> None:
    """Issue 9: one anonymous PUT of such bytes killed the cloud (a segfault while loading,
    before it even checked that the gateway exists)."""
    response = await put(http, CRASHER, gateway="nope")
    assert (response.status_code, response.json()) == (404, {"detail": "unknown gateway 'nope'"})
    response = await put(http, CRASHER, step="elsewhere")
    assert (response.status_code, response.json()) == (
        404,
        {"detail": "gateway 'gw1' has no infer step 'elsewhere' (diagnosis, spare)"},
    )
    response = await put(http, CRASHER)
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": "not a loadable Fogline model: the runtime crashed on the model "
            "(SIGSEGV): damaged or needed more than 512 MiB"
        },
    )
    assert (await http.get("/healthz")).status_code == 200
    assert (await put(http, FACTORY.read_bytes())).status_code == 200


async def test_what_the_gateway_would_refuse_is_refused_at_once(
    cloud: Cloud, http: httpx.AsyncClient
) -> None:
    edge = Model.from_file(FACTORY).info
    described = {"name": edge.name, "version": edge.version, "sha256": edge.sha256,
                 "labels": list(edge.labels), "inputs": list(edge.inputs)}  # fmt: skip
    cloud.store.write(
        [batch("gw1", "health", [(2, "", {**HEALTH, "inference": {"diagnosis": described}})])]
    )
    other_labels = await put(http, tiny_model(list(edge.inputs), ["normal", "loose"], kind="edge"))
    assert other_labels.status_code == 409
    assert other_labels.json()["detail"] == (
        "gateway 'gw1' would refuse it: labels ['normal', 'loose'] differ from the running "
        f"model's {list(edge.labels)}: rules downstream read them"
    )
    odd = tiny_model([*edge.inputs[:3], "vibration_kurtosis"], list(edge.labels), kind="edge")
    odd_inputs = await put(http, odd)
    assert odd_inputs.status_code == 409
    assert (
        "inputs ['vibration_kurtosis'] are not fields this step receives"
        in (odd_inputs.json()["detail"])
    )
    assert (await http.get("/api/gateways/gw1/models")).json()["uploads"] == []
    # Bytes the gateway refused once are refused again, with its reason; unless they were
    # damaged on the way, where a retry may go through.
    fine = tiny_model(list(edge.inputs), list(edge.labels), kind="edge", version="8")
    sent = (await put(http, fine)).json()
    refusal = event("diagnosis", sent["sha256"], "refused", NOW + 3, "self-test failed")
    cloud.store.write([batch("gw1", "event", [(3, "", refusal)])])
    again = await put(http, fine)
    assert (again.status_code, again.json()) == (
        409, {"detail": "gateway 'gw1' refused this model before: self-test failed"},
    )  # fmt: skip
    damaged = event("diagnosis", sent["sha256"], "refused", NOW + 4, "damaged in transit: x")
    cloud.store.write([batch("gw1", "event", [(4, "", damaged)])])
    assert (await put(http, fine)).status_code == 200


async def test_uploads_are_audited_and_shown(
    cloud: Cloud, http: httpx.AsyncClient, clock: Clock
) -> None:
    api = await put(http, tiny_model(kind="edge"), version="7")
    assert api.status_code == 200, api.text
    ana, csrf = console(cloud.engine, cloud.http_port, "ana", "admin", clock.now)
    async with ana:
        form = await ana.post(
            "/models/upload",
            data={"csrf": csrf, "gateway": "gw1", "step": "spare", "version": "8"},
            files={"model": ("m.tflite", tiny_model(kind="edge"), "application/octet-stream")},
        )
        assert form.status_code == 303, form.text
        with cloud.engine.connect() as conn:
            rows = conn.execute(
                select(Activity.actor, Activity.action, Activity.alert, Activity.detail)
            ).all()
        assert [(r.actor, r.action, r.alert) for r in rows] == [
            ("test-admin", "model_upload", None),
            ("ana", "model_upload", None),
        ]
        assert [(r.detail["gateway"], r.detail["step"], r.detail["version"]) for r in rows] == [
            ("gw1", "diagnosis", "7"),
            ("gw1", "spare", "8"),
        ]
        assert rows[0].detail["upload"] == api.json()["id"]
        page = (await ana.get("/models")).text
    audit = page[page.index('id="upload-audit"') :]
    assert re.search(r"<strong>ana</strong> sent model \S+ 8 \(\d+ B\) to gw1/spare", audit)
    assert re.search(r"<strong>test-admin</strong> sent model \S+ 7 .* to gw1/diagnosis", audit)
