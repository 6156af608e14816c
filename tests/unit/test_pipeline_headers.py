"""What a demo pipeline's header says its own example does, it does (simulated time)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from gateway.simulate import START, Simulation
from gateway.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "pipelines" / "factory.yaml"


def header(path: Path) -> str:
    return "".join(line[1:] for line in path.read_text().splitlines(keepends=True)
                   if line.startswith("#"))  # fmt: skip


def test_factory_try_it_example_does_what_the_header_says() -> None:
    text = header(FACTORY)
    sends = re.findall(r"mosquitto_pub -t (\S+) -m \"(.*)\"\n", text)
    assert len(sends) == 2, text
    sim = Simulation(load_pipeline(FACTORY))
    for i, (topic, payload) in enumerate(sends):
        now = START + i
        body = payload.replace('\\"', '"').replace("$(date +%s)", str(int(now)))
        sim.send(topic, body.encode(), now)
    sim.stop(START + 30)
    # The header: the second reading raises critical_temperature at once, alert and stop.
    alerts = [e for e in sim.emitted if e.output == "uplink alert"]
    assert alerts[0].data["rule"] == "critical_temperature"
    assert alerts[0].data["state"] == "raised"
    assert alerts[0].at == START + 1
    stops = [e for e in sim.emitted if e.output == "action factory/line-1/m-01/actions"]
    assert [s.data["command"] for s in stops] == ["stop"]
    assert stops[0].at == START + 1
    # The header names the step and reason a window without vibration_1x is counted at.
    claim = re.search(r"counted as `(\w+)` rejects of step `(\w+)`", text)
    assert claim is not None, text
    reason, step = claim.groups()
    assert sim.rejects() == {(step, reason): 1}, orjson.dumps(sim.dead).decode()
