"""Real Chromium (Debian's, driven by Playwright) against a real cloud and gateway on a real
mosquitto: the console as a person on the night shift uses it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from browserkit import ARGS, CHROMIUM, PASSWORD
from playwright.async_api import Browser, async_playwright
from support import Broker

from cloud import people
from cloud.app import Cloud, CloudOptions
from fogline.urls import parse_broker_url
from gateway.app import Gateway, GatewayOptions

# A temperature above 90 raises `hot` (its message carries the reading's note), below 80 clears.
PIPELINE = """
name: console
key: [machine]
sources:
  - mqtt: {topics: ["plant/{machine}/t"], qos: 1}
steps:
  - validate:
      id: readings
      fields: {temperature: {type: number}, note: {type: string, required: false}}
  - alert:
      id: alerts
      rules:
        - name: hot
          raise: temperature > 90
          clear: temperature < 80
          severity: critical
          message: "{machine} is hot: {note}"
outputs:
  - uplink: {from: alerts, kind: alert}
health_every: 1s
"""


@pytest.fixture
async def cloud(broker: Broker, tmp_path: Path) -> AsyncIterator[Cloud]:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=f"sqlite:///{tmp_path / 'console.db'}",
        http_port=0,
        replica="console",
        wait_broker=None,
        live_interval=0.1,
    )
    async with Cloud(options) as c:
        for name, role in (("olga", "operator"), ("victor", "viewer"), ("ada", "admin")):
            people.add_user(c.engine, name, role, PASSWORD, 0.0)
        yield c


@pytest.fixture
async def gateway(gateway_options: Callable[..., GatewayOptions]) -> AsyncIterator[Gateway]:
    async with Gateway(gateway_options(PIPELINE, "gw1")) as gw:
        yield gw


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: apt-get install -y chromium (make test does)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()
