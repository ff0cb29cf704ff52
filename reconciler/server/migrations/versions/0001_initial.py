"""Every table of the first version: revisions, assignments, events, restarts, usage, meta.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("revision", sa.String(128), nullable=False, index=True),
        sa.Column("attempted_at", sa.Float, nullable=False),
        sa.Column("applied_at", sa.Float, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("diagnostics", sa.Text, nullable=False, server_default="[]"),
        sa.Column("summary", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "assignments",
        sa.Column("instance_id", sa.String(256), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("worker", sa.String(256), nullable=False),
        sa.Column("gpus", sa.Text, nullable=False, server_default="[]"),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("object", sa.String(256), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "restarts",
        sa.Column("instance_id", sa.String(256), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "usage",
        sa.Column("api_key_name", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "usage", "restarts", "events", "assignments", "revisions"):
        op.drop_table(table)
