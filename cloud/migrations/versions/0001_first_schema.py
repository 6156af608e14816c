"""First schema: gateways, the received ledger, record tables, alert episodes.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.Float(precision=53)
GATEWAY = sa.String(length=128)
DEVICE = sa.String(length=256)


def _gateway_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["gateway_id"],
        ["gateways.id"],
        name=op.f(f"fk_{table}_gateway_id_gateways"),
        ondelete="CASCADE",
    )


def _record_table(name: str, *columns: sa.Column[object]) -> None:
    """A table of one record kind: a surrogate id, unique on (gateway_id, seq)."""
    op.create_table(
        name,
        sa.Column("id", ID, nullable=False),
        sa.Column("gateway_id", GATEWAY, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        *columns,
        _gateway_fk(name),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint("gateway_id", "seq", name=op.f(f"uq_{name}_gateway_id_seq")),
    )


def upgrade() -> None:
    op.create_table(
        "gateways",
        sa.Column("id", GATEWAY, nullable=False),
        sa.Column("first_seen", TIME, nullable=False),
        sa.Column("last_seen", TIME, nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("max_seq", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("pipeline", sa.String(length=256), nullable=True),
        sa.Column("edge_connected", sa.Boolean(), nullable=True),
        sa.Column("uplink_pending", sa.BigInteger(), nullable=True),
        sa.Column("outbox_depth", sa.BigInteger(), nullable=True),
        sa.Column("outbox_bytes", sa.BigInteger(), nullable=True),
        sa.Column("evicted", JSON, nullable=False),
        sa.Column("expired", JSON, nullable=False),
        sa.Column("health_seq", sa.BigInteger(), nullable=True),
        sa.Column("health_ts", TIME, nullable=True),
        sa.Column("health", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateways")),
    )
    op.create_table(
        "received",
        sa.Column("gateway_id", GATEWAY, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        _gateway_fk("received"),
        sa.PrimaryKeyConstraint("gateway_id", "seq", name=op.f("pk_received")),
    )
    op.create_table(
        "evicted_ranges",
        sa.Column("gateway_id", GATEWAY, nullable=False),
        sa.Column("lo", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hi", sa.BigInteger(), nullable=False),
        _gateway_fk("evicted_ranges"),
        sa.PrimaryKeyConstraint("gateway_id", "lo", name=op.f("pk_evicted_ranges")),
    )
    _record_table(
        "digests",
        sa.Column("device", DEVICE, nullable=False),
        sa.Column("window_start", TIME, nullable=False),
        sa.Column("window_end", TIME, nullable=False),
        sa.Column("ts", TIME, nullable=True),
        sa.Column("metrics", JSON, nullable=False),
    )
    op.create_index(op.f("ix_digests_window_end_id"), "digests", ["window_end", "id"])
    op.create_index(
        op.f("ix_digests_gateway_id_device_window_end"),
        "digests",
        ["gateway_id", "device", "window_end"],
    )
    _record_table(
        "alert_events",
        sa.Column("alert_id", sa.String(length=256), nullable=False),
        sa.Column("device", DEVICE, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("ts", TIME, nullable=True),
        sa.Column("data", JSON, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", ID, nullable=False),
        sa.Column("gateway_id", GATEWAY, nullable=False),
        sa.Column("alert_id", sa.String(length=256), nullable=False),
        sa.Column("raised_seq", sa.BigInteger(), nullable=True),
        sa.Column("cleared_seq", sa.BigInteger(), nullable=True),
        sa.Column("device", DEVICE, nullable=False),
        sa.Column("rule", sa.String(length=128), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("raised_at", TIME, nullable=False),
        sa.Column("cleared_at", TIME, nullable=True),
        sa.Column("acknowledged_at", TIME, nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        _gateway_fk("alerts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("gateway_id", "alert_id", name=op.f("uq_alerts_gateway_id_alert_id")),
    )
    op.create_index(op.f("ix_alerts_raised_at_id"), "alerts", ["raised_at", "id"])
    op.create_index(op.f("ix_alerts_gateway_id_state"), "alerts", ["gateway_id", "state"])
    for name in ("escalations", "events"):
        _record_table(
            name,
            sa.Column("device", DEVICE, nullable=False),
            sa.Column("ts", TIME, nullable=True),
            sa.Column("data", JSON, nullable=False),
        )
    _record_table(
        "health",
        sa.Column("ts", TIME, nullable=True),
        sa.Column("data", JSON, nullable=False),
    )


def downgrade() -> None:
    for name in (
        "health", "events", "escalations", "alerts", "alert_events", "digests",
        "evicted_ranges", "received", "gateways",
    ):  # fmt: skip
        op.drop_table(name)
