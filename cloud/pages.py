"""The console: server-rendered pages over the same queries as the JSON API.

Pages work without JavaScript (links, plain GET filters, POST forms that redirect back);
`static/console.js` adds the live list (SSE, then a re-fetch of the list fragment), local
times and the charts (uPlot). Every form carries the session's CSRF token; operators'
forms are shown to operators only, and the handlers check the role again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from starlette.responses import HTMLResponse

from cloud import alerts, notify, queries
from cloud.auth import PageUser, csrf_ok, local_path
from cloud.deps import Db
from cloud.model_updates import ModelUpdates, UploadError
from cloud.models import SEVERITIES, STATES, Digest, Escalation
from cloud.people import Principal
from cloud.render import page, templates
from cloud.schemas import AlertDetail

router = APIRouter(include_in_schema=False)

PAGE = 50
CHART_POINTS = 2000
MAX_CHARTS = 12  # per device page
AROUND = 1800.0  # seconds of digests shown on each side of an alert
RANGES = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}


def _now(request: Request) -> float:
    now: float = request.app.state.clock()
    return now


def _gap_grace(request: Request) -> float:
    grace: float = request.app.state.gap_grace
    return grace


def _check(user: Principal, csrf: str, role: str = "operator") -> None:
    if not csrf_ok(user, csrf):
        raise HTTPException(403, detail="Missing or wrong CSRF token: reload the page and retry.")
    if not user.can(role):
        raise HTTPException(403, detail=f"This needs the {role} role; you are {user.role}.")


SILENT_TTL = 5.0  # seconds a page reuses the banner's list (it cost ~30 ms per page at 1,000)


def _silent(request: Request, db: Session) -> list[str]:
    """Gateways whose `status` (as /api/gateways reports it) is silent, for the banner."""
    cached: tuple[float, list[str]] | None = getattr(request.app.state, "silent", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < SILENT_TTL:
        return cached[1]
    found = queries.gateways(db, 1000, None, _now(request), with_rates=False)
    silent = [g.gateway for g in found.items if g.status == "silent"]
    request.app.state.silent = (now, silent)
    return silent


def _render(request: Request, db: Session, name: str, user: Principal, **context: Any) -> Response:
    return page(request, name, user, silent=_silent(request, db), **context)


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/alerts", status_code=303)


# -- alerts ----------------------------------------------------------------------------------


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _parse_time(value: str | None) -> float | None:
    """A `datetime-local` (taken as UTC unless it has a zone) or epoch seconds."""
    value = _text(value)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _alert_filters(params: dict[str, str]) -> tuple[queries.Filters, queries.AlertFilters]:
    state = params.get("state", "active")
    silenced = {"yes": True, "no": False}.get(params.get("silenced", ""))
    return (
        queries.Filters(
            _text(params.get("gateway")),
            _text(params.get("device")),
            _parse_time(params.get("since")),
            _parse_time(params.get("until")),
        ),
        queries.AlertFilters(
            state if state in (*STATES, "active") else None,
            params.get("severity") if params.get("severity") in SEVERITIES else None,
            _text(params.get("rule")),
            silenced,
        ),
    )


def _alert_list(params: dict[str, str], here: str, db: Session, operator: bool) -> dict[str, Any]:
    params = dict(params)
    params.setdefault("state", "active")
    filters, more = _alert_filters(params)
    found = queries.alerts(db, filters, more, PAGE, _text(params.get("cursor")))
    counts = queries.alert_counts(db, filters, more)
    keep = {k: v for k, v in params.items() if v and k != "cursor"}
    return {
        "items": found.items,
        "next_url": f"/alerts?{urlencode({**keep, 'cursor': found.next})}" if found.next else None,
        "first_url": f"/alerts?{urlencode(keep)}",
        "paged": "cursor" in params,
        "counts": counts,
        "params": params,
        "states": STATES,
        "severities": SEVERITIES,
        "query": urlencode(keep),
        "here": here,
        "operator": operator,
    }


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


@router.get("/alerts")
def alert_list(request: Request, db: Db, user: PageUser) -> Response:
    context = _alert_list(dict(request.query_params), _here(request), db, user.can("operator"))
    return _render(request, db, "alerts.html", user, **context)


class FragmentCache:
    """Renderings of the live list, shared by browsers with the same filters and role.

    Every change to an alert makes every watching browser fetch its list again; without
    this, 100 browsers cost 100 renderings of the same list (30-60 ms each at 100k alerts)
    per change. The key holds the live feed's position, so a change makes a new key.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._guard = threading.Lock()
        self._pending: dict[tuple[Any, ...], asyncio.Future[str]] = {}  # event loop only
        self.renders = 0

    def peek(self, key: tuple[Any, ...]) -> str | None:
        with self._guard:
            return self._items.get(key)

    async def shared(self, key: tuple[Any, ...], render: Callable[[], str]) -> str:
        """`get` from the event loop: one worker thread per key, however many await it.

        100 streams woken by one change used to send 100 calls to the thread pool, where
        99 waited on the key's lock and held workers that ingest's writes queue for
        (cProfile, `bench/console_bench.py streams`: ~88 thread hops per change)."""
        html = self.peek(key)
        if html is not None:
            return html
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self.get, key, render))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(task)  # a stream that leaves does not cancel the others'

    def get(self, key: tuple[Any, ...], render: Callable[[], str]) -> str:
        with self._guard:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one rendering per key; the others wait for it
            with self._guard:
                if key in self._items:
                    return self._items[key]
            html = render()
            with self._guard:
                self.renders += 1
                self._items[key] = html
                while len(self._items) > self._size:
                    old, _ = self._items.popitem(last=False)
                    self._locks.pop(old, None)
                self._locks.pop(key, None)
            return html


def _rows(state: Any, query: str, operator: bool) -> tuple[tuple[Any, ...], Callable[[], str]]:
    """The cache key of a view's list fragment and the call that renders it."""

    def render() -> str:
        with state.sessions() as db:
            params = dict(parse_qsl(query))
            context = _alert_list(params, f"/alerts?{query}" if query else "/alerts", db, operator)
            return templates.get_template("_alert_results.html").render(**context)

    return (query, operator, state.feed.position), render


def render_rows(state: Any, query: str, operator: bool) -> str:
    """The list fragment of a view (its query string), from the cache or rendered once.
    Runs in a worker thread."""
    cache: FragmentCache = state.fragments
    return cache.get(*_rows(state, query, operator))


async def shared_rows(state: Any, query: str, operator: bool) -> tuple[int, str]:
    """`render_rows` for the live stream, with the feed position it was rendered at: the
    stream pushes it to every browser watching that view after each change, so browsers
    make no request of their own (`cloud.live`)."""
    cache: FragmentCache = state.fragments
    key, render = _rows(state, query, operator)
    return key[2], await cache.shared(key, render)


@router.get("/alerts/rows")
def alert_rows(request: Request, user: PageUser) -> HTMLResponse:
    """The list without the page around it (what the live stream pushes)."""
    html = render_rows(request.app.state, request.url.query, user.can("operator"))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.post("/alerts/actions")
def alert_actions(
    request: Request,
    user: PageUser,
    csrf: Annotated[str, Form(max_length=128)] = "",
    ids: Annotated[list[int] | None, Form()] = None,
    action: Annotated[str, Form(max_length=32)] = "",
    one: Annotated[str, Form(max_length=64)] = "",
    text: Annotated[str, Form(max_length=2000)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/alerts",  # noqa: A002 - a URL word
) -> Response:
    """The bulk form and each row's buttons (`one` = `action:id`) post here; the bulk
    form's false alarm takes its own `reason` field."""
    _check(user, csrf)
    if action == "false_alarm" and reason.strip():
        text = reason
    if one:
        action, _, single = one.partition(":")
        ids = [int(single)] if single.isdigit() else []
    if not ids:
        raise HTTPException(422, detail="Select at least one alert.")
    if action not in alerts.ACTIONS:
        raise HTTPException(422, detail=f"Unknown action {action!r}.")
    try:
        alerts.act(
            request.app.state.engine,
            ids,
            action,
            user.name,
            _now(request),
            text,
        )
    except alerts.ActionError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    request.app.state.feed.poke()
    return RedirectResponse(local_path(next, "/alerts"), status_code=303)


def _chartable(name: str, value: Any) -> bool:
    """A measured field: a number, not the window's count or a timestamp."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and name != "count"
        and not name.endswith("_ts")
    )


def _chart_fields(detail: AlertDetail, digests: list[Digest]) -> list[str]:
    """The digest fields of the rule's inputs (its `values`), else every numeric field."""
    raised = detail.payload.get("raised") or detail.payload.get("cleared") or {}
    values = raised.get("values") if isinstance(raised, dict) else None
    read = set(values) if isinstance(values, dict) else set()
    numeric = sorted(
        {k for d in digests for k, v in d.metrics.items() if isinstance(v, int | float)} - {"count"}
    )
    chosen = [f for f in numeric if any(f == r or f.startswith(f"{r}_") for r in read)]
    return (chosen or numeric)[:8]


def _series(digests: list[Digest], fields: list[str]) -> dict[str, Any]:
    ordered = sorted(digests, key=lambda d: d.window_end)
    return {
        "x": [d.window_end for d in ordered],
        "series": {f: [d.metrics.get(f) for d in ordered] for f in fields},
    }


@router.get("/alerts/{alert_id}")
def alert_page(request: Request, db: Db, user: PageUser, alert_id: int) -> Response:
    detail = queries.alert_detail(db, alert_id)
    if detail is None:
        raise HTTPException(404, detail=f"No alert episode {alert_id}.")
    end = max(detail.cleared_at or detail.raised_at, detail.raised_at)
    lo, hi = detail.raised_at - AROUND, end + AROUND
    digests = list(
        db.scalars(
            select(Digest)
            .where(
                Digest.gateway_id == detail.gateway,
                Digest.device == detail.device,
                Digest.window_end >= lo,
                Digest.window_end < hi,
            )
            .order_by(Digest.window_end.desc())
            .limit(CHART_POINTS)
        )
    )
    fields = _chart_fields(detail, digests)
    decisions = queries.escalations(
        db, queries.Filters(detail.gateway, detail.device, lo, hi), None, None, 50, None
    ).items
    arrived = next((a.at for a in detail.activity if a.action in ("raised", "cleared")), None)
    delay = arrived - detail.raised_at if arrived is not None else None
    gateway = queries.gateway(db, detail.gateway, 100, _now(request), _gap_grace(request))
    outage = None
    if arrived is not None and delay is not None and delay > queries.OUTAGE:
        outage = queries.outage_evidence(
            db, detail.gateway, detail.raised_seq, detail.raised_at, arrived
        )
    return _render(
        request,
        db,
        "alert.html",
        user,
        alert=detail,
        chart={**_series(digests, fields), "marks": [detail.raised_at, detail.cleared_at]},
        fields=fields,
        decisions=decisions,
        arrived=arrived,
        delay=delay,
        outage=outage,
        slow=queries.OUTAGE,
        gateway=gateway,
        actions=alerts.ACTIONS,
        here=f"/alerts/{alert_id}",
        now=_now(request),
    )


# -- silences --------------------------------------------------------------------------------


@router.get("/silences")
def silence_list(request: Request, db: Db, user: PageUser) -> Response:
    found = queries.silences(db, _now(request))
    return _render(request, db, "silences.html", user, silences=found.items, now=_now(request))


@router.post("/silences")
def silence_add(
    request: Request,
    user: PageUser,
    gateway: Annotated[str, Form(max_length=128)],
    rule: Annotated[str, Form(max_length=128)],
    csrf: Annotated[str, Form(max_length=128)] = "",
    device: Annotated[str, Form(max_length=256)] = "",
    hours: Annotated[float, Form(gt=0, le=24 * 90)] = 4.0,
    reason: Annotated[str, Form(max_length=2000)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/silences",  # noqa: A002 - a URL word
) -> Response:
    _check(user, csrf)
    now = _now(request)
    try:
        alerts.add_silence(
            request.app.state.engine,
            gateway,
            _text(device),
            rule,
            now + hours * 3600,
            reason,
            user.name,
            now,
        )
    except alerts.ActionError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    request.app.state.feed.poke()
    return RedirectResponse(local_path(next, "/silences"), status_code=303)


@router.post("/silences/{silence_id}/end")
def silence_end(
    request: Request,
    user: PageUser,
    silence_id: int,
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    _check(user, csrf)
    alerts.end_silence(request.app.state.engine, silence_id, user.name, _now(request))
    request.app.state.feed.poke()
    return RedirectResponse("/silences", status_code=303)


# -- gateways, devices, models ---------------------------------------------------------------


@router.get("/gateways")
def gateway_list(
    request: Request, db: Db, user: PageUser, cursor: Annotated[str | None, Query()] = None
) -> Response:
    found = queries.gateways(db, 200, cursor, _now(request))
    rows = [g.model_dump(by_alias=True) for g in found.items]
    return _render(
        request, db, "gateways.html", user, gateways=rows, next=found.next, now=_now(request)
    )


@router.get("/gateways/{gateway_id}")
def gateway_page(request: Request, db: Db, user: PageUser, gateway_id: str) -> Response:
    detail = queries.gateway(db, gateway_id, 200, _now(request), _gap_grace(request))
    if detail is None:
        raise HTTPException(404, detail=f"No gateway {gateway_id!r}.")
    devices = list(
        db.scalars(
            select(Digest.device)
            .distinct()
            .where(Digest.gateway_id == gateway_id)
            .order_by(Digest.device)
            .limit(500)
        )
    )
    recent = queries.alerts(db, queries.Filters(gateway_id), queries.AlertFilters(), 20, None).items
    models = queries.gateway_models(db, gateway_id, 20)
    return _render(
        request,
        db,
        "gateway.html",
        user,
        g=detail.model_dump(by_alias=True),
        devices=devices,
        alerts=recent,
        models=models,
        now=_now(request),
    )


def _time_param(name: str, value: str | None) -> float | None:
    """A `from`/`to` of the device page: what the browser sends (ISO 8601, UTC) or epoch
    seconds; anything else is a 422 that names the field."""
    if not _text(value):
        return None
    parsed = _parse_time(value)
    if parsed is None:
        raise HTTPException(
            422, detail=f"{name}: expected a date and time like 2026-12-04T10:00Z, got {value!r}"
        )
    return parsed


def _field_groups(sample: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Chartable fields of the newest digests, grouped by what precedes their last `_`
    (`temperature_mean`, `temperature_max` share one chart)."""
    groups: defaultdict[str, list[str]] = defaultdict(list)
    for name in sorted({k for m in sample for k in m}):
        if any(_chartable(name, m.get(name)) for m in sample):
            groups[name.rsplit("_", 1)[0] if "_" in name else name].append(name)
    return dict(sorted(groups.items())[:MAX_CHARTS])


@router.get("/gateways/{gateway_id}/devices/{device:path}")
def device_page(
    request: Request,
    db: Db,
    user: PageUser,
    gateway_id: str,
    device: str,
    range_: Annotated[str, Query(alias="range")] = "6h",
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The whole chosen range, downsampled in the database (`queries.digest_chart`): the
    range ends at the newest digest (or `to`) and spans the range's length (or from
    `from`)."""
    span = RANGES.get(range_, RANGES["6h"])
    lo, hi = _time_param("from", from_), _time_param("to", to)
    if hi is None and lo is not None:
        hi = _now(request)  # from a time until now
    elif hi is None:  # the last `range` of what the device sent (a demo's data may be old)
        newest = db.scalar(
            select(Digest.window_end)
            .where(Digest.gateway_id == gateway_id, Digest.device == device)
            .order_by(Digest.window_end.desc())
            .limit(1)
        )
        hi = (newest or _now(request)) + 1
    if lo is None:
        lo = hi - span
    if lo >= hi:
        raise HTTPException(422, detail="from: must be before to; pick an earlier from.")
    sample = list(
        db.scalars(
            select(Digest.metrics)
            .where(
                Digest.gateway_id == gateway_id,
                Digest.device == device,
                Digest.window_end >= lo,
                Digest.window_end < hi,
            )
            .order_by(Digest.window_end.desc())
            .limit(50)
        )
    )
    groups = _field_groups(sample)
    chart = queries.digest_chart(
        db,
        gateway_id,
        device,
        lo,
        hi,
        [f for names in groups.values() for f in names],
        CHART_POINTS,
    )
    marks = queries.alerts(
        db, queries.Filters(gateway_id, device, lo, hi), queries.AlertFilters(), 200, None
    ).items
    charts = [
        {
            "title": base,
            "x": chart.x,
            "series": {f: chart.series[f] for f in names if f in chart.series},
        }
        for base, names in groups.items()
    ]
    custom = from_ is not None or to is not None
    return _render(
        request,
        db,
        "device.html",
        user,
        gateway=gateway_id,
        device=device,
        charts=charts,
        marks=[{"at": a.raised_at, "label": f"{a.severity}: {a.rule}"} for a in marks],
        alerts=marks,
        range=None if custom else (range_ if range_ in RANGES else "6h"),
        ranges=list(RANGES),
        lo=lo,
        hi=hi,
        count=chart.digests,
        points=len(chart.x),
        width=chart.width,
        now=_now(request),
    )


@router.get("/models")
def models_page(request: Request, db: Db, user: PageUser) -> Response:
    inference = queries.inference(db, None).items
    listed = queries.gateways(db, 1000, None, _now(request), with_rates=False)
    gateways = [g.gateway for g in listed.items]
    uploads = {}
    for gateway in gateways:
        found = queries.gateway_models(db, gateway, 10)
        if found is not None and (found.running or found.uploads):
            uploads[gateway] = found
    disagreements = queries.escalations(db, queries.Filters(), None, False, 20, None).items
    steps = sorted({(g, s.step) for g, m in uploads.items() for s in m.running})
    hour = queries.hour_of(Escalation.at, db.get_bind().dialect.name)
    since = _now(request) - 7 * 86400
    rows = db.execute(
        select(
            hour,
            func.count(),
            func.count(Escalation.decided_at),
            func.sum(case((Escalation.agree.is_(True), 1), else_=0)),
        )
        .where(Escalation.at >= since)
        .group_by(hour)
        .order_by(hour)
    ).all()
    per_hour = {float(h): (int(n), int(d), int(a or 0)) for h, n, d, a in rows}
    local = queries.local_exit_trend(db, since)
    hours = sorted(per_hour.keys() | local.keys())
    trend = {
        "x": hours,
        "series": {
            "escalations per hour": [per_hour.get(h, (0, 0, 0))[0] for h in hours],
            "cloud agreed (%)": [
                round(100 * a / d, 1) if d else None
                for _, d, a in (per_hour.get(h, (0, 0, 0)) for h in hours)
            ],
            "local exit (%)": [round(100 * local[h], 2) if h in local else None for h in hours],
        },
    }
    return _render(
        request,
        db,
        "models.html",
        user,
        inference=inference,
        uploads=uploads,
        gateways=gateways,
        steps=steps,
        disagreements=disagreements,
        trend=trend,
        changes=queries.activity(db, ("model_upload",), 20),
        now=_now(request),
    )


@router.post("/models/upload")
async def model_upload(
    request: Request,
    user: PageUser,
    gateway: Annotated[str, Form(max_length=128)],
    step: Annotated[str, Form(max_length=128)],
    model: Annotated[UploadFile, File()],
    csrf: Annotated[str, Form(max_length=128)] = "",
    version: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """The admin's upload form: the same over-the-air path as `PUT /api/.../models/<step>`."""
    _check(user, csrf, "admin")
    uploads: ModelUpdates = request.app.state.uploads
    data = await model.read(uploads.max_bytes + 1)
    try:
        await uploads.upload(gateway, step, data, _text(version), user.name)
    except UploadError as exc:
        raise HTTPException(exc.status, detail=f"Upload refused: {exc.detail}") from exc
    return RedirectResponse("/models", status_code=303)


# -- notifications ---------------------------------------------------------------------------


@router.get("/notifications")
def notifications_page(request: Request, db: Db, user: PageUser) -> Response:
    admin = user.can("admin")
    hooks = notify.webhooks(request.app.state.engine) if admin else []
    changes = queries.activity(db, notify.AUDITED, 20) if admin else []
    return _render(
        request,
        db,
        "notifications.html",
        user,
        hooks=hooks,
        events=notify.EVENTS,
        changes=changes,
    )


@router.post("/notifications")
def notifications_add(
    request: Request,
    user: PageUser,
    url: Annotated[str, Form(max_length=2048)],
    csrf: Annotated[str, Form(max_length=128)] = "",
    shape: Annotated[str, Form(max_length=16)] = "generic",
    on: Annotated[list[str] | None, Form()] = None,
) -> Response:
    _check(user, csrf, "admin")
    try:
        notify.add_webhook(request.app.state.engine, url, shape, on or [], user.name, _now(request))
    except notify.WebhookError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return RedirectResponse("/notifications", status_code=303)


@router.post("/notifications/{webhook_id}/remove")
def notifications_remove(
    request: Request,
    user: PageUser,
    webhook_id: int,
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    _check(user, csrf, "admin")
    notify.remove_webhook(request.app.state.engine, webhook_id, user.name, _now(request))
    return RedirectResponse("/notifications", status_code=303)
