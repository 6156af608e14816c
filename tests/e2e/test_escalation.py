"""Early exit end to end: what the edge model is unsure of is decided by the cloud's model,
and an uplink outage only delays that. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import numpy as np
import orjson
from sitekit import ROOT, Site

from devices.dataset import TASKS, dataset
from fogline.model import Model, normalized_entropy

EDGE = ROOT / "models" / "factory-vibration.tflite"

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
outputs:
  - uplink: {{from: diagnosis, kind: digest}}
  - uplink: {{from: diagnosis.escalate, kind: escalation}}
health_every: 1s
"""


def uncertain_faults(count: int) -> list[dict[str, float]]:
    """Windows of simulated faults (weak ones among them) that the edge model is unsure of."""
    task = TASKS["factory"]
    edge = Model.from_file(EDGE)
    rows, labels = dataset(task, 77, hours=0.5)
    entropy = normalized_entropy(edge.predict(rows))
    unsure = np.flatnonzero((entropy > edge.info.escalate_above) & (labels > 0))
    assert len(unsure) >= count, f"only {len(unsure)} uncertain fault windows"
    return [dict(zip(task.inputs, rows[i].tolist(), strict=True)) for i in unsure[:count]]


def publish(site: Site, windows: list[dict[str, float]], first: int) -> None:
    for n, window in enumerate(windows, first):
        site.device.publish(f"sf/m-{n:02d}/features", orjson.dumps(window))


def decided(site: Site) -> list[dict]:
    items = site.api("/api/escalations?gateway=gw1&limit=100")["items"]
    return [e for e in items if e["cloud"] is not None]


def test_uncertain_windows_are_decided_in_the_cloud_even_after_an_outage(site: Site) -> None:
    windows = uncertain_faults(12)
    site.pipeline.write_text(PIPELINE)
    site.start_cloud()
    site.start_gateway()
    publish(site, windows[:6], 0)
    site.wait(lambda: len(decided(site)) == 6, 30, "six escalations decided in the cloud")
    first = decided(site)
    for e in first:
        assert e["edge"]["entropy"] > Model.from_file(EDGE).info.escalate_above
        assert e["cloud"]["label"] in {"normal", "imbalance", "bearing"}
        assert e["agree"] == (e["edge"]["label"] == e["cloud"]["label"])
        assert set(e["inputs"]) == set(TASKS["factory"].inputs)
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
    row = next(r for r in stats if r["model"] == "factory-vibration")
    assert row["escalations"] == 12
    assert row["decided"] == 12
    site.wait(
        lambda: (
            next(
                r
                for r in site.api("/api/inference?gateway=gw1")["items"]
                if r["model"] == "factory-vibration"
            )["local_exit_rate"]
            is not None
        ),
        10,
        "the gateway's counters in its health record",
    )
