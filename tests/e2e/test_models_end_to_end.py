"""Models end to end: what the edge model is unsure of is decided by the cloud's model (an
uplink outage only delays that), and a model put on the cloud's API runs on the gateway.
Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import orjson
from sitekit import ROOT, Site

from devices.dataset import TASKS, dataset
from fogline.model import Model, normalized_entropy, read_metadata, with_metadata

EDGE = ROOT / "models" / "farm-irrigation.tflite"

PIPELINE = f"""
name: diagnosis
key: [machine]
sources:
  - mqtt: {{topics: ["sf/{{machine}}/features"], qos: 1}}
steps:
  - infer:
      id: diagnosis
      model: {EDGE}
      escalation_budget: 1000
      escalate_above: {{threshold}}
outputs:
  - uplink: {{from: diagnosis, kind: digest}}
  - uplink: {{from: diagnosis.escalate, kind: escalation}}
health_every: 1s
"""


def uncertain_faults(count: int) -> tuple[list[dict[str, float]], float]:
    """The `count` windows of simulated faults (weak ones among them) the edge model is least
    sure of, and a threshold just below their normalized entropy: the model that ships is
    sure of nearly every window, so the test sets the step's own `escalate_above`."""
    task = TASKS["farm"]
    edge = Model.from_file(EDGE)
    rows, labels = dataset(task, 77, hours=2.0)
    entropy = normalized_entropy(edge.predict(rows))
    faults = np.flatnonzero(labels > 0)
    unsure = faults[np.argsort(entropy[faults])[::-1][:count]]
    assert len(unsure) == count, f"only {len(unsure)} fault windows"
    threshold = float(entropy[unsure].min()) * 0.99
    assert threshold > 0, "the model is certain of every fault window"
    windows = [dict(zip(task.inputs, rows[i].tolist(), strict=True)) for i in unsure]
    return windows, threshold


def publish(site: Site, windows: list[dict[str, float]], first: int) -> None:
    for n, window in enumerate(windows, first):
        site.device.publish(f"sf/m-{n:02d}/features", orjson.dumps(window))


def decided(site: Site) -> list[dict]:
    items = site.api("/api/escalations?gateway=gw1&limit=100")["items"]
    return [e for e in items if e["cloud"] is not None]


def test_uncertain_windows_are_decided_in_the_cloud_even_after_an_outage(site: Site) -> None:
    windows, threshold = uncertain_faults(12)
    site.pipeline.write_text(PIPELINE.replace("{threshold}", repr(threshold)))
    site.start_cloud()
    site.start_gateway()
    publish(site, windows[:6], 0)
    site.wait(lambda: len(decided(site)) == 6, 30, "six escalations decided in the cloud")
    first = decided(site)
    for e in first:
        assert e["edge"]["entropy"] > threshold
        assert e["cloud"]["label"] in {"normal", "leak", "dry_soil"}
        assert e["agree"] == (e["edge"]["label"] == e["cloud"]["label"])
        assert set(e["inputs"]) == set(TASKS["farm"].inputs)
    # The cloud link goes down: escalations wait in the gateway's outbox.
    site.uplink.stop()
    publish(site, windows[6:], 6)
    site.wait(
        lambda: site.gateway_metric('fogline_step_records_in_total{step="diagnosis"}') == 12,
        20,
        "the gateway to classify all twelve windows",
    )
    site.wait(lambda: site.gateway_metric("fogline_outbox_records") >= 6, 5, "a held outbox")
    assert len(decided(site)) == 6
    site.uplink.start()
    site.wait(lambda: len(decided(site)) == 12, 60, "the six held escalations decided")
    devices = sorted(e["device"] for e in decided(site))
    assert devices == [f"m-{n:02d}" for n in range(12)]  # each exactly once
    stats = site.api("/api/inference?gateway=gw1")["items"]
    row = next(r for r in stats if r["model"] == "farm-irrigation")
    assert row["escalations"] == 12
    assert row["decided"] == 12
    site.wait(
        lambda: (
            next(
                r
                for r in site.api("/api/inference?gateway=gw1")["items"]
                if r["model"] == "farm-irrigation"
            )["local_exit_rate"]
            is not None
        ),
        10,
        "the gateway's counters in its health record",
    )


def test_a_model_put_on_the_cloud_api_runs_on_the_gateway(site: Site) -> None:
    site.pipeline.write_text(PIPELINE.replace("{threshold}", "null"))
    site.start_cloud()
    site.start_gateway()
    site.wait(
        lambda: any(g["gateway"] == "gw1" for g in site.api("/api/gateways")["items"]),
        20,
        "the gateway's first health record",
    )
    data = EDGE.read_bytes()
    meta = orjson.loads(read_metadata(data)["fogline"])
    newer = with_metadata(data, {**meta, "version": "e2e-2"})

    def put(body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{site.http['r1']}/api/gateways/gw1/models/diagnosis",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/octet-stream", **site.auth},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 - http://127.0.0.1
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, orjson.loads(err.read())

    status, upload = put(newer)
    assert status == 200, upload
    assert upload["version"] == "e2e-2"

    def state() -> dict:
        return next(
            u for u in site.api("/api/gateways/gw1/models")["uploads"] if u["version"] == "e2e-2"
        )

    site.wait(lambda: state()["status"] == "running", 30, "the gateway to run the new model")
    site.wait(lambda: state()["current"], 10, "the health record to name the new model")
    # An incompatible model: the health record names the step's labels, so the cloud refuses
    # it at once with the gateway's own reason, and sends nothing.
    factory = (ROOT / "models" / "factory-vibration.tflite").read_bytes()
    status, body = put(factory)
    assert status == 409, body
    assert "would refuse it: labels" in body["detail"]
    assert "differ from the running model's" in body["detail"]
    uploads = site.api("/api/gateways/gw1/models")["uploads"]
    assert [u["name"] for u in uploads if u["name"] == "factory-vibration"] == []
    assert state()["current"]  # the new farm model still runs
    status, body = put(b"not a model")
    assert status == 422
    assert "not a loadable Fogline model" in str(body)
