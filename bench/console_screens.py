"""Screenshots of the console on real data: runs `fogline demo` (broker, cloud, gateway,
eight simulated machines with an overheating and a bearing fault), signs in with the
credentials it prints, and photographs each page into docs/.

    python bench/console_screens.py [--wait 110] [--only gateways,gateway,device,silences]

`--only` retakes just the named pages (the names after `console-` in docs/). Before the
silences page it silences one rule from the first alert's page, so the page has a row.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import threading
from pathlib import Path

from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


def start_demo(duration: float) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fogline.cli", "--log-level", "WARNING", "demo",
         "--duration", str(duration)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    if proc.stdout is None:
        raise SystemExit("no pipe")
    for line in proc.stdout:
        found = re.search(r"the console: (http://\S+)/\s+sign in as demo / (\S+)", line)
        if found:
            # Keep reading what it prints, or a full pipe would stall the demo.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, found.group(1), found.group(2)
    raise SystemExit("the demo did not print its console address")


async def shoot(page: Page, path: str, name: str, only: set[str], full: bool = True) -> None:
    if only and name not in only:
        return
    await page.goto(path)
    await page.wait_for_timeout(600)  # charts draw, times localize
    await page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=full)
    print("wrote", DOCS / f"console-{name}.png")


async def silence_one(page: Page, href: str) -> None:
    """Silence the rule of an alert on its device, through the alert page's form."""
    await page.goto(href)
    await page.get_by_text("Silence this rule").click()
    await page.get_by_label("For how many hours").fill("8")
    await page.get_by_label("Why", exact=True).fill("bearing replaced on the night shift")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Silence", exact=True).click()


async def main(wait: float, only: set[str]) -> None:
    proc, url, password = start_demo(wait + 60)
    try:
        print(f"demo at {url}; waiting {wait:.0f} s for faults to develop")
        await asyncio.sleep(wait)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            context = await browser.new_context(
                base_url=url, viewport={"width": 1280, "height": 900}, timezone_id="Europe/Paris"
            )
            page = await context.new_page()
            await page.goto("/login")
            if not only or "login" in only:
                await page.screenshot(path=str(DOCS / "console-login.png"))
            await page.get_by_label("Name").fill("demo")
            await page.get_by_label("Password").fill(password)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/alerts")
            await shoot(page, "/alerts?state=all", "alerts", only)
            await page.goto("/alerts?state=all")
            first = page.locator("table.alerts tbody tr a.rule").first
            href = await first.get_attribute("href")
            if href:
                await shoot(page, href, "alert", only)
            await shoot(page, "/gateways", "gateways", only)
            await shoot(page, "/gateways/demo-gw", "gateway", only)
            await shoot(page, "/gateways/demo-gw/devices/line-1/m-06?range=1h", "device", only)
            await shoot(page, "/models", "models", only)
            await shoot(page, "/notifications", "notifications", only)
            if href and (not only or "silences" in only):
                await silence_one(page, href)
            await shoot(page, "/silences", "silences", only)
            phone = await browser.new_context(
                base_url=url,
                viewport={"width": 390, "height": 844},
                storage_state=await context.storage_state(),
            )
            mobile = await phone.new_page()
            if not only or "phone" in only:
                await mobile.goto("/alerts?state=all")
                await mobile.wait_for_timeout(500)
                await mobile.screenshot(path=str(DOCS / "console-phone.png"))
            await browser.close()
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wait", type=float, default=110.0)
    parser.add_argument("--only", default="", help="comma-separated page names; default: all")
    args = parser.parse_args()
    asyncio.run(main(args.wait, {n for n in args.only.split(",") if n}))
