"""The live stream: what happens to alerts, pushed to browsers as server-sent events.

One poller per process follows the `activity` table by id (a raise or clear stored by any
replica, an action taken through any replica) and fans each row out to the connected
browsers, so the database sees one small indexed query per interval however many
browsers watch. An action taken through this process pokes the poller, which then reads
at once. On PostgreSQL ids are taken before commit, so a row can become visible after a
higher one: ids skipped over are asked for again for `HOLE_SECONDS`.

A browser showing the first page of the alert list asks for its view (`?rows=<the list's
query>`); after each batch of changes the stream also carries that list, rendered once per
view, role and feed position for every browser watching it (`cloud.pages.shared_rows`),
so a change costs one rendering and no request per browser.

Everything a stream sends is made once and shared as bytes: each poll's batch of events
is serialised by the feed, each rendered list framed as an SSE event once (`rows_event`)
or, for browsers that hold the previous rendering, as a patch against it (`Patches`), and
a browser gets one write per batch. Measured with 100 streams (`bench/console_bench.py
streams`): framing the ~25 KB list per browser (split into `data:` lines, joined) and one
`orjson.dumps` per browser and event were a third of the event loop's time, and slowed
ingest's commits (the loop and ingest's thread share the GIL).

SSE rather than WebSockets: one direction is all we need, it is plain HTTP (proxies, the
session cookie, no extra dependency), and `EventSource` reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine, func, or_, select

from cloud.auth import Viewer
from cloud.models import Activity, Alert
from cloud.pages import shared_rows

log = logging.getLogger("fogline.cloud.live")

HOLE_SECONDS = 5.0
HEARTBEAT = 15.0  # seconds between comments that keep idle proxies from closing a stream
QUEUE = 256  # batches held per browser; past that it is told to reload its list
RESET = b'event: alert\ndata: {"action":"reset"}\n\n'
PING = b": ping\n\n"  # handed to every stream by the feed: no timer per stream and wait


def alert_events(events: list[dict[str, Any]]) -> bytes:
    """A batch of changes as SSE `alert` events, made once for every subscriber."""
    return b"".join(
        b"event: alert\nid: %d\ndata: %s\n\n" % (event["id"], orjson.dumps(event))
        for event in events
    )


class Feed:
    """Polls `activity` and hands each batch of new rows, as SSE bytes, to subscribers
    (bounded queues, never blocking)."""

    def __init__(
        self,
        engine: Engine,
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self.interval = interval
        self._clock = clock
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last = 0
        self._holes: dict[int, float] = {}
        self._closed = False
        self.polls = 0
        self.patches = Patches()
        self._offered = clock()  # when subscribers were last handed something

    @property
    def position(self) -> int:
        """The last activity id handed out: a version of everything alerts show."""
        return self._last

    @property
    def watchers(self) -> int:
        return len(self._subscribers)

    def poke(self) -> None:
        """Read now (thread-safe: API handlers run in FastAPI's thread pool)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[bytes | None]]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE)
        if self._closed:
            queue.put_nowait(None)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every stream (shutdown: uvicorn waits for open responses)."""
        self._closed = True
        for queue in self._subscribers:
            self._offer(queue, None)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._last = await asyncio.to_thread(self._max_id)
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                events = await asyncio.to_thread(self._fetch)
            except Exception:  # a database that is away must not end the feed
                log.exception("live feed: reading activity failed; retrying")
                await asyncio.sleep(1.0)
                events = []
            now = self._clock()
            if events:
                chunk = alert_events(events)
            elif now - self._offered >= HEARTBEAT:
                chunk = PING
            else:
                continue
            self._offered = now
            for queue in list(self._subscribers):
                self._offer(queue, chunk)

    @staticmethod
    def _offer(queue: asyncio.Queue[bytes | None], chunk: bytes | None) -> None:
        try:
            queue.put_nowait(chunk)
        except asyncio.QueueFull:  # a browser that does not keep up reloads its list instead
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(RESET if chunk is not None else None)

    def _max_id(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(Activity.id), 0))).scalar_one())

    def _fetch(self) -> list[dict[str, Any]]:
        self.polls += 1
        now = self._clock()
        self._holes = {i: t for i, t in self._holes.items() if now - t < HOLE_SECONDS}
        wanted = Activity.id > self._last
        if self._holes:
            wanted = or_(wanted, Activity.id.in_(sorted(self._holes)))
        query = (
            select(
                Activity.id,
                Activity.at,
                Activity.actor,
                Activity.action,
                Activity.alert,
                Alert.state,
                Alert.severity,
                Alert.gateway_id,
                Alert.device,
                Alert.rule,
            )
            .outerjoin(Alert, Alert.id == Activity.alert)
            .where(wanted)
            .order_by(Activity.id)
            .limit(1000)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        events = []
        for row in rows:
            self._holes.pop(row.id, None)
            if row.id > self._last:
                self._holes.update(dict.fromkeys(range(self._last + 1, row.id), now))
                self._last = row.id
            events.append(
                {
                    "id": row.id,
                    "at": row.at,
                    "actor": row.actor,
                    "action": row.action,
                    "alert": row.alert,
                    "state": row.state,
                    "severity": row.severity,
                    "gateway": row.gateway_id,
                    "device": row.device,
                    "rule": row.rule,
                }
            )
        if len(self._holes) > 10_000:  # a sequence that jumped (PostgreSQL caches ids)
            self._holes.clear()
        return events


router = APIRouter(include_in_schema=False)


class Patches:
    """What changed in a view's list since its previous rendering, as an SSE `patch` event:
    made once per change and view in the event loop, sent to every browser that holds the
    previous rendering; any other browser gets the whole list (`rows_event`).

    A raised alert changes a few lines of the ~25 KB list (its row, the one that leaves the
    page, the counts), so a patch is 1-2 KB: with 100 browsers, a change was 2.5 MB to
    write and for the browsers to parse (measured with `bench/console_bench.py streams`).
    The patch is a JSON list: `[a, b]` keeps lines a..b of the previous text, a string is a
    new line (`console.js` applies it).
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._latest: dict[tuple[str, bool], tuple[int, str]] = {}
        self._made: OrderedDict[tuple[str, bool, int], tuple[int, bytes] | None] = OrderedDict()

    def event(self, view: str, operator: bool, position: int, html: str, held: int | None) -> bytes:
        """The bytes that bring a browser holding the rendering at `held` to `html`."""
        key = (view, operator, position)
        if key not in self._made:
            latest = self._latest.get((view, operator))
            made = None
            if latest is not None and latest[0] < position:
                made = (latest[0], line_patch(latest[1], html))
            if latest is None or latest[0] < position:
                self._latest[(view, operator)] = (position, html)
                if len(self._latest) > self._size:
                    self._latest.pop(next(iter(self._latest)))
            self._made[key] = made
            while len(self._made) > self._size:
                self._made.popitem(last=False)
        made = self._made[key]
        if made is not None and held is not None and made[0] == held:
            return made[1]
        return rows_event(html)


def line_patch(old: str, new: str) -> bytes:
    """`new` as an SSE `patch` event against `old` (line runs kept, other lines sent)."""
    before, after = old.split("\n"), new.split("\n")
    ops: list[list[int] | str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after).get_opcodes():
        if tag == "equal":
            ops.append([i1, i2])
        else:
            ops.extend(after[j1:j2])
    return b"event: patch\ndata: %s\n\n" % orjson.dumps(ops)


@functools.lru_cache(maxsize=64)
def rows_event(html: str) -> bytes:
    """An SSE `rows` event: one `data:` line per line of the fragment. Cached: every browser
    on a view is handed the same rendered string (hashed once, compared by identity)."""
    lines = html.encode().split(b"\n")
    return b"event: rows\n" + b"".join(b"data: %s\n" % line for line in lines) + b"\n"


async def _stream(
    request: Request, feed: Feed, view: str | None, operator: bool
) -> AsyncIterator[bytes]:
    held: int | None = None  # the feed position of the list this browser holds
    with feed.subscribe() as queue:
        yield b"retry: 2000\n: connected\n\n"
        while True:
            chunk = await queue.get()  # Starlette ends the stream when the browser leaves
            if chunk is PING:
                yield chunk
                continue
            chunks = [chunk]
            while chunks[-1] is not None and not queue.empty():  # what else already came
                chunks.append(queue.get_nowait())
            done = chunks[-1] is None
            sent = b"".join(c for c in chunks if c is not None and c is not PING)
            if view is not None and not done:
                position, html = await shared_rows(request.app.state, view, operator)
                if position != held:
                    sent += feed.patches.event(view, operator, position, html, held)
                    held = position
            if sent:
                yield sent
            if done:
                return


@router.get("/live/alerts")
def live_alerts(
    request: Request,
    user: Viewer,
    rows: Annotated[str | None, Query(max_length=2048)] = None,
) -> StreamingResponse:
    """Every change to alerts, as `event: alert` with a JSON body (see `Feed._fetch`); with
    `rows` (the query string of an alert list), also that list as rendered HTML after each
    batch of changes (`event: rows`), rendered once per view for every browser."""
    feed: Feed = request.app.state.feed
    return StreamingResponse(
        _stream(request, feed, rows, user.can("operator")),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
