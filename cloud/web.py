"""The cloud's HTTP application: routers mounted on one FastAPI app.

Routers, not one closure: the JSON API (`cloud.api`), the service endpoints (`/metrics`,
`/healthz`), sign-in (`cloud.auth`), the console's pages (`cloud.pages`) and the live
stream (`cloud.live`). Each reads what it needs (engine sessions, the clock, the gap
grace period, metrics, the upload path, the live feed) from `app.state`, set here once.
Static files are vendored in `cloud/static` (no CDN: plant networks are often offline).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud import api, auth, live, pages
from cloud.auth import SignInRequired, sign_in_redirect
from cloud.gaps import DEFAULT_GRACE
from cloud.live import Feed
from cloud.metrics import CloudMetrics
from cloud.model_updates import ModelUpdates, UploadError
from cloud.pagination import CursorError
from cloud.provision import Provisioner
from cloud.render import STATIC, page
from cloud.throttle import SignInThrottle
from fogline import __version__

SECURITY_HEADERS = {
    # Everything is served from here; no inline script runs (data sits in JSON blocks).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# Swagger UI from cloud/static (swagger-ui-dist, see VENDORED), never a CDN: FastAPI's own
# /docs loads it from the internet and is blank on an offline site.
API_DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fogline cloud API</title>
<link rel="stylesheet" href="/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static/swagger-ui-bundle.js"></script>
<script src="/static/api-docs.js"></script></body></html>
"""


async def _api_docs() -> HTMLResponse:
    return HTMLResponse(API_DOCS)


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response that does not set its own.

    Plain ASGI, not `@app.middleware("http")`: Starlette's `BaseHTTPMiddleware` pipes every
    body chunk through an anyio stream and a task group, which cost about a tenth of the
    event loop's time with 100 live streams (cProfile, `bench/console_bench.py streams`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.raw = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in self.raw if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


async def _bad_cursor(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def _bad_upload(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, UploadError):  # registered for UploadError only
        raise exc
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


def invalid_input(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line, each naming where (`body.ids.0`)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    )


async def _invalid(request: Request, exc: Exception) -> Response:
    """422 with one line (`ErrorOut`, as the API documents), or the error page."""
    if not isinstance(exc, RequestValidationError):
        raise exc
    return await _http_error(request, HTTPException(422, detail=invalid_input(exc)))


async def _http_error(request: Request, exc: Exception) -> Response:
    """JSON for the API and the live stream, a page for a person in the console."""
    if not isinstance(exc, HTTPException):
        raise exc
    if request.url.path.startswith(("/api/", "/live/", "/static/")):
        return await http_exception_handler(request, exc)
    return page(
        request,
        "error.html",
        None,
        status_code=exc.status_code,
        status=exc.status_code,
        detail=exc.detail,
    )


def create_app(
    engine: Engine,
    metrics: CloudMetrics,
    broker_connected: Callable[[], bool],
    uploads: ModelUpdates,
    feed: Feed | None = None,
    *,
    clock: Callable[[], float] = time.time,
    gap_grace: float = DEFAULT_GRACE,
    provisioner: Provisioner | None = None,
) -> FastAPI:
    """The app; `clock` dates ages and silence, `gap_grace` is `cloud.gaps`' grace period,
    `provisioner` serves POST/DELETE /api/gateways (None: those answer 409)."""
    app = FastAPI(
        docs_url=None,  # served below, offline
        redoc_url=None,
        title="Fogline cloud",
        version=__version__,
        description="Digests, alerts, escalations and gateway health received from Fogline "
        "gateways; models sent to them. Every `/api/` route needs a token "
        "(`Authorization: Bearer fgl_...`, made by `fogline cloud token add`): reads the "
        "viewer role, alert and silence actions operator, models and gateway provisioning "
        "admin.",
    )
    app.state.sessions = sessionmaker(engine)
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.broker_connected = broker_connected
    app.state.uploads = uploads
    app.state.feed = feed or Feed(engine)
    app.state.clock = clock
    app.state.gap_grace = gap_grace
    app.state.provisioner = provisioner
    app.state.fragments = pages.FragmentCache()
    app.state.signin_throttle = SignInThrottle()
    app.add_exception_handler(CursorError, _bad_cursor)
    app.add_exception_handler(UploadError, _bad_upload)
    app.add_exception_handler(SignInRequired, sign_in_redirect)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)

    app.add_middleware(SecurityHeaders)
    app.add_api_route("/docs", _api_docs, include_in_schema=False)
    app.include_router(api.router)
    app.include_router(api.service)
    app.include_router(auth.router)
    app.include_router(live.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
