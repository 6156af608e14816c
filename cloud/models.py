"""The cloud store's tables, as typed SQLAlchemy 2 models (Alembic migrations mirror them).

Times are epoch seconds (floats), exactly as the wire contract carries them: the same
numbers compare the same way on SQLite and PostgreSQL, and SQLite keeps no time zone.

Every record table is unique on `(gateway_id, seq)`. The `received` ledger holds one row
per `(gateway_id, seq)` of every kind: it is the gate that makes ingest idempotent and the
set that loss detection runs over, and it outlives digest retention (a digest that
expired was still received, not lost).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

# BIGINT on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid (autoincrementing).
Id = BigInteger().with_variant(Integer(), "sqlite")
Seq = BigInteger
Json = JSON().with_variant(JSONB(), "postgresql")
# Longest strings the bounded columns hold; ingest rejects records with longer ones.
MAX_GATEWAY, MAX_DEVICE, MAX_ALERT_ID, MAX_RULE = 128, 256, 256, 128
MAX_MODEL, MAX_VERSION, MAX_LABEL, MAX_STEP = 128, 64, 128, 128
GatewayId = String(MAX_GATEWAY)
Device = String(MAX_DEVICE)

STATES = ("open", "acknowledged", "cleared", "resolved")
ROLES = ("viewer", "operator", "admin")  # each can do what the ones before it can
MAX_USER = 64
SEVERITIES = ("info", "warning", "critical")


class Base(DeclarativeBase):
    # Named constraints, so that later migrations can drop and alter them by name.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    # Read by SQLAlchemy as a class attribute, never mutated.
    type_annotation_map = {dict[str, Any]: Json, float: Float(precision=53)}  # noqa: RUF012


def _gateway_fk() -> Mapped[str]:
    return mapped_column(GatewayId, ForeignKey("gateways.id", ondelete="CASCADE"))


class Gateway(Base):
    """One row per gateway ever heard of; health fields come from its latest health record,
    `silent_since` from the silence watch."""

    __tablename__ = "gateways"

    id: Mapped[str] = mapped_column(GatewayId, primary_key=True)
    first_seen: Mapped[float]
    last_seen: Mapped[float]
    received: Mapped[int] = mapped_column(Seq, default=0)
    max_seq: Mapped[int] = mapped_column(Seq, default=0)
    version: Mapped[str | None] = mapped_column(String(64))
    pipeline: Mapped[str | None] = mapped_column(String(256))
    edge_connected: Mapped[bool | None]
    uplink_pending: Mapped[int | None] = mapped_column(Seq)
    outbox_depth: Mapped[int | None] = mapped_column(Seq)
    outbox_bytes: Mapped[int | None] = mapped_column(Seq)
    evicted: Mapped[dict[str, Any]] = mapped_column(default=dict)
    expired: Mapped[dict[str, Any]] = mapped_column(default=dict)
    health_seq: Mapped[int | None] = mapped_column(Seq)
    health_ts: Mapped[float | None]
    health: Mapped[dict[str, Any] | None]
    # From the latest health record too: its period (silence is measured in periods) and
    # the lowest seq its outbox still held (gaps from there up are in flight, `cloud.gaps`).
    health_every: Mapped[float | None]
    pending_from: Mapped[int | None] = mapped_column(Seq)
    # Set by `cloud.silence` to `last_seen` when the gateway falls silent; cleared once it
    # is heard again (`last_seen > silent_since`) and the alert episode is cleared.
    silent_since: Mapped[float | None]


class Received(Base):
    """The ledger: every `(gateway, seq)` stored, whatever its kind."""

    __tablename__ = "received"

    gateway_id: Mapped[str] = mapped_column(
        GatewayId, ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[float]


class EvictedRange(Base):
    """Seq ranges a gateway reported evicting from its outbox unsent (merged, disjoint)."""

    __tablename__ = "evicted_ranges"

    gateway_id: Mapped[str] = mapped_column(
        GatewayId, ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    )
    lo: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    hi: Mapped[int] = mapped_column(Seq)


class Digest(Base):
    __tablename__ = "digests"
    __table_args__ = (
        UniqueConstraint("gateway_id", "seq"),
        Index(None, "window_end", "id"),
        Index(None, "gateway_id", "device", "window_end"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gateway_id: Mapped[str] = _gateway_fk()
    seq: Mapped[int] = mapped_column(Seq)
    device: Mapped[str] = mapped_column(Device)
    window_start: Mapped[float]
    window_end: Mapped[float]
    ts: Mapped[float | None]
    metrics: Mapped[dict[str, Any]]


class AlertEvent(Base):
    """Each raise and clear as it arrived; the idempotency record behind `Alert`."""

    __tablename__ = "alert_events"
    __table_args__ = (UniqueConstraint("gateway_id", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gateway_id: Mapped[str] = _gateway_fk()
    seq: Mapped[int] = mapped_column(Seq)
    alert_id: Mapped[str] = mapped_column(String(MAX_ALERT_ID))
    device: Mapped[str] = mapped_column(Device)
    state: Mapped[str] = mapped_column(String(16))
    ts: Mapped[float | None]
    data: Mapped[dict[str, Any]]


class Alert(Base):
    """One episode per `(gateway, alert_id)`: the raise and the clear folded together.

    `state` is open, acknowledged, cleared or resolved (see `cloud.alerts`). The raise
    and the clear may arrive in either order, so each fills only what it knows.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("gateway_id", "alert_id"),
        Index(None, "raised_at", "id"),
        Index(None, "gateway_id", "state"),
        Index(None, "state", "severity"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gateway_id: Mapped[str] = _gateway_fk()
    alert_id: Mapped[str] = mapped_column(String(MAX_ALERT_ID))
    raised_seq: Mapped[int | None] = mapped_column(Seq)
    cleared_seq: Mapped[int | None] = mapped_column(Seq)
    device: Mapped[str] = mapped_column(Device)
    rule: Mapped[str] = mapped_column(String(MAX_RULE))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    raised_at: Mapped[float]
    cleared_at: Mapped[float | None]
    acknowledged_at: Mapped[float | None]
    message: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    updated_at: Mapped[float]
    # Operators' words (cloud.alerts.act); ingest carries them over unchanged.
    acknowledged_by: Mapped[str | None] = mapped_column(String(MAX_USER))
    resolved_at: Mapped[float | None]
    resolved_by: Mapped[str | None] = mapped_column(String(MAX_USER))
    assignee: Mapped[str | None] = mapped_column(String(MAX_USER))
    false_alarm: Mapped[str | None] = mapped_column(Text)  # the reason; a label for retraining
    silence_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("silences.id", ondelete="SET NULL")
    )
    # Closed without a clear (cloud.alerts.reconcile): by whom ("gateway") and why. A clear
    # that arrives later fills in what really happened and empties both.
    closed_by: Mapped[str | None] = mapped_column(String(16))
    close_reason: Mapped[str | None] = mapped_column(Text)


class _FreeForm:
    """A record kept as it came: escalations and events have the same shape."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[UniqueConstraint | Index, ...]:  # noqa: N805 - a class-level directive
        return (UniqueConstraint("gateway_id", "seq"),)  # one object per table

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gateway_id: Mapped[str] = _gateway_fk()
    seq: Mapped[int] = mapped_column(Seq)
    device: Mapped[str] = mapped_column(Device)
    ts: Mapped[float | None]
    data: Mapped[dict[str, Any]]


class Escalation(_FreeForm, Base):
    """An uncertain edge result, and the cloud model's decision on it (null: undecided).

    `at` is what time ranges and pages sort on: the window end, else the record's `ts`,
    else when it was received. `model` is the edge model's name, the key to the cloud model.
    """

    __tablename__ = "escalations"
    __table_args__ = (
        UniqueConstraint("gateway_id", "seq"),
        Index(None, "at", "id"),
        Index(None, "gateway_id", "model"),
    )

    at: Mapped[float]
    model: Mapped[str | None] = mapped_column(String(MAX_MODEL))
    cloud_label: Mapped[str | None] = mapped_column(String(MAX_LABEL))
    cloud_confidence: Mapped[float | None]
    cloud_probabilities: Mapped[dict[str, Any] | None]
    cloud_model_version: Mapped[str | None] = mapped_column(String(MAX_VERSION))
    agree: Mapped[bool | None]
    decided_at: Mapped[float | None]
    cloud_reason: Mapped[str | None] = mapped_column(Text)


class Event(_FreeForm, Base):
    __tablename__ = "events"


class Health(Base):
    __tablename__ = "health"
    __table_args__ = (UniqueConstraint("gateway_id", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gateway_id: Mapped[str] = _gateway_fk()
    seq: Mapped[int] = mapped_column(Seq)
    ts: Mapped[float | None]
    data: Mapped[dict[str, Any]]


class ModelUpload(Base):
    """A model sent over the air to one step of one gateway, and what the gateway said.

    `status` is `published` until a `model_update` event of the gateway names these bytes
    (by sha256): then `running` or `refused`, with its `reason`.
    """

    __tablename__ = "model_uploads"
    __table_args__ = (Index(None, "gateway_id", "step", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gateway_id: Mapped[str] = _gateway_fk()
    step: Mapped[str] = mapped_column(String(MAX_STEP))
    name: Mapped[str] = mapped_column(String(MAX_MODEL))
    version: Mapped[str] = mapped_column(String(MAX_VERSION))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Seq)
    chunks: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # loaded when read
    uploaded_at: Mapped[float]
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[float | None]
    # Its number for (gateway, step), signed into every chunk (`fogline.ota`); NULL before
    # revision 0012.
    serial: Mapped[int | None] = mapped_column(Seq)


class GatewayKey(Base):
    """A gateway's Ed25519 public key, registered by `fogline cloud gateway add` (issue 9).

    No foreign key to `gateways`: a gateway is provisioned before it is first heard from.
    A revoked key stays (dated) so that its gateway is refused, not taken for a new one.
    """

    __tablename__ = "gateway_keys"

    gateway_id: Mapped[str] = mapped_column(GatewayId, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[float]
    revoked_at: Mapped[float | None]


class ChainHead(Base):
    """The hash of the last record of each signed batch stored (`fogline.chain`): what a
    later batch's `prev`, or a resent one's `head`, is compared with."""

    __tablename__ = "chain_heads"

    gateway_id: Mapped[str] = mapped_column(GatewayId, primary_key=True)
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class Silence(Base):
    """A rule muted on a gateway (or one of its devices) until a time.

    A silenced episode is stored, listed and counted like any other, marked with the
    silence that covered it when it was raised; only notifications skip it.
    """

    __tablename__ = "silences"
    __table_args__ = (Index(None, "until"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gateway_id: Mapped[str] = mapped_column(GatewayId)
    device: Mapped[str | None] = mapped_column(Device)  # null: every device of the gateway
    rule: Mapped[str] = mapped_column(String(MAX_RULE))
    until: Mapped[float]
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(MAX_USER))
    created_at: Mapped[float]
    ended_at: Mapped[float | None]  # ended early by an operator


class Activity(Base):
    """What happened to alerts, in order: arrivals from gateways and every operator action.

    One table for three readers: an alert's timeline, the audit (`actor` is a user name,
    `gateway <id>` or `cloud`), and the live feed, which follows `id`.
    """

    __tablename__ = "activity"
    __table_args__ = (Index(None, "alert", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[float]
    actor: Mapped[str] = mapped_column(String(MAX_USER + 8))
    action: Mapped[str] = mapped_column(String(32))
    alert: Mapped[int | None] = mapped_column(Id, ForeignKey("alerts.id", ondelete="CASCADE"))
    detail: Mapped[dict[str, Any]]


class User(Base):
    """A person (or a service) who reads or acts, through the console or the API."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_USER), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(256))  # argon2id; null: tokens only
    created_at: Mapped[float]


class ApiToken(Base):
    """A bearer token of a user: `fgl_<lookup>_<secret>`, only sha256(secret) kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    lookup: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float]
    last_used_at: Mapped[float | None]
    revoked_at: Mapped[float | None]


class WebSession(Base):
    """A signed-in browser: the cookie's sha256 is the key, so a copy of the table signs
    nobody in."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float]
    expires_at: Mapped[float] = mapped_column(index=True)


class Webhook(Base):
    """Where to tell about alerts: a URL, a body shape and the actions that trigger it."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    shape: Mapped[str] = mapped_column(String(16))  # "generic" JSON or "slack" ({"text"})
    actions: Mapped[dict[str, Any]]  # {"on": ["raised", "cleared", "acknowledge"]}
    created_by: Mapped[str] = mapped_column(String(MAX_USER))
    created_at: Mapped[float]
    removed_at: Mapped[float | None]


class Delivery(Base):
    """One activity row to one webhook: retried with backoff until sent or given up."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "activity_id"),
        Index(None, "status", "next_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(Id, ForeignKey("webhooks.id", ondelete="CASCADE"))
    activity_id: Mapped[int] = mapped_column(Id, ForeignKey("activity.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))  # pending, sent, failed
    attempts: Mapped[int]
    next_at: Mapped[float]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[float | None]
    created_at: Mapped[float]
