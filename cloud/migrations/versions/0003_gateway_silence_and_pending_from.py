"""Gateway silence and in-flight gaps: the health period, `pending_from`, `silent_since`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)


# recreate="never": SQLite adds and drops these plain columns in place (3.35+). Recreating
# `gateways`, as batch mode otherwise may, drops it, and with it every row that cascades.


def upgrade() -> None:
    # No backfill: health records stored before this revision carry neither field.
    with op.batch_alter_table("gateways", recreate="never") as batch:
        batch.add_column(sa.Column("health_every", TIME, nullable=True))
        batch.add_column(sa.Column("pending_from", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("silent_since", TIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateways", recreate="never") as batch:
        for name in ("silent_since", "pending_from", "health_every"):
            batch.drop_column(name)
