"""Channels between projects: every post, delivery to a task and refusal, in one ledger.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orch_channel_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("publisher", sa.String(63), nullable=False),
        sa.Column("channel", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("task", sa.String(32)),
        sa.Column("commit", sa.String(64)),
        sa.Column("body", sa.Text),
        sa.Column("upto", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_orch_channel_events_channel", "orch_channel_events", ["publisher", "channel"]
    )


def downgrade() -> None:
    op.drop_index("ix_orch_channel_events_channel", "orch_channel_events")
    op.drop_table("orch_channel_events")
