"""README.md, run as a reader would: every command of its `sh` blocks that can run on this
machine is run exactly as written, in a fresh directory holding the repository's
`pipelines/` and `models/`.

Which commands are the reader's to adapt, not to run here (the rule, checked in order):

* `make ...`: the quickstart's two; CI runs `make test` (.ci/run), and the demo has its own
  tests (test_demo_console.py, test_demo_stop.py);
* a command holding `...`: a placeholder to fill in;
* a command naming another machine (a URL whose host is not 127.0.0.1: `mqtt://cloud:1883`,
  `user:pw@db`) or a system directory (/etc, /var, /usr): the reader's deployment.

What stands in for the reader's machine: the broker and CoAP gateway it names at their
standard ports (127.0.0.1:1883, 127.0.0.1:5683) are the test's private ones, on ports of
their own; a password prompt is answered by FOGLINE_PASSWORD, as the command's help says it
may be. A command that runs until stopped (`fogline devices` without `--duration`) runs
until it has delivered readings, then gets Ctrl-C.
"""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from dockit import blocks, command_env, wait_until
from support import Broker, Collector, free_port, udp_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def commands(text: str) -> list[str]:
    """Each command of the `sh` blocks, its continuation lines joined."""
    found: list[str] = []
    for block in blocks(text):
        if block.lang == "sh":
            found += [c.strip() for c in block.body.replace("\\\n", " ").splitlines() if c.strip()]
    return found


def skipped(command: str) -> str | None:
    """Why a command is the reader's to adapt (the module's rule), or None: it runs."""
    if command.startswith("make "):
        return "make"
    if "..." in command:
        return "placeholder"
    hosts = re.findall(r"://(?:[^\s/@]*@)?([^\s/:]+)", command)
    if any(host != "127.0.0.1" for host in hosts) or re.search(r"\s/(?:etc|var|usr)/", command):
        return "deployment"
    return None


def metric(port: int, name: str) -> float:
    """A gateway's metric; 0 while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.timeout(300)  # a dataset of an hour of the factory, simulated, among them
def test_every_runnable_command_of_the_readme_works_as_written(
    broker: Broker, tmp_path: Path
) -> None:
    listed = commands(README.read_text())
    runnable = [c for c in listed if skipped(c) is None]
    assert {skipped(c) for c in listed} == {None, "make", "placeholder", "deployment"}
    assert len(runnable) >= 8, runnable  # the README runs fewer commands than it did
    work = tmp_path / "work"
    work.mkdir()
    for name in ("pipelines", "models"):
        (work / name).symlink_to(ROOT / name)
    # The CoAP gateway the farm's devices post to: the farm pipeline, bound to a free port.
    coap = udp_port()
    harness = tmp_path / "harness"
    harness.mkdir()
    (tmp_path / "models").symlink_to(ROOT / "models")  # farm.yaml names ../models/
    (harness / "farm.yaml").write_text(
        (ROOT / "pipelines" / "farm.yaml")
        .read_text()
        .replace("127.0.0.1:5683", f"127.0.0.1:{coap}")
    )
    env = command_env(broker.url, FOGLINE_PASSWORD="correct horse battery staple")  # noqa: S106
    metrics = free_port()
    gateway = subprocess.Popen(
        ["fogline", "gateway", "--pipeline", str(harness / "farm.yaml"), "--id", "farm1",
         "--insecure-unsigned", "--data-dir", str(tmp_path / "gw"),
         "--metrics-port", str(metrics)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watch = Collector(broker.port, ["factory/#"])
    ran: list[str] = []
    try:
        wait_until(lambda: bool(metric(metrics, "fogline_uplink_connected")), "the gateway")
        for command in runnable:
            here = command.replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}").replace(
                "127.0.0.1:5683", f"127.0.0.1:{coap}"
            )
            if command.startswith("fogline devices") and "--duration" not in command:
                devices = subprocess.Popen(
                    ["bash", "-c", f"exec {here}"], cwd=work, env=env, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
                try:
                    if " factory " in command:
                        wait_until(lambda: len(watch.on("factory/")) >= 200, "factory readings")
                    else:
                        wait_until(
                            lambda: (
                                metric(metrics, 'fogline_messages_in_total{source="coap"}') >= 24
                            ),
                            "farm readings over CoAP",
                        )
                    devices.send_signal(signal.SIGINT)  # Ctrl-C
                    out, _ = devices.communicate(timeout=30)
                finally:
                    if devices.poll() is None:
                        devices.kill()
                        devices.communicate()
                assert devices.returncode in {0, 130}, (command, out)
                assert "Traceback" not in out, (command, out)
            else:
                done = subprocess.run(
                    ["bash", "-c", here], cwd=work, env=env, capture_output=True, text=True,
                    timeout=240, check=False, start_new_session=True,
                )  # fmt: skip
                assert done.returncode == 0, (command, done.stdout, done.stderr)
            ran.append(command)
        assert (work / "truth.jsonl").exists()  # --labels (empty: no fault began yet)
        assert (work / "fogline.db").exists()  # the first admin, in sqlite:///./fogline.db
        assert (work / "f9.csv").exists()  # the dataset the calibration read
    finally:
        watch.close()
        gateway.send_signal(signal.SIGINT)
        out, _ = gateway.communicate(timeout=30)
    assert ran == runnable
    assert "Traceback" not in out


def test_the_quickstart_is_two_commands_and_names_what_each_needs() -> None:
    quickstart = README.read_text().split("## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    assert [c.split("#")[0].strip() for c in commands(quickstart)] == ["make demo", "make test"]
    said = " ".join(quickstart.split())
    make = (ROOT / "Makefile").read_text()
    demo = re.search(r"^DEMO_PACKAGES := (.+)$", make, re.MULTILINE)
    test = re.search(r"^SYSTEM_PACKAGES := \$\(DEMO_PACKAGES\) (.+)$", make, re.MULTILINE)
    assert demo is not None
    assert test is not None
    needs = {
        target: set(re.split(r", | and ", found.group(1)))
        for target, found in (
            (t, re.search(rf"`make {t}` (?:also )?needs ([^;.]+)[;.]", said))
            for t in ("demo", "test")
        )
        if found is not None
    }
    assert needs == {
        "demo": set(demo.group(1).split()),
        "test": set(demo.group(1).split()) | set(test.group(1).split()),
    }
    assert re.search(r"^demo: .*\bdemo-deps\b", make, re.MULTILINE)
    assert re.search(r"^test: .*\bsystem-deps\b", make, re.MULTILINE)
