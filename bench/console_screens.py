"""Screenshots of the console on real data: runs `fogline demo` (broker, cloud, gateway,
eight simulated machines with an overheating and a bearing fault), signs in with the
credentials it prints, and photographs each page into docs/.

    python bench/console_screens.py [--wait 110]
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


async def shoot(page: Page, path: str, name: str, full: bool = True) -> None:
    await page.goto(path)
    await page.wait_for_timeout(600)  # charts draw, times localize
    await page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=full)
    print("wrote", DOCS / f"console-{name}.png")


async def main(wait: float) -> None:
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
            await page.screenshot(path=str(DOCS / "console-login.png"))
            await page.get_by_label("Name").fill("demo")
            await page.get_by_label("Password").fill(password)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/alerts")
            await shoot(page, "/alerts?state=all", "alerts")
            first = page.locator("table.alerts tbody tr a.rule").first
            href = await first.get_attribute("href")
            if href:
                await shoot(page, href, "alert")
            await shoot(page, "/gateways", "gateways")
            await shoot(page, "/gateways/demo-gw", "gateway")
            await shoot(page, "/gateways/demo-gw/devices/line-1/m-06?range=1h", "device")
            await shoot(page, "/models", "models")
            await shoot(page, "/notifications", "notifications")
            phone = await browser.new_context(
                base_url=url,
                viewport={"width": 390, "height": 844},
                storage_state=await context.storage_state(),
            )
            mobile = await phone.new_page()
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
    asyncio.run(main(parser.parse_args().wait))
