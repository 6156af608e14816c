"""The console in Chromium: sign in, a reading on the edge broker shows up in an open alert
list without a reload, acknowledge and resolve persist and are audited, a viewer cannot
act, a forged post is refused, markup from a device is text, axe finds nothing serious,
and an episode a restarted gateway lost says who closed it and why.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from browserkit import AXE, sign_in
from playwright.async_api import Browser, Page, expect
from support import Broker, Collector, eventually

from cloud.app import Cloud
from cloud.models import Alert as AlertModel
from gateway.app import Gateway

TIMEOUT = 10_000  # ms


async def hot(collector: Collector, machine: str, note: str = "coolant low") -> None:
    collector.publish(f"plant/{machine}/t", json.dumps({"temperature": 95.0, "note": note}))


async def row(page: Page, rule: str = "hot") -> Any:
    return page.locator("table.alerts tbody tr", has_text=rule)


async def test_a_reading_on_the_edge_broker_appears_without_reload(
    cloud: Cloud, gateway: Gateway, browser: Browser, broker: Broker, collector_factory: Any
) -> None:
    page = await sign_in(browser, cloud, "olga")
    await expect(page.get_by_text("No open alerts.")).to_be_visible()
    await expect(page.locator("#live-status")).to_contain_text("Live:", timeout=TIMEOUT)
    await page.evaluate("window.sameDocument = true")
    device = collector_factory([])
    await hot(device, "m-07")
    alert = page.locator("table.alerts tbody tr", has_text="m-07 is hot: coolant low")
    await expect(alert).to_be_visible(timeout=TIMEOUT)
    await expect(alert).to_contain_text("critical")  # severity as text, not colour alone
    assert await page.evaluate("window.sameDocument") is True  # no reload happened
    counts = page.get_by_role("link", name="open 1")
    await expect(counts).to_be_visible()
    await hot(device, "m-09", "fan stuck")  # the next change comes as a patch of the list
    second = page.locator("table.alerts tbody tr", has_text="m-09 is hot: fan stuck")
    await expect(second).to_be_visible(timeout=TIMEOUT)
    await expect(page.get_by_role("link", name="open 2")).to_be_visible()
    await expect(page.locator("table.alerts tbody tr")).to_have_count(2)
    assert await page.evaluate("window.sameDocument") is True


async def test_acknowledge_and_resolve_persist_and_are_audited(
    cloud: Cloud, gateway: Gateway, browser: Browser, collector_factory: Any
) -> None:
    page = await sign_in(browser, cloud, "olga")
    await hot(collector_factory([]), "m-01")
    await expect(page.locator("table.alerts tbody tr")).to_have_count(1, timeout=TIMEOUT)
    first = page.locator("table.alerts tbody tr").first
    # Each action is a form post answered by a redirect: wait for the page it lands on
    # before navigating again, or the second navigation races the first.
    async with page.expect_navigation():
        await page.get_by_role("button", name="Acknowledge alert 1").click()
    await expect(first).to_contain_text("acknowledged")
    await page.reload()
    await expect(first).to_contain_text("acknowledged")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Resolve alert 1").click()
    await page.goto("/alerts?state=all")
    await expect(page.locator("table.alerts tbody tr").first).to_contain_text("resolved")
    await page.goto("/alerts")
    await expect(page.get_by_text("No open alerts.")).to_be_visible()
    await page.goto("/alerts/1")
    audit = page.locator("table.audit tbody tr")
    await expect(audit).to_have_count(3)
    await expect(audit.nth(0)).to_contain_text("gateway gw1")
    await expect(audit.nth(1)).to_contain_text("olga")
    await expect(audit.nth(1)).to_contain_text("acknowledge")
    await expect(audit.nth(2)).to_contain_text("resolve")
    await expect(page.locator(".timeline")).to_contain_text("Arrived at the cloud")


async def test_a_viewer_cannot_acknowledge(
    cloud: Cloud, gateway: Gateway, browser: Browser, collector_factory: Any
) -> None:
    page = await sign_in(browser, cloud, "victor")
    await hot(collector_factory([]), "m-02")
    await expect(page.locator("table.alerts tbody tr")).to_have_count(1, timeout=TIMEOUT)
    await expect(page.get_by_role("button", name="Acknowledge alert 1")).to_have_count(0)
    # Even with the viewer's own valid CSRF token, the server says no.
    status = await page.evaluate(
        """async () => {
          const csrf = document.querySelector('form[action="/logout"] input[name=csrf]').value;
          const body = new URLSearchParams({csrf, ids: '1', action: 'acknowledge'});
          return (await fetch('/alerts/actions', {method: 'POST', body})).status;
        }"""
    )
    assert status == 403
    await page.reload()
    await expect(page.locator("table.alerts tbody tr").first).to_contain_text("open")


async def test_a_forged_post_without_the_csrf_token_is_refused(
    cloud: Cloud, gateway: Gateway, browser: Browser, collector_factory: Any
) -> None:
    page = await sign_in(browser, cloud, "olga")
    await hot(collector_factory([]), "m-03")
    await expect(page.locator("table.alerts tbody tr")).to_have_count(1, timeout=TIMEOUT)
    forged = await page.evaluate(
        """async () => {
          const body = new URLSearchParams({ids: '1', action: 'resolve'});
          const r = await fetch('/alerts/actions', {method: 'POST', body});
          return [r.status, await r.text()];
        }"""
    )
    assert forged[0] == 403
    assert "Missing or wrong CSRF token" in forged[1]
    # A page on another site posting the same form: SameSite=Strict keeps the cookie home.
    other = await page.context.new_page()
    await other.set_content(
        f"""<form method=post action="http://127.0.0.1:{cloud.http_port}/alerts/actions">
        <input name=ids value=1><input name=action value=resolve></form>"""
    )
    # Submitted after evaluate returns: a navigation inside evaluate can destroy its context.
    await other.evaluate("setTimeout(() => document.forms[0].submit(), 0)")
    await other.wait_for_url("**/login**")
    await page.reload()
    await expect(page.locator("table.alerts tbody tr").first).to_contain_text("open")


async def test_markup_from_a_device_is_text(
    cloud: Cloud, gateway: Gateway, browser: Browser, collector_factory: Any
) -> None:
    page = await sign_in(browser, cloud, "olga")
    attack = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    await hot(collector_factory([]), "m-04", attack)
    message = page.locator(".msg", has_text="<script>window.pwned=1</script>")
    await expect(message).to_be_visible(timeout=TIMEOUT)
    await page.goto("/alerts/1")
    await expect(page.locator(".message")).to_have_text(f"m-04 is hot: {attack}")
    assert await page.evaluate("window.pwned") is None
    assert await page.locator(".message img").count() == 0


async def _axe(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => (await axe.run(document)).violations")
    return [v for v in result if v["impact"] in ("serious", "critical")]


async def test_axe_finds_no_serious_violations(
    cloud: Cloud, gateway: Gateway, browser: Browser, collector_factory: Any
) -> None:
    page = await sign_in(browser, cloud, "ada", bypass_csp=True)  # axe is injected inline
    await hot(collector_factory([]), "m-05")
    await expect(page.locator("table.alerts tbody tr")).to_have_count(1, timeout=TIMEOUT)
    pages = [
        "/alerts",
        "/alerts?state=resolved",  # the empty state
        "/alerts/1",
        "/silences",
        "/gateways",
        "/gateways/gw1",
        "/models",
        "/notifications",
        "/gateways/gw1/devices/line-1/m-05",
    ]
    for path in pages:
        response = await page.goto(path)
        assert response is not None
        assert response.ok, path
        assert await _axe(page) == [], path
    await page.set_viewport_size({"width": 375, "height": 800})  # a phone
    await page.goto("/alerts")
    assert await _axe(page) == [], "/alerts on a phone"
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375  # nothing forces sideways scrolling
    await page.context.clear_cookies()
    await page.goto("/login")
    assert await _axe(page) == [], "/login"


async def test_bulk_actions_silences_and_the_keyboard(
    cloud: Cloud, gateway: Gateway, browser: Browser, collector_factory: Any
) -> None:
    page = await sign_in(browser, cloud, "olga")
    device = collector_factory([])
    for machine in ("m-11", "m-12", "m-13"):
        await hot(device, machine)
    rows = page.locator("table.alerts tbody tr")
    await expect(rows).to_have_count(3, timeout=TIMEOUT)
    # Tick two, then let a live refresh happen: the ticks survive it.
    await page.get_by_role("checkbox", name="Select alert 1").check()
    await page.get_by_role("checkbox", name="Select alert 2").check()
    refreshed = await page.evaluate("window.foglineRefreshed || 0")
    await hot(device, "m-14")
    await expect(rows).to_have_count(4, timeout=TIMEOUT)
    assert await page.evaluate("window.foglineRefreshed") > refreshed
    await expect(page.get_by_role("checkbox", name="Select alert 1")).to_be_checked()
    async with page.expect_navigation():
        await page.locator("fieldset.bulk").get_by_role("button", name="Acknowledge").click()
    states = await page.locator("table.alerts tbody tr .state").all_inner_texts()
    assert sorted(states) == ["acknowledged", "acknowledged", "open", "open"]
    # The keyboard alone: focus a row's Resolve button and press Enter.
    await page.get_by_role("button", name="Resolve alert 3").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/alerts")
    await expect(rows).to_have_count(3)
    # Silence the rule on one device from the alert's page: marked, counted, still listed.
    await page.goto("/alerts/4")
    await page.get_by_text("Silence this rule").click()
    await page.get_by_label("For how many hours").fill("2")
    await page.get_by_label("Why", exact=True).fill("maintenance on m-14")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Silence", exact=True).click()
    await page.goto("/alerts")
    await expect(page.locator("tr", has_text="m-14").locator(".tag")).to_have_text("silenced")
    await expect(page.get_by_role("link", name="silenced 1")).to_be_visible()
    await page.goto("/silences")
    await expect(page.locator("table tbody tr")).to_contain_text("maintenance on m-14")


# One alert rule, its clear threshold filled in: a gateway restarted with another threshold
# starts that step afresh (its state no longer fits) and loses the raised episode.
LOSING = """
name: losing
key: [machine]
sources:
  - mqtt: {{topics: ["lost/{{machine}}/t"], qos: 1}}
steps:
  - alert:
      id: alerts
      rules: [{{name: hot, raise: temperature > 90, clear: temperature < {clear}}}]
outputs:
  - uplink: {{from: alerts, kind: alert}}
health_every: 0.5s
"""


async def test_an_alert_a_restarted_gateway_lost_says_who_closed_it_and_why(
    cloud: Cloud, browser: Browser, gateway_options: Any, collector_factory: Any
) -> None:
    device = collector_factory([])
    async with Gateway(gateway_options(LOSING.format(clear=80), "gw-lost")):
        device.publish("lost/m-09/t", json.dumps({"temperature": 95.0}))
        await eventually(lambda: cloud.store.count(AlertModel) == 1, 15, "the raise stored")
    async with Gateway(gateway_options(LOSING.format(clear=75), "gw-lost")):
        page = await sign_in(browser, cloud, "ada", bypass_csp=True)  # axe is injected inline
        timeline = page.locator(".timeline")
        deadline = time.monotonic() + 15
        while True:
            await page.goto("/alerts/1")
            if "Closed by the gateway" in await timeline.inner_text():
                break
            assert time.monotonic() < deadline, "the episode to be closed"
            await asyncio.sleep(0.2)
        await expect(timeline).to_contain_text("the gateway no longer holds this alert")
        await expect(page.locator("dl.facts")).to_contain_text("Closed by")
        await expect(page.locator("table.audit tbody tr").nth(1)).to_contain_text("closed")
        assert await _axe(page) == []


async def test_bulk_false_alarm_with_a_reason(
    cloud: Cloud, gateway: Gateway, browser: Browser, collector_factory: Any
) -> None:
    page = await sign_in(browser, cloud, "olga")
    device = collector_factory([])
    for machine in ("m-21", "m-22", "m-23"):
        await hot(device, machine)
    rows = page.locator("table.alerts tbody tr")
    await expect(rows).to_have_count(3, timeout=TIMEOUT)
    await page.get_by_role("checkbox", name="Select alert 1").check()
    await page.get_by_role("checkbox", name="Select alert 3").check()
    bulk = page.locator("fieldset.bulk")
    await bulk.get_by_label("False alarm because").fill("sensor recalibrated")
    async with page.expect_navigation():
        await bulk.get_by_role("button", name="Mark false alarm").click()
    await expect(rows).to_have_count(1)  # both resolved: off the default list
    await page.goto("/alerts?state=all")
    marked = page.locator("table.alerts tbody tr", has=page.locator(".tag", has_text="false alarm"))
    await expect(marked).to_have_count(2)
    await page.reload()  # it persisted
    await expect(marked).to_have_count(2)
    for alert_id in (1, 3):
        await page.goto(f"/alerts/{alert_id}")
        await expect(page.locator("dl.facts")).to_contain_text("sensor recalibrated")
        audit = page.locator("table.audit tbody tr", has_text="false_alarm")
        await expect(audit).to_contain_text("olga")
    await page.goto("/alerts/2")
    await expect(page.locator("dl.facts")).not_to_contain_text("False alarm")
