"""Jinja2 templates of the console, with autoescaping on: every string from a device, a
rule or a user is text in the page, never markup."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from cloud.people import Principal

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _utc(epoch: float | None) -> str:
    """What a page says before its script shows the viewer's own time zone."""
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _num(value: Any) -> str:
    """Numbers from devices, short: 59.62103630178424 -> 59.62."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


templates.env.filters["num"] = _num
templates.env.filters["iso"] = _iso
templates.env.filters["utc"] = _utc
templates.env.filters["duration"] = _duration
templates.env.filters["size"] = _size


def page(
    request: Request,
    name: str,
    user: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A full page or a fragment; `user` drives the header and the CSRF field of forms."""
    return templates.TemplateResponse(
        request,
        name,
        {"user": user, "csrf": user.csrf if user else None, **context},
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )
