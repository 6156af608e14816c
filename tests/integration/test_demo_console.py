"""`fogline demo` prints a sign-in and a URL that work, and an API token that works."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDERS = {"PORT": r"\d+", "PASSWORD": r"\S+", "TOKEN": r"fgl_\S+"}


def readme_demo_lines() -> list[str]:
    """The demo's opening lines as the README quotes them (its first ```text block)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```text\n(fogline demo:.*?)```", readme, re.DOTALL)
    assert block is not None, "README.md no longer quotes the demo's opening lines"
    return block.group(1).splitlines()


def as_pattern(line: str) -> re.Pattern[str]:
    return re.compile(
        re.sub("|".join(PLACEHOLDERS), lambda m: PLACEHOLDERS[m.group(0)], re.escape(line))
    )


def test_the_demo_prints_a_working_sign_in_and_token() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "fogline.cli", "--log-level", "WARNING", "demo", "--duration", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=demo.stdout.read, daemon=True)  # keeps the pipe flowing
    try:
        for line in demo.stdout:
            lines.append(line)
            if "the API: curl" in line:
                break
        text = "".join(lines)
        console = re.search(
            r"the console: (http://127\.0\.0\.1:\d+)/  sign in as demo / (\S+)", text
        )
        api = re.search(r"curl -H 'Authorization: Bearer (fgl_\S+)' (\S+)/api/alerts", text)
        assert console is not None, text
        assert api is not None, text
        reader.start()
        url, password = console.groups()
        with httpx.Client(base_url=url) as http:
            form = http.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            signed = http.post(
                "/login", data={"name": "demo", "password": password, "csrf": csrf.group(1)},
                follow_redirects=True,
            )  # fmt: skip
            assert signed.status_code == 200
            assert "<h1>Alerts</h1>" in signed.text
            assert 'demo <span class="role">(admin)</span>' in signed.text
            token, base = api.groups()
            assert base == url
            bearer = {"Authorization": f"Bearer {token}"}
            listed = httpx.get(f"{url}/api/alerts", headers=bearer)
            assert listed.status_code == 200
            assert httpx.get(f"{url}/api/alerts").status_code == 401
            # Every line the README quotes is printed, and every address in them answers.
            printed = [line.rstrip("\n") for line in lines]
            for quoted in readme_demo_lines():
                pattern = as_pattern(quoted)
                assert any(pattern.fullmatch(line) for line in printed), (quoted, printed)
            addresses = set(re.findall(r"http://127\.0\.0\.1:\d+/[^\s)]*", text))
            paths = {a.removeprefix(url) for a in addresses} | {
                f"/api/{p}" for p in ("escalations", "inference")
            }
            assert {"/", "/gateways/demo-gw", "/api/alerts", "/docs"} <= paths
            for path in sorted(paths):
                answer = http.get(path, headers=bearer, follow_redirects=True)
                assert answer.status_code == 200, (path, answer.status_code)
    finally:
        demo.terminate()
        demo.wait(30)
        if reader.is_alive():
            reader.join(10)
        demo.stdout.close()
