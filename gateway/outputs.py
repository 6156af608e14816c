"""Outputs: `action` publishes on the edge broker now; `uplink` hands records to the cloud path."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.expr import ExprLimitError, compile_expr
from gateway.metrics import Metrics
from gateway.record import Record
from gateway.spec import ActionOutputConfig, UplinkOutputConfig
from gateway.template import Template, compile_template
from gateway.uplink import UplinkSink

Publish = Callable[[str, bytes, int, bool], bool]


def record_body(record: Record) -> dict[str, Any]:
    body = dict(record.fields)
    body.setdefault("ts", record.ts)
    return body


class UplinkOutput:
    def __init__(self, config: UplinkOutputConfig, sink: UplinkSink) -> None:
        self.kind = config.kind
        self._sink = sink

    def emit(self, records: list[Record]) -> None:
        self._sink.send(self.kind, [("/".join(r.key), record_body(r)) for r in records])


class ActionOutput:
    """Local decisions: one publish per matching record, without waiting for anything.

    `since()` is when the oldest reading of the micro-batch being processed was read off the
    socket (None outside one: a timer's action has no reading behind it); each publish
    observes the time since then as `action_latency`: an upper bound of its own reading's
    time in the process, but not of the time it waited in the socket while the event loop
    was busy."""

    def __init__(
        self,
        config: ActionOutputConfig,
        publish: Publish,
        metrics: Metrics,
        label: str,
        since: Callable[[], float | None] = lambda: None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._when = compile_expr(config.when).fn if config.when else None
        self._topic = compile_template(config.topic)
        self._payload = _compile_payload(config.payload) if config.payload else None
        self._qos = config.qos
        self._retain = config.retain
        self._publish = publish
        self._metrics = metrics
        self._label = label
        self._since = since
        self._now = now

    def emit(self, records: list[Record]) -> None:
        since = self._since()
        for record in records:
            fields = record.fields
            try:
                if self._when is not None and not self._when(fields):
                    continue
                topic = self._topic.render(fields)
                body = (
                    _render(self._payload, fields)
                    if self._payload is not None
                    else record_body(record)
                )
            except ExprLimitError:
                self._metrics.rejects[(self._label, "expression_limit")] += 1
                continue
            except Exception:
                # A record lacking a templated field: counted, the rest goes on.
                self._metrics.rejects[(self._label, "action_error")] += 1
                continue
            if self._publish(topic, orjson.dumps(body), self._qos, self._retain):
                self._metrics.outputs["action"] += 1
                if since is not None:
                    self._metrics.action_latency.observe(self._now() - since)
            else:
                self._metrics.outputs["action_not_connected"] += 1


def _compile_payload(value: Any) -> Any:
    if isinstance(value, str):
        return compile_template(value)
    if isinstance(value, dict):
        return {k: _compile_payload(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_payload(v) for v in value]
    return value


def _render(value: Any, fields: dict[str, Any]) -> Any:
    if isinstance(value, Template):
        # A lone `{field}` keeps the field's own type (a number stays a number).
        if (
            len(value.parts) == 1
            and value.parts[0][0] == ""
            and value.parts[0][1]
            and not value.parts[0][2]
        ):
            return fields[value.parts[0][1]]
        return value.render(fields)
    if isinstance(value, dict):
        return {k: _render(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, fields) for v in value]
    return value
