"""The read API's response models: they drive both the JSON and `/openapi.json`.

Times are epoch seconds, as the gateways send them. Every record carries `gateway` and
`seq`, its identity across the whole system.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["open", "acknowledged", "resolved"]
Severity = Literal["info", "warning", "critical"]


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)


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


class GapOut(_Out):
    from_: int = Field(alias="from", description="First missing seq.")
    to: int = Field(description="Last missing seq (inclusive).")
    explained: Literal["evicted"] | None = Field(
        description="`evicted` if the gateway reported evicting these seqs; null if lost."
    )


class GatewayDetail(GatewaySummary):
    evicted: int = Field(description="Seqs the gateway reported evicting from its outbox.")
    missing: int = Field(description="Seqs in 1..max_seq never received.")
    unexplained: int = Field(description="Missing seqs the gateway did not report evicting.")
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
