"""The API reference at /docs and the front door at / work on a site with no internet."""

from __future__ import annotations

from playwright.async_api import Browser, Request, Route, expect

from cloud.app import Cloud


async def test_api_reference_renders_offline_within_the_csp(browser: Browser, cloud: Cloud) -> None:
    base = f"http://127.0.0.1:{cloud.http_port}"
    context = await browser.new_context(base_url=base)
    outside: list[str] = []

    async def offline(route: Route, request: Request) -> None:
        if request.url.startswith(base):
            await route.continue_()
        else:  # as on a plant network: nothing beyond this server answers
            outside.append(request.url)
            await route.abort()

    await context.route("**/*", offline)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Fogline cloud")
    await expect(
        page.locator(".opblock-summary-path", has_text="/api/alerts").first
    ).to_be_visible()
    assert outside == []
    assert problems == []
    # The front door leads to the console (its sign-in, for a stranger).
    await page.goto("/")
    await page.wait_for_url("**/login?next=/alerts")
    await context.close()
