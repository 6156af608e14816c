"""docs/tutorial.md, run as a reader would: every file it shows is written, every command
it shows is run as written (the broker is a private one: `mosquitto_pub`/`_sub` get its
port, the gateway its URL in FOGLINE_BROKER), and every output it shows is printed."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from support import Broker, Collector

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"


@dataclass(frozen=True)
class Block:
    lang: str
    info: str
    body: str


def blocks(text: str) -> list[Block]:
    found = re.finditer(r"^```(\w+)[ ]*([^\n]*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return [Block(m.group(1), m.group(2).strip(), m.group(3)) for m in found]


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.05)


def shown_in(expected: str, output: str) -> bool:
    """Every line shown appears in the output, in the same order."""
    lines = output.splitlines()
    at = 0
    for want in expected.strip("\n").splitlines():
        while at < len(lines) and lines[at] != want:
            at += 1
        if at == len(lines):
            return False
        at += 1
    return True


def test_every_command_of_the_tutorial_works_as_written(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", "log_type subscribe\n")  # says who subscribed to what
    broker.start()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FOGLINE_BROKER": broker.url,
    }

    def as_run(command: str) -> str:
        """The command for bash, on the private broker's port."""
        return re.sub(r"^(mosquitto_(?:pub|sub))\b", rf"\1 -p {broker.port}", command)

    watch = Collector(broker.port, ["fogline/boiler-gw/up/health"])
    background: dict[str, subprocess.Popen[str]] = {}
    last = ""
    previous: Block | None = None
    ran = 0
    try:
        for block in blocks(TUTORIAL.read_text()):
            if block.lang == "yaml" and block.info:
                (tmp_path / block.info).write_text(block.body)
            elif block.lang == "sh":
                for command in block.body.strip().splitlines():
                    ran += 1
                    program = shlex.split(command)[0]
                    if program == "mosquitto_sub" or command.startswith("fogline gateway"):
                        name = "gateway" if program == "fogline" else program
                        background[name] = subprocess.Popen(
                            ["bash", "-c", "exec " + as_run(command)], cwd=tmp_path, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        )  # fmt: skip
                        ready = (  # its first health record; the broker logs a subscription
                            (lambda: bool(watch.on("fogline/boiler-gw/up/health")))
                            if name == "gateway"
                            else (lambda: "boilers/+/+/command" in broker.log.read_text())
                        )
                        wait_until(ready, f"{name} ready")
                        continue
                    done = subprocess.run(
                        ["bash", "-c", as_run(command)], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120, check=False,
                    )  # fmt: skip
                    assert done.returncode == 0, (command, done.stdout, done.stderr)
                    last = done.stdout + done.stderr
            elif block.lang == "text" and block.info == "mosquitto_sub":
                sub = background.pop("mosquitto_sub")
                out, _ = sub.communicate(timeout=30)
                assert sub.returncode == 0, out
                assert shown_in(block.body, out), (block.body, out)
            elif block.lang == "text" and previous is not None and previous.lang == "sh":
                assert shown_in(block.body, last), (block.body, last)
            previous = block
        assert ran >= 6, "the tutorial runs fewer commands than it did"
        gateway = background.pop("gateway")
        gateway.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = gateway.communicate(timeout=30)
        assert gateway.returncode in {0, 130}, out
        assert "Traceback" not in out
    finally:
        for proc in background.values():
            proc.kill()
            proc.communicate()
        watch.close()
        broker.stop()
