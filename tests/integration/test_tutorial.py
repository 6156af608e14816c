"""docs/tutorial.md, run as a reader would: every file it shows is written, every command
it shows is run as written (the broker is a private one: `mosquitto_pub`/`_sub` get its
port, the gateway its URL in FOGLINE_BROKER), and every output it shows is printed."""

from __future__ import annotations

import shlex
import signal
import subprocess
from pathlib import Path

from dockit import Block, blocks, command_env, on_broker, shown_in, wait_until
from support import Broker, Collector

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"


def test_every_command_of_the_tutorial_works_as_written(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", "log_type subscribe\n")  # says who subscribed to what
    broker.start()
    env = command_env(broker.url)

    def as_run(command: str) -> str:
        return on_broker(command, broker.port)

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
