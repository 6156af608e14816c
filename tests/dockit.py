"""Running what the documentation shows, as written: its code blocks, its commands on a
private broker (`mosquitto_pub`/`_sub` get its port, `fogline` its URL in FOGLINE_BROKER),
and checking the output it shows."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Block:
    lang: str
    info: str
    body: str


def blocks(text: str) -> list[Block]:
    found = re.finditer(r"^```(\w+)[ ]*([^\n]*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return [Block(m.group(1), m.group(2).strip(), m.group(3)) for m in found]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
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


def command_env(broker_url: str, **more: str) -> dict[str, str]:
    """The environment a reader's shell would have: `fogline` on the PATH (this
    interpreter's), the private broker as every command's default."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FOGLINE_BROKER": broker_url,
        **more,
    }


def on_broker(command: str, port: int) -> str:
    """The command for bash, with mosquitto's clients pointed at the private broker."""
    return re.sub(r"^(mosquitto_(?:pub|sub))\b", rf"\1 -p {port}", command)
