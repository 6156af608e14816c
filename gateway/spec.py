"""The pipeline file: declared models, parsing with located errors, static checks.

A pipeline is sources -> steps -> outputs. Each step, source and output is a single-key
mapping named after its registered type (`- window: {...}`). Steps read the stream of the
step above unless they say `from:`; outputs tap any stream by id. Parsing collects every
problem at once, each located as `file:line:col path: expected X, got Y`.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fogline.units import ByteSize, Duration
from fogline.yamldoc import Document, Path, Problem, Substitution, YamlDocumentError, load
from gateway.expr import compile_expr
from gateway.operators import REGISTRY
from gateway.operators.base import Expression, FieldName, Fields, OpConfig, RelPath
from gateway.template import TemplateError, compile_template

SOURCE = "source"


def _template(value: str) -> str:
    try:
        compile_template(value)
    except TemplateError as exc:
        raise ValueError(str(exc)) from exc
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# -- sources -----------------------------------------------------------------------------

_SEGMENT = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _check_patterns(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        levels = pattern.split("/")
        for i, level in enumerate(levels):
            bad_hash = level == "#" and i != len(levels) - 1
            if bad_hash or (
                level not in {"+", "#"}
                and any(c in level for c in "+#{}")
                and not _SEGMENT.match(level)
            ):
                raise ValueError(
                    f"expected a pattern like 'factory/{{line}}/{{machine}}/telemetry', "
                    f"got {pattern!r} (level {i + 1}: {level!r})"
                )
    return patterns


def _segment_fields(patterns: list[str]) -> set[str]:
    return {m.group(1) for p in patterns for lv in p.split("/") if (m := _SEGMENT.match(lv))}


class MqttSourceConfig(_Model):
    """Readings from MQTT topics on the edge broker."""

    topics: list[str] = Field(
        description="Topic patterns; a `{name}` segment matches one level and becomes field "
        "`name` (e.g. `factory/{line}/{machine}/telemetry`); `+` and `#` also work.",
        min_length=1,
    )
    qos: Literal[0, 1, 2] = Field(
        1, description="Subscription QoS; 1 with a persistent session loses nothing at the broker."
    )
    format: Literal["auto", "json", "senml"] = Field(
        "auto",
        description="Payload: one JSON object, a JSON array of readings, or SenML (RFC 8428) JSON; "
        "`auto` tells them apart.",
    )
    timestamp: FieldName | None = Field(
        "ts",
        description="Field with the reading's time (epoch seconds or milliseconds); when absent "
        "the arrival time is used.",
    )
    max_payload: ByteSize = Field(65536, description="Larger payloads are rejected.")
    max_clock_skew: Duration | None = Field(
        3600.0,
        description="Reject readings whose timestamp is further than this from the gateway "
        "clock (a bad clock would otherwise close every window); null to accept any.",
    )
    max_topic_length: int = Field(
        256,
        ge=1,
        le=65535,
        description="Longest topic (or path) accepted, in characters; longer ones are "
        "rejected (`topic_too_long`) before any lookup.",
    )
    max_key_length: int = Field(
        64,
        ge=1,
        le=256,
        description="Longest key value (a topic segment or payload field) accepted, in "
        "characters; longer readings are rejected (`key_too_long`): keys become per-key "
        "state here and device names in the cloud.",
    )

    _check_topics = field_validator("topics")(_check_patterns)

    def segment_fields(self) -> set[str]:
        return _segment_fields(self.topics)


class CoapSourceConfig(_Model):
    """Readings POSTed over CoAP (RFC 7252), or observed on devices that serve them."""

    bind: str = Field(
        "127.0.0.1:5683",
        description="Address to serve on, `host:port`; `0.0.0.0:5683` accepts devices on "
        "the network.",
    )
    paths: list[str] = Field(
        description="Path patterns; a `{name}` segment becomes field `name` "
        "(e.g. `farm/{farm}/{plot}/telemetry`).",
        min_length=1,
    )
    observe: list[str] = Field(
        default_factory=list,
        description="`coap://` resource URIs to observe (RFC 7641); their path must match `paths`.",
    )
    format: Literal["auto", "json", "senml"] = Field(
        "auto", description="For JSON payloads; SenML CBOR is recognised by its content format."
    )
    timestamp: FieldName | None = Field("ts", description="As for `mqtt`.")
    max_payload: ByteSize = Field(65536, description="Larger payloads get 4.13.")
    max_clock_skew: Duration | None = Field(3600.0, description="As for `mqtt`.")
    max_topic_length: int = Field(256, ge=1, le=65535, description="As for `mqtt` (the path).")
    max_key_length: int = Field(64, ge=1, le=256, description="As for `mqtt`.")

    _check_paths = field_validator("paths")(_check_patterns)

    @field_validator("bind")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port like 127.0.0.1:5683, got {value!r}")
        return value

    def segment_fields(self) -> set[str]:
        return _segment_fields(self.paths)


SOURCES: dict[str, type[_Model]] = {"mqtt": MqttSourceConfig, "coap": CoapSourceConfig}


# -- outputs -----------------------------------------------------------------------------


class _OutputConfig(_Model):
    from_: list[str] = Field(
        alias="from",
        description="Stream ids to read (a step id, `<id>.late`, or `source`).",
        min_length=1,
    )

    @field_validator("from_", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        return []


class UplinkOutputConfig(_OutputConfig):
    """Forward records to the cloud on `fogline/<gateway-id>/up/<kind>`."""

    kind: Literal["digest", "alert", "escalation", "event"] = Field(
        description="Uplink record kind (its priority class in the outbox: alert, escalation, "
        "event, digest)."
    )


class ActionOutputConfig(_OutputConfig):
    """Publish a command on the edge broker at once; never waits for the cloud."""

    topic: str = Field(description="Topic template, e.g. `factory/{line}/{machine}/actions`.")
    when: Expression | None = Field(None, description="Only for records where this is true.")
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON payload; string values are `{field}` templates. Empty: the record.",
    )
    qos: Literal[0, 1, 2] = Field(1, description="Publish QoS.")
    retain: bool = Field(False, description="Publish retained.")

    _check_topic = field_validator("topic")(_template)

    @field_validator("payload")
    @classmethod
    def _payload_templates(cls, payload: dict[str, Any]) -> dict[str, Any]:
        for value in _strings(payload):
            _template(value)
        return payload

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        refs: list[tuple[RelPath, frozenset[str]]] = [
            (("topic",), compile_template(self.topic).fields)
        ]
        if self.when is not None:
            refs.append((("when",), compile_expr(self.when).fields))
        used = frozenset().union(*(compile_template(s).fields for s in _strings(self.payload)))
        refs.append((("payload",), used))
        return refs


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


OUTPUTS: dict[str, type[_OutputConfig]] = {
    "uplink": UplinkOutputConfig,
    "action": ActionOutputConfig,
}


# -- the pipeline ------------------------------------------------------------------------


class DeadLetterConfig(_Model):
    topic: str = Field(
        description="Edge-broker topic for rejected readings, with the reason "
        "(`{gateway}` is the gateway id)."
    )
    max_payload: ByteSize = Field(1024, description="Bytes of the original payload kept.")


class QueueConfig(_Model):
    size: int = Field(10_000, ge=1, description="Readings buffered between intake and steps.")
    when_full: Literal["block", "drop_oldest"] = Field(
        "drop_oldest",
        description="`block` stops reading from the broker (it then queues, QoS 1); "
        "`drop_oldest` keeps the newest. Either way it is counted.",
    )


class PipelineHeader(_Model):
    """The top level of a pipeline file; steps, sources and outputs are parsed apart."""

    name: FieldName = Field(description="Pipeline name, reported in health records.")
    description: str | None = Field(None, description="What this pipeline is for.")
    key: list[FieldName] = Field(
        description="Fields that identify a device; keyed state (windows, scores, alerts) is "
        "kept per key.",
        min_length=1,
    )
    sources: list[dict[str, Any]] = Field(min_length=1, description="Where readings come from.")
    steps: list[dict[str, Any]] = Field(default_factory=list, description="Operators, in order.")
    outputs: list[dict[str, Any]] = Field(min_length=1, description="Where results go.")
    dead_letter: DeadLetterConfig | None = Field(None, description="Publish rejects here.")
    queue: QueueConfig = Field(default_factory=QueueConfig, description="Intake queue.")
    tick: Duration = Field(0.1, gt=0, description="Timer resolution for closing windows.")
    health_every: Duration = Field(30.0, gt=0, description="Period of the health record.")


@dataclass(frozen=True, slots=True)
class StepSpec:
    id: str
    op: str
    from_: str
    config: OpConfig
    path: str


@dataclass(frozen=True, slots=True)
class Pipeline:
    header: PipelineHeader
    sources: list[tuple[str, Any]]
    steps: list[StepSpec]
    outputs: list[tuple[str, Any]]
    streams: dict[str, Fields]
    file: str
    variables: tuple[Substitution, ...] = ()  # each `${NAME}` and what it became

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(self.header.key)

    def summary(self) -> str:
        lines = [f"{self.file}: pipeline '{self.name}', key ({', '.join(self.key)})"]
        for kind, cfg in self.sources:
            where = getattr(cfg, "topics", None) or [f"{cfg.bind} /{p}" for p in cfg.paths]
            lines.append(f"  source  {kind}: {', '.join(where)}")
        lines += [f"  step    {s.id} = {s.op} <- {s.from_}" for s in self.steps]
        for kind, cfg in self.outputs:
            target = cfg.kind if kind == "uplink" else cfg.topic
            lines.append(f"  output  {kind} {target} <- {', '.join(cfg.from_)}")
        lines += [f"  var     {v}" for v in self.variables]
        return "\n".join(lines)


class PipelineError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_pipeline(file: str | FsPath, env: Mapping[str, str] | None = None) -> Pipeline:
    """Read, validate and check a pipeline file; raise PipelineError with every problem.

    `${NAME}` references are filled from `env` (default: the process environment)."""
    name = str(file)
    try:
        text = FsPath(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(
            [Problem(name, 1, 1, "", f"cannot read the file: {exc.strerror}")]
        ) from exc
    return parse_pipeline(text, name, env)


def parse_pipeline(
    text: str, file: str = "<pipeline>", env: Mapping[str, str] | None = None
) -> Pipeline:
    try:
        doc = load(text, file, os.environ if env is None else env)
    except YamlDocumentError as exc:
        raise PipelineError(exc.problems) from exc
    problems: list[Problem] = []
    if not isinstance(doc.data, dict):
        raise PipelineError(
            [
                doc.problem(
                    (),
                    "expected a mapping with name, key, sources, steps and outputs, "
                    f"got {_show(doc.data)}",
                )
            ]
        )
    header = _validate(PipelineHeader, doc.data, (), doc, problems)
    # A bad header (a missing name, a wrong tick) does not hide what is wrong further down:
    # the lists that parsed are checked and wired all the same, so one run reports it all.
    sections = {
        section: items if isinstance(items := doc.data.get(section), list) else []
        for section in ("sources", "steps", "outputs")
    }
    sources = _entries(sections["sources"], "sources", SOURCES, doc, problems)
    steps_raw = _entries(sections["steps"], "steps", REGISTRY, doc, problems, keep_failed=True)
    outputs = _entries(sections["outputs"], "outputs", OUTPUTS, doc, problems)
    key = header.key if header is not None else _names(doc.data.get("key"))
    steps, streams = _wire(tuple(key), sources, steps_raw, doc, problems)
    _check_outputs(outputs, streams, doc, problems)
    if problems or header is None:
        raise PipelineError(problems)
    return Pipeline(
        header,
        [(k, c) for _, k, c in sources],
        steps,
        [(k, c) for _, k, c in outputs],
        streams,
        file,
        doc.substitutions,
    )


def _entries(
    items: list[Any],
    section: str,
    registry: dict[str, Any],
    doc: Document,
    problems: list[Problem],
    *,
    keep_failed: bool = False,
) -> list[tuple[int, str, Any]]:
    """Validate each single-key entry against its registered config model.

    With `keep_failed`, an entry of a known type that failed validation stays in the list
    as its raw mapping, so later checks know its id and do not report follow-on errors.
    """
    out: list[tuple[int, str, Any]] = []
    known = ", ".join(sorted(registry))
    for i, item in enumerate(items):
        path: Path = (section, i)
        if not isinstance(item, dict) or len(item) != 1:
            problems.append(
                doc.problem(
                    path,
                    f"expected a single-key mapping like '- {min(registry)}: {{...}}', "
                    f"got {_show(item)}",
                )
            )
            continue
        ((kind, body),) = item.items()
        if kind not in registry:
            problems.append(
                doc.problem(
                    (*path, kind),
                    f"expected one of: {known}; got unknown {section[:-1]} type '{kind}'",
                )
            )
            continue
        model = registry[kind]
        model = getattr(model, "Config", model)
        config = _validate(model, {} if body is None else body, (*path, kind), doc, problems)
        if config is not None:
            out.append((i, kind, config))
        elif keep_failed:
            out.append((i, kind, _without_bad_keys(model, body, doc)))
    return out


def _without_bad_keys(model: type[BaseModel], body: Any, doc: Document) -> Any:
    """A step that failed only on keys it can do without (a misspelled optional key, at
    any depth) is still wired, so the fields its expressions read are checked in the same
    run; else its raw mapping. Its problems are already reported."""
    if not isinstance(body, dict):
        return {}
    context = {"base": FsPath(doc.file).parent}
    try:
        model.model_validate(body, context=context)
    except ValidationError as exc:
        trimmed = copy.deepcopy(body)
        for err in exc.errors():
            _drop(trimmed, [p for p in err["loc"] if not str(p).startswith("function-")])
    else:
        return body
    try:
        return model.model_validate(trimmed, context=context)
    except ValidationError:
        return body


def _drop(data: Any, loc: list[Any]) -> None:
    """Delete the key or item at `loc` inside `data`, if it is there."""
    for part in loc[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return
    if loc and isinstance(data, dict):
        data.pop(loc[-1], None)


def _validate(
    model: type[BaseModel], data: Any, path: Path, doc: Document, problems: list[Problem]
) -> Any:
    try:
        # Files a step names (a model) are relative to the pipeline file.
        return model.model_validate(data, context={"base": FsPath(doc.file).parent})
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(
                part
                for part in err["loc"]
                if not (isinstance(part, str) and part.startswith("function-"))
            )
            problems.append(doc.problem((*path, *loc), _message(err, model, data)))
        return None


def _message(err: Any, model: type[BaseModel], data: Any) -> str:  # noqa: ARG001
    kind, loc = err["type"], err["loc"]
    got = _show(err.get("input"))
    if kind == "missing":
        return f"expected a value for '{loc[-1]}', got nothing"
    if kind == "extra_forbidden":
        return f"expected a known key, got unknown key '{loc[-1]}' (check its spelling)"
    msg: str = err["msg"]
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    msg = msg.replace("Input should be ", "expected ").replace("Input ", "expected input ")
    if kind in {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "literal_error",
    } or msg.startswith("expected"):
        return f"{msg}, got {got}"
    return f"{msg} (got {got})"


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(value: Any) -> list[str]:
    """The strings of a list that failed validation as a whole (a best guess at the key)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _wire(
    key: tuple[str, ...],
    sources: list[tuple[int, str, Any]],
    steps_raw: list[tuple[int, str, Any]],
    doc: Document,
    problems: list[Problem],
) -> tuple[list[StepSpec], dict[str, Fields]]:
    """Give steps ids, resolve `from:`, and follow the fields each stream carries."""
    segments = (
        set().union(*(getattr(cfg, "segment_fields", set)() for _, _, cfg in sources))
        if sources
        else set()
    )
    timestamp = {cfg.timestamp for _, _, cfg in sources if getattr(cfg, "timestamp", None)}
    streams: dict[str, Fields] = {SOURCE: Fields(frozenset(segments | timestamp), open=True)}
    # A step's id defaults to its operator name, when that name is used once.
    steps: list[StepSpec] = []
    previous = SOURCE
    counts: dict[str, int] = {}
    for _, op, config in steps_raw:
        if not isinstance(config, dict) and config.id is None:
            counts[op] = counts.get(op, 0) + 1
    for i, op, config in steps_raw:
        path: Path = ("steps", i, op)
        if isinstance(config, dict):  # failed validation, already reported
            step_id = str(config.get("id") or op)
            streams[step_id] = Fields(frozenset(), open=True)
            for side in REGISTRY[op].side_streams:
                streams[f"{step_id}.{side}"] = Fields(frozenset(), open=True)
            previous = step_id
            continue
        step_id = config.id or op
        if config.id is None and counts[op] > 1:
            problems.append(
                doc.problem(
                    path,
                    f"expected an 'id:' for each of the {counts[op]} '{op}' steps, got none here",
                )
            )
            step_id = f"{op}_{i}"
        if step_id in streams:
            problems.append(
                doc.problem((*path, "id"), f"expected a unique step id, got '{step_id}' twice")
            )
        from_ = config.from_ or previous
        fields_in = streams.get(from_)
        if fields_in is None:
            problems.append(
                doc.problem(
                    (*path, "from"),
                    f"expected a stream defined above ({', '.join(streams)}), got '{from_}'",
                )
            )
            fields_in = Fields(frozenset(), open=True)
        for rel, names in config.references():
            missing = fields_in.missing(names)
            if missing:
                problems.append(doc.problem((*path, *rel), _missing(missing, from_, fields_in)))
        fields_out = config.produces(fields_in, key)
        streams[step_id] = fields_out
        for side in REGISTRY[op].side_streams:
            streams[f"{step_id}.{side}"] = config.side_fields(side, fields_in, key)
        steps.append(StepSpec(step_id, op, from_, config, f"steps[{i}].{op}"))
        previous = step_id
    return steps, streams


def _missing(missing: list[str], stream: str, fields: Fields) -> str:
    names = ", ".join(f"'{m}'" for m in missing)
    have = ", ".join(sorted(fields.known)) or "none"
    hints = [m for name in missing for m in difflib.get_close_matches(name, fields.known, n=1)]
    hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    return (
        f"expected fields that stream '{stream}' carries ({have}), "
        f"got {names} which no step produces{hint}"
    )


def _check_outputs(
    outputs: list[tuple[int, str, Any]],
    streams: dict[str, Fields],
    doc: Document,
    problems: list[Problem],
) -> None:
    for i, kind, config in outputs:
        path: Path = ("outputs", i, kind)
        known: list[Fields] = []
        for j, name in enumerate(config.from_):
            if name not in streams:
                problems.append(
                    doc.problem(
                        (*path, "from", j) if len(config.from_) > 1 else (*path, "from"),
                        f"expected a stream ({', '.join(streams)}), got '{name}'",
                    )
                )
            else:
                known.append(streams[name])
        for rel, names in config.references():
            for j, fields in enumerate(known):
                missing = fields.missing(names)
                if missing:
                    problems.append(
                        doc.problem((*path, *rel), _missing(missing, config.from_[j], fields))
                    )
