"""The API: FastAPI over the store, model uploads, plus `/metrics` and `/healthz`.

Endpoints are plain `def`: FastAPI runs them in its thread pool, so the (synchronous)
SQLAlchemy reads never block the event loop that ingest shares. The model upload is the
exception: it publishes on the broker link, which lives in that loop (its database work
goes to threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud import queries
from cloud.gaps import DEFAULT_GRACE
from cloud.metrics import CloudMetrics
from cloud.model_updates import ModelUpdates, UploadError, check_size
from cloud.models import MAX_VERSION
from cloud.pagination import CursorError
from cloud.schemas import (
    AlertPage,
    DigestPage,
    ErrorOut,
    EscalationPage,
    GatewayDetail,
    GatewayModels,
    GatewayPage,
    Health,
    InferenceList,
    ModelUploadOut,
    Severity,
    State,
)
from fogline import __version__

Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="The `next` of the previous page.")]
Since = Annotated[
    datetime | None, Query(description="Inclusive lower bound: epoch seconds or ISO 8601.")
]
Until = Annotated[
    datetime | None, Query(description="Exclusive upper bound: epoch seconds or ISO 8601.")
]
GatewayFilter = Annotated[str | None, Query(description="Only this gateway.")]
DeviceFilter = Annotated[str | None, Query(description="Only this device (key joined by `/`).")]


def _session(request: Request) -> Iterator[Session]:
    """One session per request, from the app's engine."""
    with request.app.state.sessions() as session:
        yield session


Db = Annotated[Session, Depends(_session)]


def _epoch(value: datetime | None) -> float | None:
    """Epoch seconds; a datetime without a zone is taken as UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        check_size(int(declared), limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        check_size(len(body), limit)
    return bytes(body)


def create_app(
    engine: Engine,
    metrics: CloudMetrics,
    broker_connected: Callable[[], bool],
    uploads: ModelUpdates,
    *,
    clock: Callable[[], float] = time.time,
    gap_grace: float = DEFAULT_GRACE,
) -> FastAPI:
    """The app; `clock` dates ages and silence, `gap_grace` is `cloud.gaps`' grace period."""
    app = FastAPI(
        title="Fogline cloud",
        version=__version__,
        description="Digests, alerts, escalations and gateway health received from Fogline "
        "gateways; models sent to them.",
    )
    app.state.sessions = sessionmaker(engine)

    @app.exception_handler(CursorError)
    async def bad_cursor(_request: Request, exc: CursorError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(UploadError)
    async def bad_upload(_request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    bad_cursor_response: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorOut, "description": "A cursor this API did not hand out"}
    }

    @app.get("/api/gateways", summary="Gateways, by id", responses=bad_cursor_response)
    def list_gateways(db: Db, limit: Limit = 100, cursor: Cursor = None) -> GatewayPage:
        return queries.gateways(db, limit, cursor, clock())

    @app.get(
        "/api/gateways/{gateway_id}",
        summary="One gateway: counts, gaps in its seqs (lost, evicted or in flight), latest health",
        responses={404: {"model": ErrorOut, "description": "Unknown gateway"}},
    )
    def get_gateway(
        db: Db,
        gateway_id: str,
        gap_limit: Annotated[int, Query(ge=1, le=100_000, description="Most gaps listed.")] = 1000,
    ) -> GatewayDetail:
        detail = queries.gateway(db, gateway_id, gap_limit, clock(), gap_grace)
        if detail is None:
            raise HTTPException(404, detail=f"unknown gateway {gateway_id!r}")
        return detail

    @app.get(
        "/api/alerts", summary="Alert episodes, newest raise first", responses=bad_cursor_response
    )
    def list_alerts(
        db: Db,
        gateway: GatewayFilter = None,
        device: DeviceFilter = None,
        state: Annotated[State | None, Query(description="Only episodes in this state.")] = None,
        severity: Annotated[Severity | None, Query(description="Only this severity.")] = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> AlertPage:
        filters = queries.Filters(gateway, device, _epoch(since), _epoch(until))
        return queries.alerts(db, filters, state, severity, limit, cursor)

    @app.get(
        "/api/digests",
        summary="Window digests, newest window end first",
        responses=bad_cursor_response,
    )
    def list_digests(
        db: Db,
        gateway: GatewayFilter = None,
        device: DeviceFilter = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> DigestPage:
        filters = queries.Filters(gateway, device, _epoch(since), _epoch(until))
        return queries.digests(db, filters, limit, cursor)

    @app.get(
        "/api/escalations",
        summary="Escalations with the edge's and the cloud's decisions, newest first",
        responses=bad_cursor_response,
    )
    def list_escalations(
        db: Db,
        gateway: GatewayFilter = None,
        device: DeviceFilter = None,
        model: Annotated[str | None, Query(description="Only this model (by name).")] = None,
        agree: Annotated[
            bool | None, Query(description="Only where the cloud agreed (true) or not (false).")
        ] = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> EscalationPage:
        filters = queries.Filters(gateway, device, _epoch(since), _epoch(until))
        return queries.escalations(db, filters, model, agree, limit, cursor)

    @app.get(
        "/api/inference",
        summary="Per gateway and model: escalations, cloud agreement, local-exit rate",
    )
    def get_inference(db: Db, gateway: GatewayFilter = None) -> InferenceList:
        return queries.inference(db, gateway)

    @app.get(
        "/api/gateways/{gateway_id}/models",
        summary="Models sent to a gateway, with what it reported, and what its steps run",
        responses={404: {"model": ErrorOut, "description": "Unknown gateway"}},
    )
    def list_models(
        db: Db,
        gateway_id: str,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most uploads listed.")] = 100,
    ) -> GatewayModels:
        found = queries.gateway_models(db, gateway_id, limit)
        if found is None:
            raise HTTPException(404, detail=f"unknown gateway {gateway_id!r}")
        return found

    @app.put(
        "/api/gateways/{gateway_id}/models/{step}",
        summary="Send a model (.tflite bytes) to one infer step of a gateway, over the air",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
        responses={
            404: {"model": ErrorOut, "description": "Unknown gateway"},
            413: {"model": ErrorOut, "description": "Larger than the limit"},
            422: {"model": ErrorOut, "description": "Not a loadable Fogline model, or bad names"},
            503: {"model": ErrorOut, "description": "The broker is away: nothing was stored"},
        },
    )
    async def put_model(
        request: Request,
        gateway_id: str,
        step: str,
        version: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_VERSION,
                description="Version announced to the gateway; default: the model's own.",
            ),
        ] = None,
    ) -> ModelUploadOut:
        data = await _body(request, uploads.max_bytes)
        return await uploads.upload(gateway_id, step, data, version)

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", responses={503: {"model": Health, "description": "Degraded"}})
    def healthz(db: Db, response: Response) -> Health:
        try:
            db.execute(text("SELECT 1"))
            database = True
        except SQLAlchemyError:
            database = False
        connected = broker_connected()
        ok = database and connected
        if not ok:
            response.status_code = 503
        return Health(
            status="ok" if ok else "degraded", broker_connected=connected, database=database
        )

    return app
