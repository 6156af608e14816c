"""Model uploads are numbered per (gateway, step): the serial the cloud signs into each
chunk's header, so that a gateway refuses an older upload replayed to it (issue 9).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No backfill: uploads before this revision carried no serial (NULL).
    with op.batch_alter_table("model_uploads", recreate="never") as batch:
        batch.add_column(sa.Column("serial", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_uploads", recreate="never") as batch:
        batch.drop_column("serial")
