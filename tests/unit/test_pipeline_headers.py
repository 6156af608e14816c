"""What a demo pipeline's header says its own example does, it does: in simulated time, and
with its own commands, as written, on a real broker."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from dockit import command_env, on_broker, wait_until
from support import Broker, Collector

from fogline.envelope import decode_batch
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
    # One per window: the two readings fall in two of the model's windows (10 s, every 5 s).
    assert sim.rejects() == {(step, reason): 2}, orjson.dumps(sim.dead).decode()


@pytest.mark.parametrize("pipeline", ["factory", "farm"])
def test_the_try_it_gateway_command_runs_as_written(
    pipeline: str, broker: Broker, tmp_path: Path
) -> None:
    """The header's gateway command, exactly as written, on a private broker (its URL in
    FOGLINE_BROKER, as the header assumes a local one): it runs and sends its first health
    record; then the header's own `mosquitto_pub` lines do what it says (factory: at once)."""
    text = header(ROOT / "pipelines" / f"{pipeline}.yaml")
    found = re.search(r"\(with `(fogline gateway [^`]+)`\s+running", text)
    assert found is not None, text
    command = found.group(1)
    gid = shlex.split(command)[shlex.split(command).index("--id") + 1]
    watch = Collector(broker.port, [f"fogline/{gid}/up/#", "factory/+/+/actions"])
    env = command_env(broker.url, FOGLINE_DATA_DIR=str(tmp_path / "data"))
    gateway = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: gateway.poll() is not None or bool(watch.on(f"fogline/{gid}/up/health")),
            "the gateway's first health record",
        )
        assert gateway.poll() is None, gateway.communicate()[0]
        if pipeline == "factory":
            sends = re.findall(r"^\s+(mosquitto_pub .*)$", text, re.MULTILINE)
            assert len(sends) == 2, text
            for send in sends:
                subprocess.run(["bash", "-c", on_broker(send, broker.port)], env=env, check=True)
            wait_until(lambda: bool(watch.on("factory/line-1/m-01/actions")), "the stop")
            # The stop goes out at once; the alert with the uplink's next group commit.
            wait_until(lambda: bool(watch.on(f"fogline/{gid}/up/alert")), "the alert uplinked")
            alerts = [
                r["data"]
                for _, payload in watch.on(f"fogline/{gid}/up/alert")
                for r in decode_batch(payload)["records"]
            ]
            assert [(a["rule"], a["state"]) for a in alerts] == [("critical_temperature", "raised")]
        gateway.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = gateway.communicate(timeout=30)
        assert gateway.returncode in {0, 130}, out
        assert "Traceback" not in out
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.communicate()
        watch.close()
