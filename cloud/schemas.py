"""The read API's response models: they drive both the JSON and `/openapi.json`.

Times are epoch seconds, as the gateways send them. Every record carries `gateway` and
`seq`, its identity across the whole system.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["open", "acknowledged", "cleared", "resolved"]
Severity = Literal["info", "warning", "critical"]


MAX_ID = 2**63 - 1  # a BIGINT row id; a larger number is refused (422), not sent to the database
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)


GatewayStatus = Literal["online", "silent"]


class LastKnownBacklog(_Out):
    """The uplink as the gateway's latest health record described it: last known, not now.

    While a gateway is silent its real backlog is likely larger than this.
    """

    records: int | None = Field(
        description="Records not acknowledged by the cloud (`uplink.backlog_records`, else "
        "`outbox.depth`)."
    )
    bytes: int | None = Field(description="Their bytes (`uplink.backlog_bytes`, else outbox).")
    oldest_age_s: float | None = Field(description="Age of the oldest of them, then.")
    as_of: float | None = Field(description="`ts` of that health record (the gateway's clock).")
    age_s: float | None = Field(
        description="Seconds from `as_of` to now, by the cloud's clock (0 if the gateway's "
        "clock is ahead)."
    )
    uplink_status: Literal["ok", "degraded"] | None = Field(
        description="The gateway's own verdict on its uplink, then."
    )
    uplink_reasons: list[str] = Field(description="Why it said degraded.")
    uplink_connected: bool | None = Field(description="Its uplink broker link, then.")
    last_ack_age_s: float | None = Field(description="Seconds since its last ack, then.")


class GatewaySummary(_Out):
    gateway: str = Field(description="Gateway id.")
    first_seen: float = Field(description="When the cloud first stored a record from it.")
    last_seen: float = Field(description="When the cloud last stored a message from it.")
    received: int = Field(description="Distinct seqs stored.")
    max_seq: int = Field(description="Highest seq stored.")
    version: str | None = Field(description="Software version, from its latest health.")
    pipeline: str | None = Field(description="Pipeline name, from its latest health.")
    edge_connected: bool | None = Field(description="Edge broker link, from its latest health.")
    uplink_pending: int | None = Field(description="Records waiting in its uplink.")
    outbox_depth: int | None = Field(description="Records in its outbox.")
    outbox_bytes: int | None = Field(description="Bytes in its outbox.")
    outbox_evicted: dict[str, int] = Field(description="Records evicted unsent, per kind.")
    outbox_expired: dict[str, int] = Field(description="Records expired unsent, per kind.")
    health_ts: float | None = Field(description="Timestamp of its latest health record.")
    status: GatewayStatus = Field(
        description="`silent` when nothing arrived from it for `silent_after` (3 health "
        "periods by default) and the cloud raised `gateway_silent`; `online` otherwise."
    )
    silent_since: float | None = Field(
        description="While silent: when the cloud last stored anything from it."
    )
    health_every: float | None = Field(description="Its health period, from its latest health.")
    last_known_backlog: LastKnownBacklog | None = Field(
        description="Its uplink backlog from its latest health record, with that record's "
        "age; null before any health record."
    )
    rate_in: float | None = Field(
        description="Messages per second received from its sources, from the growth of "
        "`messages_in` between its latest two health records (a restart counts from zero); "
        "null with fewer than two."
    )
    rate_out: float | None = Field(
        description="Records per second its outputs emitted, from `outputs` likewise."
    )


class GapOut(_Out):
    from_: int = Field(alias="from", description="First missing seq.")
    to: int = Field(description="Last missing seq (inclusive).")
    explained: Literal["evicted", "in_flight"] | None = Field(
        description="`evicted` if the gateway reported evicting these seqs; `in_flight` if "
        "the gateway may still be holding them (at or above `in_flight_from`); null if lost."
    )


class GatewayDetail(GatewaySummary):
    evicted: int = Field(description="Seqs the gateway reported evicting from its outbox.")
    missing: int = Field(description="Seqs in 1..max_seq never received.")
    in_flight: int = Field(
        description="Missing seqs, not evicted, that the gateway may still be holding."
    )
    unexplained: int = Field(
        description="Missing seqs the gateway no longer holds and did not report evicting: lost."
    )
    in_flight_from: int = Field(
        description="Missing seqs from here up are in flight: `pending_from` of its latest "
        "health, else above what was stored a grace period ago (max_seq + 1: none)."
    )
    pending_from: int | None = Field(
        description="Lowest seq its outbox still held, from its latest health record."
    )
    gaps: list[GapOut] = Field(description="Missing seq ranges, oldest first.")
    gaps_truncated: bool = Field(description="True if there are more gaps than listed.")
    health: dict[str, Any] | None = Field(description="Its latest health record.")


class DigestOut(_Out):
    gateway: str
    seq: int
    device: str
    window_start: float
    window_end: float
    ts: float | None
    metrics: dict[str, Any] = Field(description="`count`, `<field>_<agg>` and key fields.")


class AlertOut(_Out):
    id: int = Field(description="The episode's id in this cloud (actions and pages use it).")
    gateway: str
    seq: int = Field(description="Seq of the raise (of the clear while the raise is missing).")
    alert_id: str
    device: str
    rule: str
    severity: Severity
    state: State
    raised_at: float
    cleared_at: float | None
    acknowledged_at: float | None
    message: str | None
    raised_seq: int | None
    cleared_seq: int | None
    payload: dict[str, Any] = Field(description="The raise and clear events' data.")
    acknowledged_by: str | None
    resolved_at: float | None
    resolved_by: str | None
    assignee: str | None
    false_alarm: str | None = Field(description="Why an operator called it a false alarm.")
    silence: int | None = Field(description="The silence that covered it when it arrived.")
    closed_by: str | None = Field(
        description="`gateway`: closed without a clear, because the gateway's health record "
        "no longer listed it (a restart or a state reset lost it); null otherwise."
    )
    close_reason: str | None = Field(description="Why it was closed without a clear.")


class ActivityOut(_Out):
    id: int
    at: float = Field(description="When the cloud stored it.")
    actor: str = Field(description="A user name, `gateway <id>` or `cloud`.")
    action: str = Field(
        description="raised, cleared (from the source); closed (the gateway no longer holds "
        "it); acknowledge, resolve, assign, comment, false_alarm, silence, unsilence (from "
        "people)."
    )
    alert: int | None
    detail: dict[str, Any]


class AlertDetail(AlertOut):
    activity: list[ActivityOut] = Field(description="Its timeline and audit, oldest first.")


class AlertCounts(_Out):
    state: dict[str, int] = Field(description="Episodes per state, under the filters.")
    severity: dict[str, int] = Field(
        description="Episodes not yet resolved per severity, under the filters except state."
    )
    silenced: int = Field(description="Of the episodes matching the filters, silenced ones.")


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[RowId] = Field(min_length=1, max_length=1000, description="Episode ids.")
    action: Literal["acknowledge", "resolve", "assign", "comment", "false_alarm"]
    text: str | None = Field(
        None, max_length=2000, description="Comment, false-alarm reason or assignee."
    )


class ActionOut(_Out):
    changed: list[int]
    unchanged: list[int] = Field(description="Ids the action did not apply to.")
    missing: list[int] = Field(description="Ids of no episode.")


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway: str = Field(min_length=1, max_length=128)
    device: str | None = Field(None, max_length=256, description="Null: every device.")
    rule: str = Field(min_length=1, max_length=128)
    until: float = Field(description="Epoch seconds when it ends.")
    reason: str | None = Field(None, max_length=2000)


class SilenceOut(_Out):
    id: int
    gateway: str
    device: str | None
    rule: str
    until: float
    reason: str | None
    created_by: str
    created_at: float
    ended_at: float | None
    active: bool
    covered: int = Field(description="Episodes it covered.")


class SilenceList(_Out):
    items: list[SilenceOut]


class GatewayPage(_Out):
    items: list[GatewaySummary]
    next: str | None = Field(description="Cursor for the next page; null on the last.")


class DigestPage(_Out):
    items: list[DigestOut]
    next: str | None = Field(description="Cursor for the next page; null on the last.")


class AlertPage(_Out):
    items: list[AlertOut]
    next: str | None = Field(description="Cursor for the next page; null on the last.")


class ErrorOut(_Out):
    detail: str = Field(description="What was wrong.")


class Health(_Out):
    status: Literal["ok", "degraded"]
    broker_connected: bool
    database: bool


class EdgeDecision(_Out):
    label: str | None = Field(description="The edge model's top label.")
    confidence: float | None = Field(description="Its probability.")
    entropy: float | None = Field(description="Normalized entropy (0 certain, 1 uniform).")
    model_version: str | None = Field(description="Version of the edge model.")
    probabilities: dict[str, float] = Field(description="Probability per label.")


class CloudDecision(_Out):
    label: str = Field(description="The cloud model's top label.")
    confidence: float = Field(description="Its probability.")
    model_version: str = Field(description="Version of the cloud model that decided.")
    probabilities: dict[str, float] = Field(description="Probability per label.")
    decided_at: float = Field(description="When the cloud decided (as the record was stored).")


class EscalationOut(_Out):
    gateway: str
    seq: int
    device: str
    at: float = Field(description="Window end, else the record's `ts`, else when received.")
    ts: float | None
    model: str | None = Field(description="The model's name (the edge's and the cloud's).")
    edge: EdgeDecision
    cloud: CloudDecision | None = Field(description="Null when the cloud could not decide.")
    agree: bool | None = Field(description="Edge label == cloud label; null if undecided.")
    reason: str | None = Field(description="Why the cloud could not decide.")
    inputs: dict[str, Any] = Field(description="The model inputs the edge sent.")
    data: dict[str, Any] = Field(description="The record as the gateway sent it.")


class EscalationPage(_Out):
    items: list[EscalationOut]
    next: str | None = Field(description="Cursor for the next page; null on the last.")


class InferenceStep(_Out):
    """One `infer` step as the gateway's latest health record describes it."""

    step: str = Field(description="Step id in the gateway's pipeline.")
    name: str | None = Field(description="Model name.")
    version: str | None = Field(description="Model version the step runs.")
    sha256: str | None = Field(description="sha256 of the model file it runs.")
    threshold: float | None = Field(description="Normalized entropy above which it escalates.")
    edge: int | None = Field(description="Decided at the edge, confident (since start).")
    budget: int | None = Field(description="Decided at the edge, escalation budget spent.")
    escalated: int | None = Field(description="Escalated to the cloud.")


class InferenceOut(_Out):
    gateway: str
    model: str | None = Field(description="Model name; null for escalations naming none.")
    escalations: int = Field(description="Escalations stored.")
    decided: int = Field(description="Of those, decided by the cloud.")
    undecided: int = Field(description="Of those, not decided (see each one's reason).")
    agreed: int = Field(description="Decided, and the cloud agreed with the edge.")
    agreement_rate: float | None = Field(description="agreed / decided; null if none decided.")
    steps: list[InferenceStep] = Field(description="The gateway's steps running this model.")
    local_exit_rate: float | None = Field(
        description="(edge + budget) / (edge + budget + escalated) over those steps, from "
        "the latest health; null without counts."
    )
    health_ts: float | None = Field(description="Timestamp of that health record.")


class InferenceList(_Out):
    items: list[InferenceOut]


UploadStatus = Literal["published", "running", "refused"]


class ModelUploadOut(_Out):
    id: int
    gateway: str
    step: str
    name: str = Field(description="Model name, from its metadata.")
    version: str = Field(description="Version announced to the gateway.")
    serial: int | None = Field(
        description="Its number among the uploads to this step, signed into each chunk: "
        "the gateway refuses one older than the upload it took last."
    )
    sha256: str
    size: int = Field(description="Bytes.")
    chunks: int = Field(description="Retained chunks it was published as.")
    uploaded_at: float
    status: UploadStatus = Field(
        description="`published` until the gateway reports, then `running` or `refused`."
    )
    reason: str | None = Field(description="Why the gateway refused it.")
    reported_at: float | None = Field(description="When the gateway reported.")
    current: bool = Field(description="The step runs these bytes, says the latest health.")


class GatewayModels(_Out):
    gateway: str
    running: list[InferenceStep] = Field(description="Its infer steps, from the latest health.")
    uploads: list[ModelUploadOut] = Field(description="Uploads, newest first.")


class GatewayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="The gateway's id (its --id; also its broker user name).",
    )
    public_key: str = Field(
        min_length=1,
        max_length=128,
        description="Its Ed25519 public key, as `fogline gateway key --data-dir DIR` prints "
        "it on the gateway (the private key never leaves it).",
    )


class GatewayIdentity(_Out):
    """An identity file (`fogline.identity`): save it as identity.json in the gateway's
    --data-dir. Its broker password is shown this once."""

    v: int = Field(description="The identity file's format.")
    gateway: str
    username: str = Field(description="Its broker user.")
    password: str = Field(description="Its broker password: shown this once.")
    cloud_public_key: str = Field(description="The key the cloud signs acks and models with.")
    gateway_public_key: str = Field(description="The key registered for it.")
    key_id: str = Field(description="That key's id (as in `fogline cloud gateway list`).")
    broker: str = Field(description="Whether the broker has reloaded its password file.")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://([^/?#\s@]*@)?(\[[0-9A-Fa-f:.]+\]|[^/?#\s:@\[\]]+)"
        r"(:[1-9][0-9]{0,4})?([/?#]\S*)?$",
        description="http(s) URL to POST to.",
    )
    shape: Literal["generic", "slack"] = Field(
        "generic", description='`generic` JSON, or `slack` ({"text"}: Slack, Teams, ...).'
    )
    on: list[Literal["raised", "cleared", "acknowledge"]] = Field(
        ["raised", "cleared", "acknowledge"], min_length=1, description="What triggers it."
    )


class WebhookOut(_Out):
    id: int
    url: str = Field(description="Shown shortened: incoming-webhook paths are secrets.")
    shape: str
    on: list[str]
    created_by: str
    created_at: float
    sent: int
    pending: int = Field(description="Waiting for their first try or a retry.")
    failed: int = Field(description="Given up after every retry.")
    last_error: str | None
    last_error_status: str | None


class WebhookList(_Out):
    items: list[WebhookOut]
