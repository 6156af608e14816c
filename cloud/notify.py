"""Webhooks: tell other systems when an alert is raised, cleared or acknowledged.

Ingest never waits for this. A task of its own follows the `activity` log (the same log
the console's live list reads): each new row that a webhook asks for becomes a
`deliveries` row (unique per webhook and activity, so replicas that both see it make
one), and due deliveries are sent from worker threads of the notifier's own pool (stdlib
`urllib`, 5 s timeout). The pool is the notifier's, not the event loop's default one: ingest's
writes and the live feed hop through the default pool, and 8 webhooks to a receiver that
accepts and never answers held its 6 workers (2 cores + 4) for the whole timeout, so a hop
of ingest's took 3.6 s; now they wait in the webhooks' own queue.
Deliveries to one webhook go in order (a retry may
overtake: order is kept while the receiver answers). A failure is retried with capped
exponential backoff and jitter (5 s, 10 s, 20 s, ... up
to an hour), and after `MAX_ATTEMPTS` the delivery is `failed` with its last error: both
are visible in `GET /api/webhooks` and on the console's notifications page. Episodes
covered by a silence are not sent (they are still stored, listed and counted). A webhook
that asks for `cleared` also hears `closed`: an episode the gateway no longer holds, closed
without a clear (`cloud.alerts.reconcile`), is over all the same.

Two shapes: `generic` (JSON: event, actor, time and the episode) and `slack` (`{"text":
...}`, which Slack's and Mattermost's incoming webhooks and Teams' legacy connectors take).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cloud.db import writing
from cloud.models import Activity, Alert, Delivery, Webhook

log = logging.getLogger("fogline.cloud.notify")

Shape = Literal["generic", "slack"]
EVENTS = ("raised", "cleared", "acknowledge")
AUDITED = ("webhook_add", "webhook_remove")  # activity rows of webhook changes
ASKED_AS = {"closed": "cleared"}  # activity actions delivered to the hooks of another event
MAX_ATTEMPTS = 8
TIMEOUT = 5.0
SEVERITY_MARK = {"critical": "🔴", "warning": "🟠", "info": "🔵"}


class WebhookError(ValueError):
    """A webhook that cannot be added as asked."""


def check_url(url: str) -> str:
    """An http(s) URL with a host and, if any, a port that parses (one that did not was
    once stored, and then every listing of webhooks failed on it)."""
    try:
        parts = urlsplit(url)  # raises on a bracketed host that is no IP address
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # includes a port that is not a number or past 65535
        ok = False
    if not ok or len(url) > 2048:
        raise WebhookError(f"url: expected http(s)://host[:port]/path, got {url!r}")
    return url


def add_webhook(engine: Engine, url: str, shape: str, on: list[str], actor: str, now: float) -> int:
    if shape not in ("generic", "slack"):
        raise WebhookError(f"shape: expected generic or slack, got {shape!r}")
    if not on or any(e not in EVENTS for e in on):
        raise WebhookError(f"on: expected some of {', '.join(EVENTS)}, got {on!r}")
    with writing(engine) as conn:
        made = int(
            conn.execute(
                insert(Webhook)
                .values(
                    url=check_url(url),
                    shape=shape,
                    actions={"on": sorted(set(on))},
                    created_by=actor,
                    created_at=now,
                )
                .returning(Webhook.id)
            ).scalar_one()
        )
        detail = {"webhook": made, "url": _redacted(url), "shape": shape, "on": sorted(set(on))}
        _audit(conn, "webhook_add", actor, now, detail)
        return made


def remove_webhook(engine: Engine, webhook_id: int, actor: str, now: float) -> bool:
    with writing(engine) as conn:
        url = conn.execute(
            update(Webhook)
            .where(Webhook.id == webhook_id, Webhook.removed_at.is_(None))
            .values(removed_at=now)
            .returning(Webhook.url)
        ).scalar_one_or_none()
        if url is not None:
            _audit(
                conn, "webhook_remove", actor, now, {"webhook": webhook_id, "url": _redacted(url)}
            )
        return url is not None


def _audit(conn: Connection, action: str, actor: str, now: float, detail: dict[str, Any]) -> None:
    """An activity row with no alert: the audit of who changed the webhooks, and when."""
    conn.execute(
        insert(Activity).values(at=now, actor=actor, action=action, alert=None, detail=detail)
    )


def webhooks(engine: Engine) -> list[dict[str, Any]]:
    """Webhooks in use, with their delivery counts and latest failure."""
    with engine.connect() as conn:
        hooks = conn.execute(
            select(Webhook).where(Webhook.removed_at.is_(None)).order_by(Webhook.id)
        ).all()
        counts: dict[tuple[int, str], int] = {
            (w, s): int(n)
            for w, s, n in conn.execute(
                select(Delivery.webhook_id, Delivery.status, func.count()).group_by(
                    Delivery.webhook_id, Delivery.status
                )
            )
        }
        out = []
        for hook in hooks:
            last_error = conn.execute(
                select(Delivery.last_error, Delivery.attempts, Delivery.next_at, Delivery.status)
                .where(Delivery.webhook_id == hook.id, Delivery.last_error.is_not(None))
                .order_by(Delivery.id.desc())
                .limit(1)
            ).first()
            out.append(
                {
                    "id": hook.id,
                    "url": _redacted(hook.url),
                    "shape": hook.shape,
                    "on": hook.actions.get("on", []),
                    "created_by": hook.created_by,
                    "created_at": hook.created_at,
                    "sent": counts.get((hook.id, "sent"), 0),
                    "pending": counts.get((hook.id, "pending"), 0),
                    "failed": counts.get((hook.id, "failed"), 0),
                    "last_error": last_error.last_error if last_error else None,
                    "last_error_status": last_error.status if last_error else None,
                }
            )
        return out


def _redacted(url: str) -> str:
    """A URL as shown to people: Slack-style URLs carry their secret in the path."""
    parts = urlsplit(url)
    path = parts.path
    if len(path) > 16:
        path = path[:12] + "…"
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{path}"


def body(shape: str, event: dict[str, Any], public_url: str | None) -> bytes:
    """The request body for one event (see the module docstring for the two shapes)."""
    link = f"{public_url.rstrip('/')}/alerts/{event['alert']}" if public_url else None
    if shape == "slack":
        verb = {
            "raised": "raised",
            "cleared": "cleared at the source",
            "closed": "closed: the gateway no longer holds it",
        }.get(event["action"], f"acknowledged by {event['actor']}")
        mark = SEVERITY_MARK.get(event["severity"], "")
        where = f"{event['device'] or 'gateway'} on {event['gateway']}"
        text = f"{mark} {event['severity'].upper()} {event['rule']} {verb}: {where}"
        if event.get("message"):
            text += f" — {event['message']}"
        if link:
            text += f" <{link}|open>"
        return orjson.dumps({"text": text})
    return orjson.dumps(
        {
            "event": event["action"],
            "actor": event["actor"],
            "at": event["at"],
            "url": link,
            "alert": {
                k: event[k]
                for k in (
                    "alert",
                    "gateway",
                    "device",
                    "rule",
                    "severity",
                    "state",
                    "message",
                    "raised_at",
                )
            },
        }
    )


def backoff(attempts: int, base: float) -> float:
    """Seconds before the next try: base * 2^(n-1), capped at an hour, with 20 % jitter."""
    return float(min(base * 2.0 ** (attempts - 1), 3600.0) * random.uniform(0.8, 1.2))


@dataclass
class NotifyOptions:
    interval: float = 1.0  # seconds between looks at the log and the queue
    base_backoff: float = 5.0
    max_attempts: int = MAX_ATTEMPTS
    public_url: str | None = None  # links in messages: https://console.example
    timeout: float = TIMEOUT  # seconds a receiver has to answer one POST
    senders: int = 4  # threads that POST (webhooks past that wait their turn)


class Notifier:
    """The task that turns activity into deliveries and sends them."""

    def __init__(
        self, engine: Engine, options: NotifyOptions, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self.options = options
        self._clock = clock
        self._cursor: int | None = None
        self.sent = 0
        self.failures = 0

    async def run(self) -> None:
        pool = ThreadPoolExecutor(self.options.senders, thread_name_prefix="fogline-webhook")
        try:
            await self._run(pool)
        finally:
            # A POST in flight ends at its timeout; nothing waits for it here.
            pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, pool: ThreadPoolExecutor) -> None:
        while True:
            try:
                await asyncio.to_thread(self._enqueue)
                due = await asyncio.to_thread(self._claim)
                by_hook: dict[str, list[dict[str, Any]]] = {}
                for delivery in sorted(due, key=lambda d: d["id"]):
                    by_hook.setdefault(delivery["url"], []).append(delivery)
                # In order per webhook (a chat reads raise, ack, clear), webhooks in parallel.
                await asyncio.gather(*(self._send_all(pool, group) for group in by_hook.values()))
            except asyncio.CancelledError:
                raise
            except Exception:  # a database that is away must not end notifications
                log.exception("webhooks: a pass failed; retrying")
            await asyncio.sleep(self.options.interval)

    def _enqueue(self) -> None:
        """Deliveries for activity rows since the last pass (from now on, at start)."""
        with self._engine.connect() as conn:
            if self._cursor is None:
                top = conn.execute(select(func.coalesce(func.max(Activity.id), 0))).scalar_one()
                self._cursor = int(top)
                return
            hooks = conn.execute(
                select(Webhook.id, Webhook.actions).where(Webhook.removed_at.is_(None))
            ).all()
            rows = conn.execute(
                select(Activity.id, Activity.action, Alert.silence_id)
                .join(Alert, Alert.id == Activity.alert)
                .where(Activity.id > self._cursor)
                .order_by(Activity.id)
                .limit(5000)
            ).all()
        if not rows:
            return
        now = self._clock()
        new = [
            {
                "webhook_id": hook_id,
                "activity_id": row.id,
                "status": "pending",
                "attempts": 0,
                "next_at": now,
                "created_at": now,
            }
            for row in rows
            if row.silence_id is None
            for hook_id, actions in hooks
            if ASKED_AS.get(row.action, row.action) in actions.get("on", [])
        ]
        if new:
            with writing(self._engine) as conn:
                dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
                conn.execute(dialect.insert(Delivery).on_conflict_do_nothing(), new)
        self._cursor = rows[-1].id

    def _claim(self) -> list[dict[str, Any]]:
        """Due deliveries, leased for a minute so that another replica skips them."""
        now = self._clock()
        with writing(self._engine) as conn:
            due = conn.execute(
                select(Delivery.id)
                .where(Delivery.status == "pending", Delivery.next_at <= now)
                .order_by(Delivery.id)
                .limit(20)
            ).all()
            claimed = []
            for (delivery_id,) in due:
                if conn.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id, Delivery.next_at <= now)
                    .values(next_at=now + 60)
                ).rowcount:
                    claimed.append(delivery_id)
            if not claimed:
                return []
            rows = conn.execute(
                select(
                    Delivery.id,
                    Delivery.attempts,
                    Webhook.url,
                    Webhook.shape,
                    Activity.action,
                    Activity.actor,
                    Activity.at,
                    Activity.alert,
                    Alert.gateway_id,
                    Alert.device,
                    Alert.rule,
                    Alert.severity,
                    Alert.state,
                    Alert.message,
                    Alert.raised_at,
                )
                .join(Webhook, Webhook.id == Delivery.webhook_id)
                .join(Activity, Activity.id == Delivery.activity_id)
                .join(Alert, Alert.id == Activity.alert)
                .where(Delivery.id.in_(claimed))
            ).mappings()
            return [{**row, "gateway": row["gateway_id"]} for row in rows]

    async def _send_all(self, pool: ThreadPoolExecutor, deliveries: list[dict[str, Any]]) -> None:
        for delivery in deliveries:
            await self._send(pool, delivery)

    async def _send(self, pool: ThreadPoolExecutor, delivery: dict[str, Any]) -> None:
        payload = body(delivery["shape"], delivery, self.options.public_url)
        post = functools.partial(_post, delivery["url"], payload, self.options.timeout)
        error = await asyncio.get_running_loop().run_in_executor(pool, post)
        await asyncio.to_thread(self._record, delivery, error)

    def _record(self, delivery: dict[str, Any], error: str | None) -> None:
        now = self._clock()
        attempts = delivery["attempts"] + 1
        if error is None:
            values: dict[str, Any] = {"status": "sent", "sent_at": now, "attempts": attempts}
            self.sent += 1
        else:
            self.failures += 1
            gave_up = attempts >= self.options.max_attempts
            values = {
                "status": "failed" if gave_up else "pending",
                "attempts": attempts,
                "last_error": error[:500],
                "next_at": now + backoff(attempts, self.options.base_backoff),
            }
            log.warning(
                "webhook to %s failed (%s), attempt %d%s",
                _redacted(delivery["url"]),
                error,
                attempts,
                ": giving up" if gave_up else "",
            )
        with writing(self._engine) as conn:
            conn.execute(update(Delivery).where(Delivery.id == delivery["id"]).values(**values))


def _post(url: str, payload: bytes, timeout: float = TIMEOUT) -> str | None:
    """POST the body; None when the receiver took it (2xx), else why not."""
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked at creation
        url,
        data=payload,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "fogline-cloud"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(1024)
            return None
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            exc.close()
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return f"cannot reach it: {exc.reason}"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
