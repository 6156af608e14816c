"""Gateway identity: registered public keys, and the chain heads of signed batches.

Numbered 0010 so that it did not clash with the revisions other branches added after
0003; merged after the console's `c0003`, so the chain stays one line.

Revision ID: 0010
Revises: c0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "c0003"
branch_labels = None
depends_on = None

TIME = sa.Float(precision=53)
GATEWAY = sa.String(length=128)


def upgrade() -> None:
    op.create_table(
        "gateway_keys",
        sa.Column("gateway_id", GATEWAY, nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("added_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("gateway_id", "key_id", name=op.f("pk_gateway_keys")),
    )
    op.create_table(
        "chain_heads",
        sa.Column("gateway_id", GATEWAY, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("gateway_id", "seq", name=op.f("pk_chain_heads")),
    )


def downgrade() -> None:
    op.drop_table("chain_heads")
    op.drop_table("gateway_keys")
