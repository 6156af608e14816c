"""The CoAP transport against a real aiocoap server, and into the real gateway's CoAP source."""

from __future__ import annotations

import asyncio

import aiocoap
import cbor2
import orjson
import pytest
from aiocoap import resource
from device_helpers import ROOT, WALL0, coap_port
from support import Broker, eventually

from devices import Codec, FakeClock, FarmConfig, FarmFleet, Runner, SimClock, SystemClock
from devices.transport import CoapTransport
from gateway.app import Gateway


class Recorder(resource.Resource, resource.PathCapable):
    """Every POST, whatever its path; plot-3 is refused, to see refusals counted."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[str, int, str, bytes]] = []

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        path = "/".join(request.opt.uri_path)
        self.posts.append(
            (path, int(request.opt.content_format), str(request.mtype), request.payload)
        )
        if "plot-3" in path:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=b"no")
        return aiocoap.Message(code=aiocoap.CHANGED)


@pytest.fixture
async def server():
    port = coap_port()
    recorder = Recorder()
    context = await aiocoap.Context.create_server_context(recorder, bind=("127.0.0.1", port))
    recorder.url = f"coap://127.0.0.1:{port}"
    yield recorder
    await context.shutdown()


async def run_farm(url: str, fmt: str, *, confirmable: bool) -> tuple[int, int]:
    clock = FakeClock(WALL0)
    fleet = FarmFleet(FarmConfig(3), 1, SimClock(clock.time()))
    codec = Codec(fmt, fleet.UNITS, fleet.base_names())
    async with CoapTransport(url, codec.content_format, confirmable=confirmable) as transport:
        runner = Runner(fleet, transport, codec, rate=1.0, duration=3.0, clock=clock)
        stats = await runner.run(asyncio.Event())
        if not confirmable:
            await asyncio.sleep(0.2)  # let the replies come back before the context closes
    return stats.sent, transport.failed


async def test_confirmable_senml_posts_to_the_topic_path(server: Recorder) -> None:
    sent, failed = await run_farm(server.url, "senml", confirmable=True)
    assert len(server.posts) == 9
    assert sent == 6
    assert failed == 3
    paths = sorted({p[0] for p in server.posts})
    assert paths == [f"farm/north/plot-{i}/telemetry" for i in (1, 2, 3)]
    assert {(p[1], p[2]) for p in server.posts} == {(110, "CON")}
    pack = orjson.loads(min(server.posts)[3])
    assert [r["n"] for r in pack] == ["moisture", "valve", "flow", "pressure", "battery"]
    assert pack[0]["bn"] == "urn:dev:plot-1:"
    assert pack[0]["bt"] == WALL0


async def test_non_confirmable_json_and_senml_cbor(server: Recorder) -> None:
    await run_farm(server.url, "json", confirmable=False)
    assert {(p[1], p[2]) for p in server.posts} == {(50, "NON")}
    assert set(orjson.loads(server.posts[0][3])) == {
        "ts",
        "moisture",
        "valve",
        "flow",
        "pressure",
        "battery",
    }
    server.posts.clear()
    await run_farm(server.url + "/", "senml-cbor", confirmable=True)
    assert len(server.posts) == 9
    assert server.posts[0][1] == 112
    pack = cbor2.loads(min(server.posts)[3])
    assert pack[0][-2] == "urn:dev:plot-1:"
    assert pack[0][0] == "moisture"


def test_bad_coap_urls_are_refused_with_an_example() -> None:
    with pytest.raises(
        ValueError, match=r"expected a CoAP URL like coap://127.0.0.1:5683, got 'http://x'"
    ):
        CoapTransport("http://x", 50)


async def test_the_gateways_coap_source_takes_the_farm_readings(
    broker: Broker, gateway_options
) -> None:
    port = coap_port()
    text = (
        (ROOT / "pipelines" / "farm.yaml")
        .read_text()
        .replace("127.0.0.1:5683", f"127.0.0.1:{port}")
    )
    path = str(ROOT / "pipelines" / "farm.yaml")
    async with Gateway(gateway_options(text, "farm1", file=path)) as gw:
        for fmt in ("senml", "senml-cbor", "json"):
            fleet = FarmFleet(FarmConfig(4), 1, SimClock(SystemClock().time()))
            codec = Codec(fmt, fleet.UNITS, fleet.base_names())
            async with CoapTransport(f"coap://127.0.0.1:{port}", codec.content_format) as transport:
                sent = await transport.send([(t, codec.encode(t, p)) for t, p in fleet.step(0.0)])
            assert sent == 4
            assert transport.failed == 0
        await eventually(lambda: gw.metrics.step_in["readings"] == 12, what="12 readings in")
        assert gw.metrics.total_rejects() == 0
