"""Read-only API tokens, webhook deliveries seen (replay guard), and usage errors.

The ``errors`` column of ``usage`` may come from another migration of the same release
(the router's); it is added here only when missing, so either order works.

Revision ID: 0002_ops
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_ops"
down_revision = "0002_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.String(128), primary_key=True),
        sa.Column("received_at", sa.Float, nullable=False, index=True),
    )
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("usage")}
    if "errors" not in columns:
        with op.batch_alter_table("usage") as batch:
            batch.add_column(sa.Column("errors", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("api_tokens")
