"""People (users, API tokens, web sessions), alert work (operator fields, silences, the
activity log), webhooks and their deliveries, and the states open / acknowledged /
cleared / resolved.

Episodes that a clear had resolved before this revision become `cleared`: the condition
ended at the source, and no operator had closed them (`resolved` is now the operator's
word).

Revision ID: c0003 (the id it was made with on the console branch; the file sorts after
0003, the gateway silence, which it follows)
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "c0003"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.Float(precision=53)
USER = sa.String(length=64)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", USER, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("lookup", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("last_used_at", TIME, nullable=True),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("lookup", name=op.f("uq_api_tokens_lookup")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_web_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_expires_at"), "web_sessions", ["expires_at"])
    op.create_table(
        "silences",
        sa.Column("id", ID, nullable=False),
        sa.Column("gateway_id", sa.String(length=128), nullable=False),
        sa.Column("device", sa.String(length=256), nullable=True),
        sa.Column("rule", sa.String(length=128), nullable=False),
        sa.Column("until", TIME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", USER, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("ended_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silences")),
    )
    op.create_index(op.f("ix_silences_until"), "silences", ["until"])
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("acknowledged_by", USER, nullable=True))
        batch.add_column(sa.Column("resolved_at", TIME, nullable=True))
        batch.add_column(sa.Column("resolved_by", USER, nullable=True))
        batch.add_column(sa.Column("assignee", USER, nullable=True))
        batch.add_column(sa.Column("false_alarm", sa.Text(), nullable=True))
        batch.add_column(sa.Column("silence_id", ID, nullable=True))
        batch.create_foreign_key(
            batch.f("fk_alerts_silence_id_silences"),
            "silences",
            ["silence_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(batch.f("ix_alerts_state_severity"), ["state", "severity"])
    op.create_table(
        "activity",
        sa.Column("id", ID, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("actor", sa.String(length=72), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("alert", ID, nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["alert"], ["alerts.id"], name=op.f("fk_activity_alert_alerts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity")),
    )
    op.create_index(op.f("ix_activity_alert_id"), "activity", ["alert", "id"])
    op.create_table(
        "webhooks",
        sa.Column("id", ID, nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("shape", sa.String(length=16), nullable=False),
        sa.Column("actions", JSON, nullable=False),
        sa.Column("created_by", USER, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("removed_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", ID, nullable=False),
        sa.Column("webhook_id", ID, nullable=False),
        sa.Column("activity_id", ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", TIME, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_deliveries_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["activity_id"],
            ["activity.id"],
            name=op.f("fk_deliveries_activity_id_activity"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "webhook_id", "activity_id", name=op.f("uq_deliveries_webhook_id_activity_id")
        ),
    )
    op.create_index(op.f("ix_deliveries_status_next_at"), "deliveries", ["status", "next_at"])
    alerts = sa.table("alerts", sa.column("state", sa.String(16)))
    op.execute(alerts.update().where(alerts.c.state == "resolved").values(state="cleared"))


def downgrade() -> None:
    alerts = sa.table("alerts", sa.column("state", sa.String(16)))
    op.execute(alerts.update().where(alerts.c.state.in_(["cleared"])).values(state="resolved"))
    op.drop_index(op.f("ix_deliveries_status_next_at"), table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_table("webhooks")
    op.drop_index(op.f("ix_activity_alert_id"), table_name="activity")
    op.drop_table("activity")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index(batch.f("ix_alerts_state_severity"))
        batch.drop_constraint(batch.f("fk_alerts_silence_id_silences"), type_="foreignkey")
        for name in (
            "silence_id", "false_alarm", "assignee", "resolved_by", "resolved_at",
            "acknowledged_by",
        ):  # fmt: skip
            batch.drop_column(name)
    op.drop_index(op.f("ix_silences_until"), table_name="silences")
    op.drop_table("silences")
    op.drop_index(op.f("ix_web_sessions_expires_at"), table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("api_tokens")
    op.drop_table("users")
