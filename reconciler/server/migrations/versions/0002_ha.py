"""Several servers on one store: the leader lease row, and a count on events (identical
events are folded into one row).

Revision ID: 0002_ha
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_ha"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "leases",
            sa.column("name", sa.String),
            sa.column("holder", sa.String),
            sa.column("url", sa.String),
            sa.column("epoch", sa.BigInteger),
            sa.column("expires", sa.Float),
        ),
        [{"name": "leader", "holder": "", "url": "", "epoch": 0, "expires": 0.0}],
    )
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("count", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("first_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("first_at")
        batch.drop_column("count")
    op.drop_table("leases")
