"""`alert`: turn conditions into alert events, with hysteresis, duration and cooldown.

```yaml
- alert:
    rules:
      - name: over_temperature
        raise: temperature_max > 85    # raise when this holds ...
        for: 20s                       # ... continuously for 20 s of event time
        for_readings: 3                # ... and on 3 records in a row (both must hold)
        clear: temperature_max < 80    # clear only below 80 (hysteresis); default: not raise
        cooldown: 5m                   # after a clear, no new raise for this key within 5 min
        severity: critical
        message: "{machine} at {temperature_max:.1f} °C"
        clear_message: "{machine} back to {temperature_max:.1f} °C"
```

The output stream carries only transitions: one `raised` and one `cleared` event per
episode, each with the key fields, `rule`, `severity`, `state`, `alert_id` (the same for
both events of an episode), `raised_at`, `cleared_at`, `message` and `values` (the fields
the rule reads, as they were). A clear never repeats the raise's `message` (which may say
"stopping"): it takes `clear_message`, or says `<rule> cleared for <key>`.

`raised_ids` lists the episodes it holds raised; the gateway's health record carries them
(`raised_alerts`), so the cloud can close an episode the gateway no longer holds, e.g. one
lost with a restart (issue 11).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fogline.units import Duration
from gateway.expr import compile_expr, reject_reason
from gateway.keyed import Evicted, KeyedState
from gateway.operators.base import (
    Expression,
    FieldName,
    Fields,
    KeyedConfig,
    Operator,
    RelPath,
    StepContext,
)
from gateway.record import Record
from gateway.state import StateDelta, keyed_delta, merge, part_key
from gateway.template import TemplateError, compile_template

# Alert ids a health record lists at most: about 40 bytes each, so at most ~20 kB; past
# this the list says `complete: false` and the cloud closes nothing by it.
MAX_REPORTED_ALERTS = 500

EVENT_FIELDS = (
    "rule", "severity", "state", "alert_id", "raised_at", "cleared_at", "message", "values",
)  # fmt: skip


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: FieldName = Field(description="Rule name, carried by its events.")
    raise_: Expression = Field(alias="raise", description="Condition that raises the alert.")
    clear: Expression | None = Field(
        None, description="Condition that clears it; defaults to `not (raise)`."
    )
    for_: Duration = Field(
        0.0, alias="for", description="How long `raise` must hold (event time) before raising."
    )
    for_readings: int = Field(
        1,
        ge=1,
        le=10_000,
        description="On how many records in a row `raise` must hold before raising: a "
        "debounce that means the same at any sampling rate (with `for`, both must hold).",
    )
    cooldown: Duration = Field(
        0.0, description="After a clear, how long before the same key may raise again."
    )
    severity: Literal["info", "warning", "critical"] = Field("warning", description="Severity.")
    message: str | None = Field(None, description="Text of the raise, with `{field}` placeholders.")
    clear_message: str | None = Field(
        None,
        description="Text of the clear, with `{field}` placeholders; default "
        "`<rule> cleared for <key>` (never the raise's text).",
    )

    @field_validator("message", "clear_message")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_template(value)
            except TemplateError as exc:
                raise ValueError(str(exc)) from exc
        return value

    def reads(self) -> frozenset[str]:
        fields = compile_expr(self.raise_).fields
        if self.clear is not None:
            fields |= compile_expr(self.clear).fields
        return fields


class AlertConfig(KeyedConfig):
    rules: list[Rule] = Field(
        description="Alert rules, each evaluated on every record.", min_length=1
    )

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        refs: list[tuple[RelPath, frozenset[str]]] = []
        for i, rule in enumerate(self.rules):
            refs.append((("rules", i, "raise"), compile_expr(rule.raise_).fields))
            if rule.clear is not None:
                refs.append((("rules", i, "clear"), compile_expr(rule.clear).fields))
            for name in ("message", "clear_message"):
                text = getattr(rule, name)
                if text is not None:
                    refs.append((("rules", i, name), compile_template(text).fields))
        return refs

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        return Fields(frozenset(key) | frozenset(EVENT_FIELDS))


class _Episode:
    """Per rule and key: where the alert stands."""

    __slots__ = ("alert_id", "cooldown_until", "pending", "pending_since", "raised_at")

    def __init__(self) -> None:
        self.pending_since: float | None = None
        self.pending = 0  # records in a row `raise` has held on
        self.raised_at: float | None = None
        self.alert_id = ""
        self.cooldown_until = float("-inf")


def _is_raised(episode: _Episode) -> bool:
    return episode.raised_at is not None


class _CompiledRule:
    __slots__ = (
        "clear",
        "clear_message",
        "cooldown",
        "duration",
        "episodes",
        "for_readings",
        "message",
        "name",
        "raise_",
        "reads",
        "severity",
    )

    def __init__(self, rule: Rule, config: AlertConfig, evicted: Evicted) -> None:
        self.name = rule.name
        self.severity = rule.severity
        self.raise_ = compile_expr(rule.raise_).fn
        clear = compile_expr(rule.clear).fn if rule.clear is not None else None
        self.clear = clear
        self.duration = rule.for_
        self.for_readings = rule.for_readings
        self.cooldown = rule.cooldown
        self.message = compile_template(rule.message) if rule.message else None
        self.clear_message = compile_template(rule.clear_message) if rule.clear_message else None
        self.reads = sorted(rule.reads())
        # A raised episode outlives silence (its clear must still come); the cap still applies.
        self.episodes: KeyedState[_Episode] = KeyedState(
            config.max_keys, config.idle_expiry, evicted, keep=_is_raised
        )


class Alert(Operator):
    name = "alert"
    Config = AlertConfig

    def __init__(self, config: AlertConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._rules = [_CompiledRule(rule, config, ctx.evicted) for rule in config.rules]
        self.suppressed = 0  # raises swallowed by a cooldown

    def process(self, batch: list[Record]) -> list[Record]:
        out: list[Record] = []
        now = self.ctx.clock.now()
        for record in batch:
            for rule in self._rules:
                try:
                    event = self._step(rule, record, now)
                except Exception as exc:
                    self.ctx.reject(
                        record, reject_reason(exc), f"rule {rule.name}: {type(exc).__name__}: {exc}"
                    )
                    continue
                if event is not None:
                    out.append(event)
        return out

    def _step(self, rule: _CompiledRule, record: Record, now: float) -> Record | None:
        episodes = rule.episodes
        episode = episodes.get(record.key, now, changes=False)
        if episode is None:
            episode = _Episode()
            episodes.put(record.key, episode, now)
        fields, ts = record.fields, record.ts
        if episode.raised_at is not None:
            cleared = rule.clear(fields) if rule.clear is not None else not rule.raise_(fields)
            if not cleared:
                return None
            event = self._event(rule, record, episode, "cleared")
            episode.raised_at = None
            episode.cooldown_until = ts + rule.cooldown
            episodes.changed(record.key)
            return event
        if not rule.raise_(fields):
            if episode.pending_since is not None:
                episode.pending_since = None
                episode.pending = 0
                episodes.changed(record.key)
            return None
        if episode.pending_since is None:
            episode.pending_since = ts
            episodes.changed(record.key)
        if rule.for_readings > 1:
            episode.pending += 1
            episodes.changed(record.key)
            if episode.pending < rule.for_readings:
                return None
        if ts - episode.pending_since < rule.duration:
            return None
        if ts < episode.cooldown_until:
            self.suppressed += 1
            return None
        episode.pending_since = None
        episode.pending = 0
        episode.raised_at = ts
        episode.alert_id = f"{rule.name}/{'/'.join(record.key)}/{round(ts * 1000)}"
        episodes.changed(record.key)
        return self._event(rule, record, episode, "raised")

    def _event(self, rule: _CompiledRule, record: Record, episode: _Episode, state: str) -> Record:
        fields = record.fields
        event: dict[str, Any] = dict(zip(self.ctx.key_fields, record.key, strict=True))
        event.update(
            rule=rule.name,
            severity=rule.severity,
            state=state,
            alert_id=episode.alert_id,
            raised_at=episode.raised_at,
            cleared_at=record.ts if state == "cleared" else None,
            values={name: fields.get(name) for name in rule.reads},
        )
        message = None
        template = rule.message if state == "raised" else rule.clear_message
        if template is not None:
            try:
                message = template.render({**fields, **event})
            except KeyError as exc:
                message = f"{rule.name} {state} (message template failed: no field {exc})"
            except Exception as exc:  # e.g. a null field with a format spec
                message = f"{rule.name} {state} (message template failed: {exc})"
        event["message"] = message or f"{rule.name} {state} for {'/'.join(record.key)}"
        return Record(record.key, record.ts, event)

    def on_timer(self, now: float) -> list[Record]:
        for rule in self._rules:
            rule.episodes.expire(now)
        return []

    def open_state(self) -> int:
        return sum(1 for r in self._rules for e in r.episodes.values() if e.raised_at is not None)

    def raised_ids(self, limit: int) -> tuple[list[str], bool]:
        """The `alert_id`s of the episodes held raised, at most `limit`; True if all listed."""
        ids: list[str] = []
        for rule in self._rules:
            for episode in rule.episodes.values():
                if episode.raised_at is not None:
                    if len(ids) == limit:
                        return ids, False
                    ids.append(episode.alert_id)
        return ids, True

    def checkpoint(self) -> StateDelta:
        """One part per rule and key: a restart neither raises a standing alert again nor
        forgets one it must clear, and its `for:` and cooldown clocks go on."""
        return merge(keyed_delta(r.episodes, _encode, (r.name,)) for r in self._rules)

    def restore(self, parts: dict[str, bytes], now: float) -> None:
        rules = {rule.name: rule for rule in self._rules}
        for part, data in parts.items():
            name, *key = part_key(part)
            rule = rules.get(name)
            if rule is not None:
                rule.episodes.restore(tuple(key), _decode(data), now)


def _encode(episode: _Episode) -> bytes:
    cooldown = episode.cooldown_until
    return orjson.dumps(
        [
            episode.pending_since,
            episode.raised_at,
            episode.alert_id,
            None if cooldown == float("-inf") else cooldown,
            episode.pending,
        ]
    )


def _decode(data: bytes) -> _Episode:
    # Parts written before `for_readings` have four items: no records in a row counted.
    pending, raised, alert_id, cooldown, *count = orjson.loads(data)
    episode = _Episode()
    episode.pending = count[0] if count else 0
    episode.pending_since, episode.raised_at, episode.alert_id = pending, raised, alert_id
    episode.cooldown_until = float("-inf") if cooldown is None else cooldown
    return episode


def raised_alerts(operators: Iterable[Alert], limit: int = MAX_REPORTED_ALERTS) -> dict[str, Any]:
    """What a health record says of the alerts held raised: `{"ids": [...], "complete": b}`.

    `complete` is False when the list was cut at `limit`; the cloud then closes nothing.
    """
    ids: list[str] = []
    complete = True
    for op in operators:
        some, complete = op.raised_ids(limit - len(ids))
        ids += some
        if not complete:
            break
    return {"ids": ids, "complete": complete}
