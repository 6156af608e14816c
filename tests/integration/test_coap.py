"""The CoAP source with real peers: aiocoap, libcoap's coap-client, and an observed device."""

from __future__ import annotations

import asyncio
import shutil

import cbor2
import orjson
import pytest
from aiocoap import GET, POST, Context, Message, resource
from support import Broker, eventually, udp_port

from gateway.app import Gateway

PIPELINE = """
name: coapy
key: [machine]
sources:
  - coap:
      bind: "127.0.0.1:{port}"
      paths: ["plant/{{machine}}/telemetry"]
      observe: [{observe}]
      max_payload: 2KiB
steps:
  - validate:
      fields: {{temperature: {{type: number, min: -40, max: 250}}}}
  - alert:
      rules: [{{name: hot, raise: temperature > 90, clear: temperature < 80, severity: critical}}]
outputs:
  - action: {{from: alert, topic: "plant/{{machine}}/actions", payload: {{command: stop}}}}
"""


@pytest.fixture
async def coap_gateway(broker: Broker, gateway_options):
    port = udp_port()
    async with Gateway(gateway_options(PIPELINE.format(port=port, observe=""))) as gw:
        gw.coap_port = port
        yield gw


@pytest.fixture
async def client():
    context = await Context.create_client_context()
    yield context
    await context.shutdown()


async def post(
    client: Context, port: int, path: str, payload: bytes, fmt: int | None = 50
) -> Message:
    msg = Message(
        code=POST, uri=f"coap://127.0.0.1:{port}/{path}", payload=payload, content_format=fmt
    )
    return await asyncio.wait_for(client.request(msg).response, 10)


async def test_json_post_reaches_the_pipeline(coap_gateway, client, collector_factory) -> None:
    watch = collector_factory(["plant/+/actions"])
    reply = await post(
        client, coap_gateway.coap_port, "plant/c1/telemetry", b'{"temperature": 97.5}'
    )
    assert str(reply.code) == "2.04 Changed"
    await eventually(lambda: watch.on("plant/c1/actions"), what="the action for a CoAP reading")
    assert coap_gateway.metrics.messages_in["coap"] == 1


async def test_senml_cbor_and_senml_json(coap_gateway, client) -> None:
    pack = cbor2.dumps([{-2: "urn:dev:c2:", 0: "temperature", 2: 20.5}])
    reply = await post(client, coap_gateway.coap_port, "plant/c2/telemetry", pack, fmt=112)
    assert str(reply.code) == "2.04 Changed"
    senml = orjson.dumps([{"n": "temperature", "v": 21.0}])
    reply = await post(client, coap_gateway.coap_port, "plant/c3/telemetry", senml, fmt=110)
    assert str(reply.code) == "2.04 Changed"
    await eventually(lambda: coap_gateway.metrics.step_in["validate"] == 2, what="both readings")
    assert coap_gateway.metrics.total_rejects() == 0


async def test_bad_requests_get_a_reason_and_the_source_keeps_serving(coap_gateway, client) -> None:
    port = coap_gateway.coap_port
    reply = await post(client, port, "plant/c4/telemetry", b"{oops")
    assert str(reply.code) == "4.00 Bad Request"
    assert reply.payload.decode().startswith("malformed_json: ")
    # Validation runs in the pipeline after the reply: the transport took it, the step rejects it.
    reply = await post(client, port, "plant/c4/telemetry", b'{"temperature": "hot"}')
    assert str(reply.code) == "2.04 Changed"
    reply = await post(client, port, "plant/c4/telemetry", b"x", fmt=0)
    assert str(reply.code) == "4.15 Unsupported Content Format"
    reply = await post(client, port, "nowhere", b"{}")
    assert str(reply.code) == "4.04 Not Found"
    reply = await post(client, port, "plant/c4/telemetry", b'{"pad": "' + b"x" * 3000 + b'"}')
    assert str(reply.code) == "4.13 Request Entity Too Large"  # arrived block-wise, then refused
    reply = await post(client, port, "plant/c4/telemetry", b'[{"temperature": 20}, 7]')
    assert str(reply.code) == "2.04 Changed"
    assert (
        reply.payload.decode()
        == "1 accepted, 1 rejected: not_an_object: expected a JSON object, got a number"
    )
    reply = await post(client, port, "plant/c4/telemetry", b'{"temperature": 21}')
    assert str(reply.code) == "2.04 Changed"
    reasons = {reason for (_, reason) in coap_gateway.metrics.rejects}
    assert {
        "malformed_json",
        "unsupported_format",
        "unknown_topic",
        "too_large",
        "not_an_object",
    } <= reasons


COAP_CLIENT = next(
    (c for c in ("coap-client", "coap-client-notls", "coap-client-openssl") if shutil.which(c)),
    None,
)


async def test_libcoap_client(coap_gateway, collector_factory) -> None:
    assert COAP_CLIENT, (
        "libcoap's coap-client is missing: apt-get install libcoap3-bin (make test does)"
    )
    watch = collector_factory(["plant/+/actions"])
    proc = await asyncio.create_subprocess_exec(
        COAP_CLIENT,
        "-m",
        "post",
        "-t",
        "50",
        "-e",
        '{"temperature": 99}',
        f"coap://127.0.0.1:{coap_gateway.coap_port}/plant/lib/telemetry",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    await eventually(lambda: watch.on("plant/lib/actions"), what="an action for libcoap's POST")


class Thermometer(resource.ObservableResource):
    """A device that serves its reading and notifies observers when it changes."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = 20.0

    def set(self, value: float) -> None:
        self.temperature = value
        self.updated_state()

    async def render_get(self, request: Message) -> Message:
        return Message(payload=orjson.dumps({"temperature": self.temperature}), content_format=50)


async def test_observe_a_device(broker: Broker, gateway_options, collector_factory) -> None:
    device_port, port = udp_port(), udp_port()
    site = resource.Site()
    thermo = Thermometer()
    site.add_resource(["plant", "obs", "telemetry"], thermo)
    device = await Context.create_server_context(site, bind=("127.0.0.1", device_port))
    watch = collector_factory(["plant/+/actions"])
    uri = f'"coap://127.0.0.1:{device_port}/plant/obs/telemetry"'
    try:
        async with Gateway(gateway_options(PIPELINE.format(port=port, observe=uri))) as gw:
            await eventually(
                lambda: gw.metrics.step_in["validate"] >= 1, what="the first observation"
            )
            thermo.set(96.0)
            await eventually(
                lambda: watch.on("plant/obs/actions"), what="an action from a notification"
            )
    finally:
        await device.shutdown()


async def test_get_is_not_allowed(coap_gateway, client) -> None:
    msg = Message(code=GET, uri=f"coap://127.0.0.1:{coap_gateway.coap_port}/plant/x/telemetry")
    reply = await asyncio.wait_for(client.request(msg).response, 10)
    assert str(reply.code) == "4.05 Method Not Allowed"


async def test_a_bignum_timestamp_is_a_counted_4_00_not_a_5_00(coap_gateway, client) -> None:
    """Issue 9: a CBOR bignum timestamp escaped the decoder as a 5.00 with a traceback."""
    port = coap_gateway.coap_port
    pack = cbor2.dumps([{0: "temperature", 2: 20.5, 6: 10**40}])
    reply = await post(client, port, "plant/c5/telemetry", pack, fmt=112)
    assert str(reply.code) == "4.00 Bad Request"
    assert reply.payload.decode() == (
        "unsupported_cbor: $[0].6: a bignum (133 bits) is not supported"
    )
    tagged = cbor2.dumps({"temperature": cbor2.CBORTag(4, [-2, 10**9])})
    reply = await post(client, port, "plant/c5/telemetry", tagged, fmt=60)
    assert str(reply.code) == "4.00 Bad Request"
    assert reply.payload.decode() == "unsupported_cbor: $.temperature: Decimal is not supported"
    long_id = "m" * 300
    reply = await post(client, port, f"plant/{long_id}/telemetry", b'{"temperature": 20}')
    assert str(reply.code) == "4.00 Bad Request"
    assert reply.payload.decode().startswith("topic_too_long: ")
    reply = await post(client, port, "plant/c5/telemetry", b'{"temperature": 21}')
    assert str(reply.code) == "2.04 Changed"  # and the source keeps serving
    assert coap_gateway.metrics.rejects[("source", "unsupported_cbor")] == 2
    assert coap_gateway.metrics.rejects[("source", "topic_too_long")] == 1


async def test_a_reading_is_answered_only_once_committed(coap_gateway, client) -> None:
    """Issue 11: 2.04 means the reading's effect is durable (here: the alert it raised)."""
    db = coap_gateway.outbox._db
    reply = await post(
        client, coap_gateway.coap_port, "plant/c7/telemetry", b'{"temperature": 97.5}'
    )
    assert str(reply.code) == "2.04 Changed"
    # At the answer, the alert state the reading raised is in the committed state table.
    parts = [p for (p,) in db.execute("SELECT part FROM state WHERE step = 'alert'")]
    assert '["hot","c7"]' in parts
    # When no commit can be made (the store turned read-only), the device hears "not stored
    # yet, send again" instead of a 2.04 that would be a lie.
    db.execute("PRAGMA query_only = ON")
    coap_gateway.coap.answers_wait = 0.5
    reply = await post(
        client, coap_gateway.coap_port, "plant/c8/telemetry", b'{"temperature": 99.5}'
    )
    assert str(reply.code) == "5.03 Service Unavailable"
    assert reply.opt.max_age == 5
    assert coap_gateway.metrics.uplink["commit_failures"] >= 1
    db.execute("PRAGMA query_only = OFF")
