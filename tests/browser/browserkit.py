"""Helpers of the browser tests (conftest modules are not importable by name)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from playwright.async_api import Browser, Page

from cloud.app import Cloud

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "night shift 42"  # noqa: S105 - a test user's
AXE = Path(__file__).with_name("vendor") / "axe.min.js"


async def sign_in(browser: Browser, cloud: Cloud, name: str, *, bypass_csp: bool = False) -> Page:
    """A fresh browser context signed in through the real form."""
    context = await browser.new_context(
        base_url=f"http://127.0.0.1:{cloud.http_port}", bypass_csp=bypass_csp
    )
    page = await context.new_page()
    await page.goto("/alerts")
    assert re.search(r"/login\?next=/alerts$", page.url)
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/alerts")
    return page
