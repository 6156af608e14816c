"""Alert episodes the cloud closes because the gateway no longer holds them (issue 11).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


# recreate="never": SQLite adds and drops plain columns in place (3.35+); recreating
# `alerts` would drop it, and with it the activity that cascades.


def upgrade() -> None:
    # No backfill: no episode was closed this way before this revision.
    with op.batch_alter_table("alerts", recreate="never") as batch:
        batch.add_column(sa.Column("closed_by", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("close_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts", recreate="never") as batch:
        for name in ("close_reason", "closed_by"):
            batch.drop_column(name)
