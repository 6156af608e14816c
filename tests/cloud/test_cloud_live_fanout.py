"""The live stream's fan-out: what 100 browsers share is made once (one rendering per view
and change, one serialisation per batch, one patch per change for the browsers that hold
the previous list), and a browser that does not keep up is told to reload rather than
slowing the others."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloudkit import apply_patch
from support import eventually

from cloud.db import make_engine, migrate
from cloud.live import (
    HEARTBEAT,
    PING,
    QUEUE,
    RESET,
    Feed,
    Patches,
    alert_events,
    line_patch,
    rows_event,
)
from cloud.pages import FragmentCache


async def test_a_view_is_rendered_once_for_every_stream_waiting_on_it() -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
    cache = FragmentCache()
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def render() -> str:
        calls.append(threading.current_thread().name)
        started.set()
        release.wait(5)  # every stream is waiting before the rendering ends
        return "<table>\n<tr data-id='1'></tr>\n</table>"

    waiting = [
        asyncio.create_task(cache.shared(("state=active", False, 7), render)) for _ in range(100)
    ]
    assert await asyncio.to_thread(started.wait, 5)
    # The 99 others hold no worker: ingest's writes, which share the pool, still run.
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "stored"), 2) == "stored"
    release.set()
    htmls = await asyncio.gather(*waiting)
    assert len(calls) == 1
    assert cache.renders == 1
    assert all(h is htmls[0] for h in htmls)
    assert rows_event(htmls[0]) is rows_event(htmls[1])  # framed once, shared
    assert rows_event(htmls[0]) == (
        b"event: rows\ndata: <table>\ndata: <tr data-id='1'></tr>\ndata: </table>\n\n"
    )
    assert await cache.shared(("state=active", False, 7), render) is htmls[0]  # no new work
    assert len(calls) == 1


async def test_a_stream_that_leaves_does_not_cancel_the_rendering_others_wait_for() -> None:
    cache = FragmentCache()
    release = threading.Event()

    def render() -> str:
        release.wait(5)
        return "rows"

    first = asyncio.create_task(cache.shared(("", True, 1), render))
    second = asyncio.create_task(cache.shared(("", True, 1), render))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "rows"
    assert first.cancelled()


def test_a_batch_of_changes_is_serialised_once_as_sse_bytes() -> None:
    chunk = alert_events([{"id": 3, "action": "raised"}, {"id": 4, "action": "cleared"}])
    assert chunk == (
        b'event: alert\nid: 3\ndata: {"id":3,"action":"raised"}\n\n'
        b'event: alert\nid: 4\ndata: {"id":4,"action":"cleared"}\n\n'
    )


async def test_a_browser_that_falls_behind_gets_a_reset_not_a_stall() -> None:
    feed = Feed(engine=None)  # type: ignore[arg-type] # fan-out only: no polling here
    with feed.subscribe() as slow, feed.subscribe() as fast:
        for n in range(QUEUE + 1):
            Feed._offer(slow, b"%d" % n)
            Feed._offer(fast, b"%d" % n)
            if n < QUEUE:
                fast.get_nowait()
        assert slow.qsize() == 1
        assert slow.get_nowait() == RESET
        assert fast.get_nowait() == b"%d" % QUEUE
        feed.close()
        assert slow.get_nowait() is None
    assert feed.watchers == 0


def test_a_browser_holding_the_previous_list_gets_a_patch_others_the_whole_list() -> None:
    rows = [f'<tr data-id="{i}">\n<td>alert {i}</td>\n</tr>' for i in range(50, 0, -1)]
    first = "<p>open 50</p>\n" + "\n".join(rows)
    second = "<p>open 51</p>\n" + "\n".join(
        ['<tr data-id="51">\n<td>alert 51</td>\n</tr>', *rows[:-1]]
    )
    patches = Patches()
    assert patches.event("state=active", False, 7, first, None) == rows_event(first)
    patch = patches.event("state=active", False, 9, second, 7)
    assert patch.startswith(b"event: patch\n")
    assert len(patch) < len(rows_event(second)) / 4
    assert apply_patch(first, patch) == second
    assert patches.event("state=active", False, 9, second, 7) is patch  # made once
    assert patches.event("state=active", False, 9, second, 3) == rows_event(second)  # held another
    assert patches.event("state=active", False, 9, second, None) == rows_event(second)
    assert patches.event("state=active", True, 9, second, 7) == rows_event(second)  # other role
    assert apply_patch("a\nb\nc", line_patch("a\nb\nc", "c\nx\na")) == "c\nx\na"
    assert apply_patch("", line_patch("", '<p>\u00e9 \\ "q"</p>')) == '<p>\u00e9 \\ "q"</p>'


async def test_the_feed_pings_every_stream_when_nothing_happens(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    now = [0.0]
    feed = Feed(engine, interval=0.01, clock=lambda: now[0])
    with feed.subscribe() as queue:
        async with asyncio.TaskGroup() as tasks:
            running = tasks.create_task(feed.run())
            await eventually(lambda: feed.polls >= 3, what="three polls")
            assert queue.empty()  # polls with nothing new hand out nothing
            now[0] = HEARTBEAT
            assert await asyncio.wait_for(queue.get(), 5) == PING
            feed.close()
            running.cancel()
    engine.dispose()
