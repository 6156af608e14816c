"""The gateway page in Chromium through an uplink outage: silent while the link is cut, then
the backlog the gateway held, then its drain."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path

from browserkit import sign_in
from playwright.async_api import Browser, Page, expect
from support import Broker, LinkProxy

from cloud.app import Cloud
from fogline.urls import parse_broker_url
from gateway.app import Gateway, GatewayOptions

# Alerts up, and a health record every second: what the gateway holds while it is cut off.
PIPELINE = """
name: outage
key: [machine]
sources:
  - mqtt: {topics: ["plant/{machine}/t"], qos: 1}
steps:
  - alert:
      id: alerts
      rules: [{name: hot, raise: temperature > 90, clear: temperature < 80, severity: critical}]
outputs:
  - uplink: {from: alerts, kind: alert}
health_every: 1s
"""


async def backlog_records(page: Page) -> int | None:
    await page.reload()
    text = await page.locator("#backlog").inner_text()
    found = re.match(r"(\d+) records", text)
    return int(found[1]) if found else None


async def poll(page: Page, check: Callable[[int | None], bool], within: float, what: str) -> int:
    deadline = time.monotonic() + within
    while True:
        seen = await backlog_records(page)
        if seen is not None and check(seen):
            return seen
        assert time.monotonic() < deadline, f"{what}: the page shows {seen!r} records"
        await asyncio.sleep(0.3)


async def test_the_gateway_page_shows_the_backlog_of_an_outage_and_its_drain(
    cloud: Cloud,
    broker: Broker,
    browser: Browser,
    gateway_options: Callable[..., GatewayOptions],
    tmp_path: Path,
) -> None:
    proxy = LinkProxy(broker.port)
    await proxy.start()
    # A records/s cap makes the drain last long enough to be watched.
    options = dataclasses.replace(
        gateway_options(PIPELINE, "gw-out", uplink_max_rate=2.0),
        uplink=parse_broker_url(proxy.url),
    )
    try:
        async with Gateway(options):
            page = await sign_in(browser, cloud, "olga")
            await page.goto("/gateways/gw-out", wait_until="domcontentloaded")
            await poll(page, lambda n: n <= 1, 20, "a gateway that keeps up")
            proxy.stall()
            await page.wait_for_timeout(6000)  # six health periods: silent after three
            await page.reload()
            await expect(page.get_by_text("Silent since")).to_be_visible()
            await expect(page.get_by_text("Silent gateway")).to_be_visible(timeout=10_000)
            proxy.heal()
            held = await poll(page, lambda n: n >= 3, 20, "the backlog held through the cut")
            await page.screenshot(path=str(tmp_path / "outage.png"), full_page=True)
            await poll(page, lambda n: n <= 1, 40, "the backlog drained")
            await expect(page.get_by_text("Silent since")).to_have_count(0)
            assert held >= 3
    finally:
        await proxy.close()
