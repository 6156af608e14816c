"""Cloud decisions on escalations; models sent over the air.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.Float(precision=53)
GATEWAY = sa.String(length=128)


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


def _backfill() -> None:
    """`at` and `model` of escalations stored before this revision, from their data."""
    esc = sa.table(
        "escalations",
        sa.column("id", ID),
        sa.column("gateway_id", GATEWAY),
        sa.column("seq", sa.BigInteger()),
        sa.column("ts", TIME),
        sa.column("data", JSON),
        sa.column("at", TIME),
        sa.column("model", sa.String(length=128)),
    )
    received = sa.table(
        "received",
        sa.column("gateway_id", GATEWAY),
        sa.column("seq", sa.BigInteger()),
        sa.column("received_at", TIME),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(esc.c.id, esc.c.ts, esc.c.data, received.c.received_at).join(
            received,
            sa.and_(received.c.gateway_id == esc.c.gateway_id, received.c.seq == esc.c.seq),
        )
    ).all()
    if not rows:
        return
    values = []
    for row_id, ts, raw, received_at in rows:
        data = raw if isinstance(raw, dict) else {}
        model = data.get("model")
        at = _number(data.get("window_end"))
        values.append(
            {
                "row_id": row_id,
                "at": at if at is not None else ts if ts is not None else received_at,
                "model": model if isinstance(model, str) and len(model) <= 128 else None,
            }
        )
    conn.execute(
        esc.update()
        .where(esc.c.id == sa.bindparam("row_id"))
        .values(at=sa.bindparam("at"), model=sa.bindparam("model")),
        values,
    )


def upgrade() -> None:
    with op.batch_alter_table("escalations") as batch:
        batch.add_column(sa.Column("at", TIME, nullable=True))
        batch.add_column(sa.Column("model", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("cloud_label", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("cloud_confidence", TIME, nullable=True))
        batch.add_column(sa.Column("cloud_probabilities", JSON, nullable=True))
        batch.add_column(sa.Column("cloud_model_version", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("agree", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("decided_at", TIME, nullable=True))
        batch.add_column(sa.Column("cloud_reason", sa.Text(), nullable=True))
    _backfill()
    with op.batch_alter_table("escalations") as batch:
        batch.alter_column("at", existing_type=TIME, nullable=False)
        batch.create_index(batch.f("ix_escalations_at_id"), ["at", "id"])
        batch.create_index(batch.f("ix_escalations_gateway_id_model"), ["gateway_id", "model"])
    op.create_table(
        "model_uploads",
        sa.Column("id", ID, nullable=False),
        sa.Column("gateway_id", GATEWAY, nullable=False),
        sa.Column("step", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_at", TIME, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reported_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_model_uploads_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_uploads")),
    )
    op.create_index(
        op.f("ix_model_uploads_gateway_id_step_id"), "model_uploads", ["gateway_id", "step", "id"]
    )


def downgrade() -> None:
    op.drop_table("model_uploads")
    with op.batch_alter_table("escalations") as batch:
        batch.drop_index(batch.f("ix_escalations_gateway_id_model"))
        batch.drop_index(batch.f("ix_escalations_at_id"))
        for name in (
            "cloud_reason", "decided_at", "agree", "cloud_model_version", "cloud_probabilities",
            "cloud_confidence", "cloud_label", "model", "at",
        ):  # fmt: skip
            batch.drop_column(name)
