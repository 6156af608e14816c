"""The CoAP source: readings POSTed by constrained devices, or observed on them.

Each POST is decoded at once, so the reply can say what happened: 2.04 Changed when every
reading was taken, 4.00 Bad Request with the reason when none was (a partly good pack is
2.04 with the rejects in the diagnostic payload, so a client retry never duplicates the
good ones), 4.15 for a content format we do not read, 4.13 for an oversized payload, 4.04
for a path no pattern matches. Block-wise transfers are reassembled by aiocoap. Records wait
in a list for the pipeline task, like the MQTT intake.

A 2.04 is sent only once the request's records are committed with the operator state they
changed (gateway/delivery.py), like a QoS 1 PUBACK: a device whose request the gateway did
not answer sends it again. If no commit comes within `COMMIT_WAIT` (a full disk), the answer
is 5.03 with Max-Age; during shutdown new requests get 5.03 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Self

import cbor2
import orjson
from aiocoap import Code, Context, Message, resource

from gateway.decode import Decoder, RejectRaw, TopicPatterns, cbor_problem, senml_from_cbor
from gateway.delivery import Delivery
from gateway.metrics import Metrics
from gateway.record import Record
from gateway.spec import CoapSourceConfig

log = logging.getLogger("fogline.gateway.coap")

SOURCE_NAME = "coap"
JSON, CBOR, SENML_JSON, SENML_CBOR = 50, 60, 110, 112
READABLE = {None: "auto", JSON: None, SENML_JSON: "senml", CBOR: None, SENML_CBOR: "senml"}
COMMIT_WAIT = 10.0  # seconds a request waits for the commit that holds its readings
RETRY_AFTER = 5  # Max-Age of a 5.03


class _Endpoint(resource.Resource, resource.PathCapable):
    """The root of one bound address: every path is ours to match against the patterns."""

    def __init__(self, source: CoapSource, config: CoapSourceConfig, decoder: Decoder) -> None:
        super().__init__()
        self._source = source
        self.config = config
        self.decoder = decoder
        self.patterns = TopicPatterns(config.paths)

    async def render_post(self, request: Message) -> Message:
        source = self._source
        if source.closing:
            return _unavailable("the gateway is stopping; send again")
        path = "/".join(request.opt.uri_path)
        payload: bytes = request.payload
        before = source.depth
        reply = source.take_message(self, path, payload, request.opt.content_format)
        if source.depth == before or source.delivery is None:
            return reply
        committed = asyncio.get_running_loop().create_future()
        source.answers.append(committed)
        try:
            await asyncio.wait_for(asyncio.shield(committed), source.answers_wait)
        except TimeoutError:
            return _unavailable("the readings could not be stored yet; send again")
        return reply

    async def render_put(self, request: Message) -> Message:
        return await self.render_post(request)


class CoapSource:
    def __init__(
        self,
        configs: list[CoapSourceConfig],
        key: tuple[str, ...],
        reject: RejectRaw,
        metrics: Metrics,
        now: Callable[[], float],
        ready: asyncio.Event,
    ) -> None:
        self._configs = configs
        self._key = key
        self._reject = reject
        self._metrics = metrics
        self._now = now
        self.ready = ready
        self._records: list[Record] = []
        self._first_at = 0.0  # when the first of `_records` arrived
        self._rejected: list[tuple[str, str]] = []
        self._contexts: list[Context] = []
        self._observers: list[asyncio.Task[None]] = []
        self._client: Context | None = None
        self.closing = False
        self.delivery: Delivery | None = None
        self.answers: list[asyncio.Future[None]] = []  # requests waiting for a commit
        self.answers_wait = COMMIT_WAIT
        self.endpoints = [
            _Endpoint(
                self,
                cfg,
                Decoder(
                    TopicPatterns(cfg.paths),
                    key,
                    self._on_reject,
                    fmt=cfg.format,
                    timestamp=cfg.timestamp,
                    max_payload=cfg.max_payload,
                    max_clock_skew=cfg.max_clock_skew,
                    max_topic_length=cfg.max_topic_length,
                    max_key_length=cfg.max_key_length,
                ),
            )
            for cfg in configs
        ]

    async def __aenter__(self) -> Self:
        for endpoint, cfg in zip(self.endpoints, self._configs, strict=True):
            host, _, port = cfg.bind.rpartition(":")
            context = await Context.create_server_context(
                endpoint, bind=(host.strip("[]"), int(port))
            )
            self._contexts.append(context)
            log.info("coap: serving on %s for %s", cfg.bind, ", ".join(cfg.paths))
        uris = [
            (uri, ep)
            for ep, cfg in zip(self.endpoints, self._configs, strict=True)
            for uri in cfg.observe
        ]
        if uris:
            self._client = await Context.create_client_context()
            for uri, endpoint in uris:
                self._observers.append(
                    asyncio.create_task(self._observe(uri, endpoint), name=f"coap.observe[{uri}]")
                )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._observers:
            task.cancel()
        for task in self._observers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for context in [*self._contexts, *([self._client] if self._client else [])]:
            await context.shutdown()

    # -- intake ---------------------------------------------------------------------------

    def _on_reject(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        self._rejected.append((reason, detail))
        self._reject(topic, payload, reason, detail)

    def take_message(
        self, endpoint: _Endpoint, path: str, payload: bytes, content_format: Any
    ) -> Message:
        """Decode one POST (or notification) now, and say how it went."""
        self._metrics.messages_in[SOURCE_NAME] += 1
        self._metrics.bytes_in[SOURCE_NAME] += len(payload)
        fmt_number = None if content_format is None else int(content_format)
        if fmt_number not in READABLE:
            self._reject(path, payload, "unsupported_format", f"content format {fmt_number}")
            return _reply(
                Code.UNSUPPORTED_CONTENT_FORMAT, "send application/json, senml+json or senml+cbor"
            )
        if endpoint.decoder.topic_too_long(path, payload):
            return _reply(Code.BAD_REQUEST, "topic_too_long: path over max_topic_length")
        segments = endpoint.patterns.match(path)
        if segments is None:
            self._reject(path, payload, "unknown_topic", "no source pattern matches this path")
            return _reply(Code.NOT_FOUND, f"no pipeline path matches /{path}")
        if len(payload) > endpoint.config.max_payload:
            self._reject(path, payload, "too_large", f"{len(payload)} bytes")
            return _reply(Code.REQUEST_ENTITY_TOO_LARGE, "payload over max_payload")
        decoder = endpoint.decoder
        self._rejected.clear()
        before = len(self._records)
        now = self._now()
        if not before:
            self._first_at = now
        if fmt_number in {CBOR, SENML_CBOR}:
            try:
                data = cbor2.loads(payload)
            except Exception as exc:
                self._on_reject(path, payload, "malformed_cbor", str(exc))
                return _reply(Code.BAD_REQUEST, f"malformed_cbor: {exc}")
            if problem := cbor_problem(data):
                self._on_reject(path, payload, "unsupported_cbor", problem)
                return _reply(Code.BAD_REQUEST, f"unsupported_cbor: {problem}")
            if fmt_number == SENML_CBOR:
                data = senml_from_cbor(data)
            decoder.decode_data(
                path, payload, data, segments, now, self._records, READABLE[fmt_number]
            )
        elif fmt_number == SENML_JSON:
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                self._on_reject(path, payload, "malformed_json", str(exc))
                return _reply(Code.BAD_REQUEST, f"malformed_json: {exc}")
            decoder.decode_data(path, payload, data, segments, now, self._records, "senml")
        else:
            decoder.decode(path, payload, now, self._records)
        accepted = len(self._records) - before
        if accepted:
            self.ready.set()
        if not self._rejected:
            return _reply(Code.CHANGED, "")
        text = "; ".join(f"{reason}: {detail}" for reason, detail in self._rejected[:5])
        if accepted:
            return _reply(
                Code.CHANGED, f"{accepted} accepted, {len(self._rejected)} rejected: {text}"
            )
        return _reply(Code.BAD_REQUEST, text)

    def take(self, max_messages: int = 4096) -> list[Record]:
        records, self._records = self._records, []
        if self.answers and self.delivery is not None:
            self.delivery.answer_after_commit(self.answers)
            self.answers = []
        return records

    @property
    def depth(self) -> int:
        return len(self._records)

    def oldest(self) -> float | None:
        """When the oldest record waiting arrived (the clock's time); None when none is."""
        return self._first_at if self._records else None

    # -- observe client -------------------------------------------------------------------

    async def _observe(self, uri: str, endpoint: _Endpoint) -> None:
        """Follow one observable resource; re-register after errors, with a pause."""
        assert self._client is not None  # noqa: S101
        path = uri.split("://", 1)[-1].partition("/")[2]
        while True:
            try:
                request = Message(code=Code.GET, uri=uri, observe=0)
                req = self._client.request(request)
                first = await req.response
                self.take_message(endpoint, path, first.payload, first.opt.content_format)
                async for note in req.observation:
                    self.take_message(endpoint, path, note.payload, note.opt.content_format)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("coap: observing %s failed (%s); retrying in 5s", uri, exc)
            await asyncio.sleep(5)


def _unavailable(text: str) -> Message:
    reply = _reply(Code.SERVICE_UNAVAILABLE, text)
    reply.opt.max_age = RETRY_AFTER
    return reply


def _reply(code: Code, text: str) -> Message:
    return Message(code=code, payload=text.encode(), content_format=0 if text else None)
