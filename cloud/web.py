"""The cloud's HTTP application: routers mounted on one FastAPI app.

Routers, not one closure: the JSON API (`cloud.api`), the service endpoints (`/metrics`,
`/healthz`); each reads what it needs (engine sessions, metrics, the upload path) from
`app.state`, set here once.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from cloud import api
from cloud.metrics import CloudMetrics
from cloud.model_updates import ModelUpdates, UploadError
from cloud.pagination import CursorError
from fogline import __version__


async def _bad_cursor(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def _bad_upload(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, UploadError):  # registered for UploadError only
        raise exc
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


def create_app(
    engine: Engine,
    metrics: CloudMetrics,
    broker_connected: Callable[[], bool],
    uploads: ModelUpdates,
) -> FastAPI:
    app = FastAPI(
        title="Fogline cloud",
        version=__version__,
        description="Digests, alerts, escalations and gateway health received from Fogline "
        "gateways; models sent to them.",
    )
    app.state.sessions = sessionmaker(engine)
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.broker_connected = broker_connected
    app.state.uploads = uploads
    app.add_exception_handler(CursorError, _bad_cursor)
    app.add_exception_handler(UploadError, _bad_upload)
    app.include_router(api.router)
    app.include_router(api.service)
    return app
