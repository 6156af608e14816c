"""Ctrl-C on `fogline demo`, at any moment: exit 0 or 130, no traceback, no warning, and no
process of the demo left behind (its broker and devices run in sessions of their own, out of
reach of the terminal's signal: the demo must end them)."""

from __future__ import annotations

import re

import pytest
from demokit import READY, Demo


def assert_stopped_cleanly(demo: Demo, code: int, since: int) -> None:
    after = demo.lines[since:]
    assert code in {0, 130}, demo.lines
    assert not any("Traceback" in line for line in demo.lines), demo.lines
    assert not any(" WARNING " in line for line in after), after
    assert demo.left() == []


def test_ctrl_c_once_the_demo_runs() -> None:
    demo = Demo()
    try:
        ready = demo.wait_for(READY)
        demo.interrupt()
        code = demo.finish()
        assert_stopped_cleanly(demo, code, ready + 1)
        assert demo.lines[-1] == "fogline demo: stopped"
    finally:
        demo.kill_left()


# Where a Ctrl-C can fall while the demo starts, each found by the line it logs there.
STARTING = {
    "importing": None,  # in `fogline.cli`'s imports: orjson's extension is loading
    "trust setup": "fogline.demo: setting up the broker's users",
    "broker start": "fogline.demo: starting mosquitto",
    "cloud start": "fogline.cloud.escalations: cloud models from",
    "gateway start": "fogline.gateway: gateway demo-gw running",
}


@pytest.mark.parametrize("moment", list(STARTING))
def test_ctrl_c_while_the_demo_starts(moment: str) -> None:
    demo = Demo(log_level="DEBUG")
    try:
        line = STARTING[moment]
        if line is None:
            demo.wait_for_library("orjson")  # a Ctrl-C in its initialisation crashed it
        else:
            demo.wait_for(line)
        demo.interrupt()
        code = demo.finish()
        assert_stopped_cleanly(demo, code, 0)
    finally:
        demo.kill_left()


def test_an_ordinary_start_prints_no_warning() -> None:
    """Up to a full window of every machine: the first windows, short (a machine's first
    window holds the readings since it started), are counted, not warned about."""
    demo = Demo(log_level="INFO")
    try:
        demo.wait_for(READY)
        full = re.compile(r"digest  #\d+ \S+ n=(?:[89]|1\d)\b")  # 1 Hz: a whole 10 s window
        demo.wait_for_match(full, timeout=60)
        demo.interrupt()
        code = demo.finish()
    finally:
        demo.kill_left()
    assert code in {0, 130}
    warnings = [line for line in demo.lines if " WARNING " in line or " ERROR " in line]
    assert warnings == []
