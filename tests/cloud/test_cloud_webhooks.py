"""Webhooks against a real HTTP receiver: generic and Slack-shaped bodies on raise, clear and
acknowledge; a failing receiver is retried with backoff and its failures are visible;
silenced episodes are not sent; ingest does not wait for any of it."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from cloudkit import NOW, Database, alert, batch, bearer, console, payload
from sqlalchemy import select
from support import Broker, Collector, eventually

from cloud import notify
from cloud.app import Cloud, CloudOptions
from cloud.models import Activity
from cloud.notify import NotifyOptions, backoff
from fogline.envelope import uplink_topic
from fogline.urls import parse_broker_url


class Receiver:
    """A real HTTP server that records bodies; it answers `fail` times with 500 first."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = 0
        self.tries = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                owner.tries += 1
                if owner.fail > 0:
                    owner.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                owner.bodies.append(json.loads(data))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
async def cloud(broker: Broker, database: Database) -> AsyncIterator[Cloud]:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="hooks",
        wait_broker=None,
        notify=NotifyOptions(interval=0.05, base_backoff=0.1, public_url="https://fog.example"),
    )
    async with Cloud(options) as c:
        yield c


@pytest.fixture
async def http(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", headers=bearer(cloud.engine)
    ) as client:
        yield client


async def hook(http: httpx.AsyncClient, url: str, **kw: Any) -> dict[str, Any]:
    made = await http.post("/api/webhooks", json={"url": url, **kw})
    assert made.status_code == 201, made.text
    result: dict[str, Any] = made.json()
    return result


def write(cloud: Cloud, seq: int, record: dict[str, Any]) -> None:
    cloud.store.write([batch("gw1", "alert", [(seq, "line-1/m-01", record)])])


async def test_raise_acknowledge_clear_reach_a_generic_and_a_slack_hook(
    cloud: Cloud, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await hook(http, receiver.url)
    slack = await hook(http, receiver.url + "/slack", shape="slack", on=["raised"])
    write(cloud, 1, alert("hot/1", "raised"))
    await http.post("/api/alerts/actions", json={"ids": [1], "action": "acknowledge"})
    write(cloud, 2, alert("hot/1", "cleared", cleared_at=NOW + 9))
    await eventually(lambda: len(receiver.bodies) == 4, 10, "four deliveries")
    generic = [b for b in receiver.bodies if "event" in b]
    assert [b["event"] for b in generic] == ["raised", "acknowledge", "cleared"]
    assert generic[0]["alert"] == {
        "alert": 1, "gateway": "gw1", "device": "line-1/m-01", "rule": "hot",
        "severity": "critical", "state": generic[0]["alert"]["state"], "message": "hot raised",
        "raised_at": NOW,
    }  # fmt: skip
    assert generic[0]["url"] == "https://fog.example/alerts/1"
    assert generic[1]["actor"] == "test-admin"
    (text,) = [b["text"] for b in receiver.bodies if "text" in b]
    assert text == (
        "🔴 CRITICAL hot raised: line-1/m-01 on gw1 — hot raised <https://fog.example/alerts/1|open>"
    )
    listed = (await http.get("/api/webhooks")).json()["items"]
    assert [(w["id"], w["sent"], w["failed"]) for w in listed] == [(1, 3, 0), (slack["id"], 1, 0)]


async def test_a_hook_on_clears_hears_an_episode_the_gateway_closed(
    cloud: Cloud, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await hook(http, receiver.url, on=["cleared"])
    await hook(http, receiver.url + "/slack", shape="slack", on=["cleared"])
    write(cloud, 1, alert("hot/1", "raised"))
    health = {"ts": NOW + 60, "alerts_raised": {"ids": [], "complete": True}}
    cloud.store.write([batch("gw1", "health", [(2, "", health)])])
    await eventually(lambda: len(receiver.bodies) == 2, 10, "two deliveries")
    (generic,) = [b for b in receiver.bodies if "event" in b]
    assert (generic["event"], generic["actor"], generic["alert"]["state"]) == (
        "closed",
        "gateway gw1",
        "cleared",
    )
    (text,) = [b["text"] for b in receiver.bodies if "text" in b]
    assert text.startswith("🔴 CRITICAL hot closed: the gateway no longer holds it: line-1/m-01")


async def test_a_failing_receiver_is_retried_and_its_failures_show(
    cloud: Cloud, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await hook(http, receiver.url, on=["raised"])
    receiver.fail = 2
    write(cloud, 1, alert("hot/1", "raised"))
    await eventually(lambda: len(receiver.bodies) == 1, 10, "the delivery after two 500s")
    assert receiver.tries == 3
    deadline = time.monotonic() + 10  # the receiver has it; the notifier records it next
    while True:
        (listed,) = (await http.get("/api/webhooks")).json()["items"]
        if listed["sent"] or time.monotonic() > deadline:
            break
        await _sleep()
    assert (listed["sent"], listed["pending"], listed["failed"]) == (1, 0, 0)
    assert listed["last_error"] == "HTTP 500"
    # A receiver that never answers: given up after every retry, and said so.
    dead = await hook(http, "http://127.0.0.1:9/nothing-listens-here", on=["raised"])
    cloud.notifier.options.max_attempts = 3
    write(cloud, 2, alert("hot/2", "raised"))

    async def failed() -> bool:
        items = (await http.get("/api/webhooks")).json()["items"]
        return next(w for w in items if w["id"] == dead["id"])["failed"] == 1

    deadline = time.monotonic() + 10
    while not await failed():
        assert time.monotonic() < deadline, "the dead webhook to be given up"
        await _sleep()
    items = (await http.get("/api/webhooks")).json()["items"]
    shown = next(w for w in items if w["id"] == dead["id"])
    assert shown["last_error"] == "cannot reach it: [Errno 111] Connection refused"
    assert shown["url"] == "http://127.0.0.1:9/nothing-lis…"  # secret paths shortened


async def _sleep() -> None:
    await asyncio.sleep(0.1)


async def test_silenced_episodes_are_stored_but_not_sent(
    cloud: Cloud, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await hook(http, receiver.url, on=["raised"])
    silence = {"gateway": "gw1", "rule": "muted", "until": NOW * 2}
    assert (await http.post("/api/silences", json=silence)).status_code == 201
    write(cloud, 1, alert("m/1", "raised", rule="muted"))
    write(cloud, 2, alert("hot/1", "raised"))
    await eventually(lambda: len(receiver.bodies) == 1, 10, "one delivery")
    await _sleep()
    assert [b["alert"]["rule"] for b in receiver.bodies] == ["hot"]
    assert len((await http.get("/api/alerts")).json()["items"]) == 2


def test_backoff_doubles_and_is_capped() -> None:
    assert 4.0 <= backoff(1, 5.0) <= 6.0
    assert 32.0 <= backoff(4, 5.0) <= 48.0
    assert backoff(30, 5.0) <= 3600 * 1.2


async def test_only_admins_manage_webhooks(cloud: Cloud, receiver: Receiver) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", headers=bearer(cloud.engine, "operator")
    ) as operator:
        assert (await operator.get("/api/webhooks")).status_code == 403
        made = await operator.post("/api/webhooks", json={"url": receiver.url})
        assert made.status_code == 403


async def test_a_url_whose_port_does_not_parse_is_refused_and_listing_still_works(
    cloud: Cloud,
) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", headers=bearer(cloud.engine, "admin")
    ) as admin:
        for url in (
            "https://@host:\u00ff_/hook",
            "https://:80/hook",
            "https://host:0/x",
            "http://[0]",
        ):
            refused = await admin.post("/api/webhooks", json={"url": url})
            assert refused.status_code == 422, url
            assert refused.json()["detail"].startswith(
                ("body.url: String should match pattern", "url: expected http(s)://host")
            )
            with pytest.raises(notify.WebhookError, match=r"^url: expected http\(s\)://host"):
                notify.check_url(url)  # the console's form and the CLI come this way
        with pytest.raises(notify.WebhookError, match="expected http"):
            notify.check_url("https://host:70000/x")  # fits the pattern, not a port
        assert (await admin.get("/api/webhooks")).json() == {"items": []}
        twice = await admin.get(
            "/api/alerts", params=[("state", "open"), ("state", "acknowledged")]
        )
        assert twice.status_code == 422
        assert twice.json() == {"detail": "query.state: given more than once; expected once"}
        bad = await admin.post("/api/alerts/actions", json={"ids": [2**63], "action": "resolve"})
        assert bad.status_code == 422
        assert bad.json()["detail"].startswith("body.ids.0: Input should be less than or equal")


async def test_receivers_that_never_answer_do_not_slow_ingest(
    cloud: Cloud, http: httpx.AsyncClient, collector_factory: Callable[[list[str]], Collector]
) -> None:
    """8 webhooks to a socket that accepts and never answers: more than the event loop's
    default thread pool has workers (6 on 2 cores), which ingest hops through."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client gives up and closes

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cloud.notifier.options.timeout = 3.0
    cloud.notifier.options.max_attempts = 1
    watch = collector_factory(["fogline/+/down/ack"])
    try:
        hooks = [await hook(http, f"http://127.0.0.1:{port}/h{i}", on=["raised"]) for i in range(8)]
        write(cloud, 1, alert("hot/1", "raised"))
        await eventually(lambda: len(held) >= 4, 10, "webhook POSTs hanging")
        hops = []
        for _ in range(10):
            started = time.monotonic()
            await asyncio.to_thread(time.monotonic)
            hops.append(time.monotonic() - started)
        started = time.monotonic()
        records = [(2, "line-1/m-01", alert("hot/2", "raised"))]
        watch.publish(uplink_topic("gw1", "alert"), payload("gw1", "alert", records))
        await eventually(lambda: watch.on("fogline/gw1/down/ack"), 10, "ingest's ack")
        stored = time.monotonic() - started
        assert max(hops) < 0.5, hops
        assert stored < 0.5, stored
        assert cloud.notifier.failures == 0  # all of that while the POSTs still hung
        # They time out, and each shows its failure.

        async def failed() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = (await http.get("/api/webhooks")).json()["items"]
            return [w for w in items if w["failed"]]

        deadline = time.monotonic() + 30
        while len(shown := await failed()) < len(hooks):
            assert time.monotonic() < deadline, "every hanging webhook to show its failure"
            await _sleep()
        assert {w["last_error"] for w in shown} == {"no answer within 3 s"}
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_webhook_changes_are_audited_and_shown(
    cloud: Cloud, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    made = await hook(http, receiver.url + "/a-long-secret-path", on=["raised"])
    ana, csrf = console(cloud.engine, cloud.http_port, "ana", "admin", time.time())
    async with ana:
        removed = await ana.post(f"/notifications/{made['id']}/remove", data={"csrf": csrf})
        assert removed.status_code == 303
        with cloud.engine.connect() as conn:
            rows = conn.execute(
                select(Activity.actor, Activity.action, Activity.alert, Activity.detail)
            ).all()
        short = receiver.url[: receiver.url.index("/hook")] + "/hook/a-long…"
        assert [tuple(r) for r in rows] == [
            ("test-admin", "webhook_add", None,
             {"webhook": made["id"], "url": short, "shape": "generic", "on": ["raised"]}),
            ("ana", "webhook_remove", None, {"webhook": made["id"], "url": short}),
        ]  # fmt: skip
        page = (await ana.get("/notifications")).text
    audit = page[page.index('id="webhook-audit"') :]
    assert re.search(r"<strong>ana</strong> removed webhook #\d+ <code>", audit)
    assert re.search(r"<strong>test-admin</strong> added webhook #\d+ <code>http://127", audit)
    assert audit.index("ana") < audit.index("test-admin")  # newest first
