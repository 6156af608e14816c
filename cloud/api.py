"""The JSON API router (`/api/...`) over the store and model uploads, plus `/metrics` and
`/healthz` (the service router). `cloud.web.create_app` mounts them.

Endpoints are plain `def`: FastAPI runs them in its thread pool, so the (synchronous)
SQLAlchemy reads never block the event loop that ingest shares. The model upload is the
exception: it publishes on the broker link, which lives in that loop (its database work
goes to threads).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from cloud import alerts, notify, queries
from cloud.auth import Admin, Operator, Require
from cloud.deps import Db
from cloud.metrics import CloudMetrics
from cloud.model_updates import ModelUpdates, check_size
from cloud.models import MAX_VERSION
from cloud.provision import API_OFF, Provisioner, ProvisionError
from cloud.schemas import (
    MAX_ID,
    ActionIn,
    ActionOut,
    AlertCounts,
    AlertDetail,
    AlertPage,
    DigestPage,
    ErrorOut,
    EscalationPage,
    GatewayDetail,
    GatewayIdentity,
    GatewayIn,
    GatewayModels,
    GatewayPage,
    Health,
    InferenceList,
    ModelUploadOut,
    Severity,
    SilenceIn,
    SilenceList,
    SilenceOut,
    State,
    WebhookIn,
    WebhookList,
    WebhookOut,
)
from fogline import signing
from fogline.identity import VERSION as IDENTITY_VERSION

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


AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid token or session"},
    403: {"model": ErrorOut, "description": "The caller's role does not allow it"},
}
WRITE = AUTH
INPUT: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A body that is not JSON"},
    422: {"model": ErrorOut, "description": "Input that does not fit, in one line naming where"},
}


def _single_valued(request: Request) -> None:
    """Every query parameter of the API takes one value: a repeated one is refused rather
    than read as its last value."""
    for name in request.query_params:
        if len(request.query_params.getlist(name)) > 1:
            raise HTTPException(422, detail=f"query.{name}: given more than once; expected once")


router = APIRouter(
    dependencies=[Depends(Require("viewer")), Depends(_single_valued)],
    responses={**AUTH, **INPUT},
)
service = APIRouter()


def _now(request: Request) -> float:
    now: float = request.app.state.clock()
    return now


def _changed(request: Request) -> None:
    """Tell the live feed at once rather than at its next poll."""
    request.app.state.feed.poke()


BAD_CURSOR: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A cursor this API did not hand out"}
}


def _uploads(request: Request) -> ModelUpdates:
    uploads: ModelUpdates = request.app.state.uploads
    return uploads


@router.get("/api/gateways", summary="Gateways, by id", responses=BAD_CURSOR)
def list_gateways(
    db: Db, request: Request, limit: Limit = 100, cursor: Cursor = None
) -> GatewayPage:
    return queries.gateways(db, limit, cursor, _now(request))


@router.get(
    "/api/gateways/{gateway_id}",
    summary="One gateway: counts, gaps in its seqs (lost, evicted or in flight), latest health",
    responses={404: {"model": ErrorOut, "description": "Unknown gateway"}},
)
def get_gateway(
    db: Db,
    request: Request,
    gateway_id: str,
    gap_limit: Annotated[int, Query(ge=1, le=100_000, description="Most gaps listed.")] = 1000,
) -> GatewayDetail:
    gap_grace: float = request.app.state.gap_grace
    detail = queries.gateway(db, gateway_id, gap_limit, _now(request), gap_grace)
    if detail is None:
        raise HTTPException(404, detail=f"unknown gateway {gateway_id!r}")
    return detail


def _provisioner(request: Request) -> Provisioner:
    provisioner: Provisioner | None = request.app.state.provisioner
    if provisioner is None:
        raise HTTPException(409, detail=API_OFF)
    return provisioner


_PROBLEM_STATUS = {"invalid": 422, "conflict": 409, "broker": 502}
PROVISIONING: dict[int | str, dict[str, Any]] = {
    **WRITE,
    409: {
        "model": ErrorOut,
        "description": "Provisioning through the API is off: how to enable it",
    },
    502: {"model": ErrorOut, "description": "Done, but the broker's reload command failed"},
}


@router.post(
    "/api/gateways",
    status_code=201,
    summary="Provision a gateway: its broker user and registered key (admin)",
    description="As `fogline cloud gateway add ID --public-key KEY`: a broker user confined "
    "to the gateway's own topics, with a new password (shown in the answer only), and its "
    "key registered. Adding another key of a gateway is a key rotation; adding the same one "
    "again gives it a new password. Needs the cloud started with --broker-dir.",
    responses={
        **PROVISIONING,
        422: {"model": ErrorOut, "description": "A bad id or key, in one line"},
    },
)
def add_gateway(request: Request, body: GatewayIn, _user: Admin) -> GatewayIdentity:
    provisioner = _provisioner(request)
    try:
        identity, broker = provisioner.add(body.id, body.public_key)
    except ProvisionError as exc:
        raise HTTPException(_PROBLEM_STATUS[exc.kind], detail=str(exc)) from exc
    assert identity.gateway_public_key is not None  # noqa: S101 - add_gateway sets it
    return GatewayIdentity(
        v=IDENTITY_VERSION,
        gateway=identity.gateway,
        username=identity.username,
        password=identity.password,
        cloud_public_key=identity.cloud_public_key,
        gateway_public_key=identity.gateway_public_key,
        key_id=signing.key_id(signing.load_public(identity.gateway_public_key)),
        broker=broker,
    )


@router.delete(
    "/api/gateways/{gateway_id}",
    status_code=204,
    summary="Revoke a gateway: its keys and its broker user (admin)",
    description="As `fogline cloud gateway revoke ID`: its batches are refused from now on "
    "and the broker lets it in no more.",
    responses={**PROVISIONING, 404: {"model": ErrorOut, "description": "No live key"}},
)
def revoke_gateway(
    request: Request,
    gateway_id: Annotated[str, Path(min_length=1, max_length=64)],
    _user: Admin,
) -> None:
    provisioner = _provisioner(request)
    try:
        revoked, _ = provisioner.revoke(gateway_id)
    except ProvisionError as exc:
        raise HTTPException(_PROBLEM_STATUS[exc.kind], detail=str(exc)) from exc
    if not revoked:
        raise HTTPException(404, detail=f"gateway {gateway_id!r} has no live key to revoke")


Rule = Annotated[str | None, Query(description="Only this rule.")]
StateFilter = Annotated[State | None, Query(description="Only episodes in this state.")]
SeverityFilter = Annotated[Severity | None, Query(description="Only this severity.")]
Silenced = Annotated[
    bool | None, Query(description="Only silenced (true) or not silenced (false) episodes.")
]


@router.get("/api/alerts", summary="Alert episodes, newest raise first", responses=BAD_CURSOR)
def list_alerts(
    db: Db,
    gateway: GatewayFilter = None,
    device: DeviceFilter = None,
    state: StateFilter = None,
    severity: SeverityFilter = None,
    rule: Rule = None,
    silenced: Silenced = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AlertPage:
    filters = queries.Filters(gateway, device, _epoch(since), _epoch(until))
    more = queries.AlertFilters(state, severity, rule, silenced)
    return queries.alerts(db, filters, more, limit, cursor)


@router.get("/api/alerts/counts", summary="Alert episodes per state and per severity")
def count_alerts(
    db: Db,
    gateway: GatewayFilter = None,
    device: DeviceFilter = None,
    state: StateFilter = None,
    severity: SeverityFilter = None,
    rule: Rule = None,
    silenced: Silenced = None,
    since: Since = None,
    until: Until = None,
) -> AlertCounts:
    filters = queries.Filters(gateway, device, _epoch(since), _epoch(until))
    return queries.alert_counts(db, filters, queries.AlertFilters(state, severity, rule, silenced))


@router.get(
    "/api/alerts/{alert_id}",
    summary="One episode with its timeline and audit",
    responses={404: {"model": ErrorOut, "description": "Unknown episode"}},
)
def get_alert(db: Db, alert_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> AlertDetail:
    found = queries.alert_detail(db, alert_id)
    if found is None:
        raise HTTPException(404, detail=f"no alert episode {alert_id}")
    return found


@router.post(
    "/api/alerts/actions",
    summary="Acknowledge, resolve, assign, comment or mark false alarm: one or many episodes",
    responses={
        **WRITE,
        422: {"model": ErrorOut, "description": "An action that cannot be taken as asked"},
    },
)
def alert_actions(request: Request, body: ActionIn, user: Operator) -> ActionOut:
    try:
        done = alerts.act(
            request.app.state.engine, body.ids, body.action, user.name, _now(request), body.text
        )
    except alerts.ActionError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    _changed(request)
    return ActionOut(changed=done.changed, unchanged=done.unchanged, missing=done.missing)


@router.get("/api/silences", summary="Silences, newest first")
def list_silences(
    db: Db,
    request: Request,
    active: Annotated[bool, Query(description="Only those in force now.")] = False,
) -> SilenceList:
    return queries.silences(db, _now(request), active)


@router.post(
    "/api/silences",
    status_code=201,
    summary="Mute a rule on a gateway or a device until a time (episodes are still stored)",
    responses={**WRITE, 422: {"model": ErrorOut, "description": "Bad silence"}},
)
def add_silence(request: Request, body: SilenceIn, user: Operator, db: Db) -> SilenceOut:
    now = _now(request)
    try:
        silence_id = alerts.add_silence(
            request.app.state.engine,
            body.gateway,
            body.device,
            body.rule,
            body.until,
            body.reason,
            user.name,
            now,
        )
    except alerts.ActionError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    _changed(request)
    return next(s for s in queries.silences(db, now).items if s.id == silence_id)


@router.delete(
    "/api/silences/{silence_id}",
    status_code=204,
    summary="End a silence now",
    responses={**WRITE, 404: {"model": ErrorOut, "description": "No such active silence"}},
)
def end_silence(
    request: Request, silence_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: Operator
) -> None:
    if not alerts.end_silence(request.app.state.engine, silence_id, user.name, _now(request)):
        raise HTTPException(404, detail=f"no active silence {silence_id}")
    _changed(request)


@router.get("/api/webhooks", summary="Webhooks, with delivery counts and the latest failure")
def list_webhooks(request: Request, _user: Admin) -> WebhookList:
    return WebhookList(items=[WebhookOut(**w) for w in notify.webhooks(request.app.state.engine)])


@router.post(
    "/api/webhooks",
    status_code=201,
    summary="Notify a URL when alerts are raised, cleared or acknowledged",
    responses={**WRITE, 422: {"model": ErrorOut, "description": "Bad webhook"}},
)
def add_webhook(request: Request, body: WebhookIn, user: Admin) -> WebhookOut:
    engine = request.app.state.engine
    try:
        made = notify.add_webhook(
            engine, body.url, body.shape, list(body.on), user.name, _now(request)
        )
    except notify.WebhookError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return next(WebhookOut(**w) for w in notify.webhooks(engine) if w["id"] == made)


@router.delete(
    "/api/webhooks/{webhook_id}",
    status_code=204,
    summary="Stop a webhook",
    responses={**WRITE, 404: {"model": ErrorOut, "description": "No such webhook"}},
)
def remove_webhook(
    request: Request, webhook_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: Admin
) -> None:
    if not notify.remove_webhook(request.app.state.engine, webhook_id, user.name, _now(request)):
        raise HTTPException(404, detail=f"no webhook {webhook_id}")


@router.get(
    "/api/digests",
    summary="Window digests, newest window end first",
    responses=BAD_CURSOR,
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


@router.get(
    "/api/escalations",
    summary="Escalations with the edge's and the cloud's decisions, newest first",
    responses=BAD_CURSOR,
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


@router.get(
    "/api/inference",
    summary="Per gateway and model: escalations, cloud agreement, local-exit rate",
)
def get_inference(db: Db, gateway: GatewayFilter = None) -> InferenceList:
    return queries.inference(db, gateway)


@router.get(
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


@router.put(
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
        409: {"model": ErrorOut, "description": "The gateway would refuse it: the reason"},
        413: {"model": ErrorOut, "description": "Larger than the limit"},
        422: {"model": ErrorOut, "description": "Not a loadable Fogline model, or bad names"},
        503: {"model": ErrorOut, "description": "The broker is away: nothing was stored"},
    },
)
async def put_model(
    request: Request,
    gateway_id: str,
    step: str,
    user: Admin,
    version: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_VERSION,
            description="Version announced to the gateway; default: the model's own.",
        ),
    ] = None,
) -> ModelUploadOut:
    uploads = _uploads(request)
    data = await _body(request, uploads.max_bytes)
    return await uploads.upload(gateway_id, step, data, version, user.name)


@service.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
async def prometheus(request: Request) -> PlainTextResponse:
    metrics: CloudMetrics = request.app.state.metrics
    return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")


@service.get("/healthz", responses={503: {"model": Health, "description": "Degraded"}})
def healthz(db: Db, request: Request, response: Response) -> Health:
    try:
        db.execute(text("SELECT 1"))
        database = True
    except SQLAlchemyError:
        database = False
    connected: bool = request.app.state.broker_connected()
    ok = database and connected
    if not ok:
        response.status_code = 503
    return Health(status="ok" if ok else "degraded", broker_connected=connected, database=database)
