"""Provider accounts' pauses: an account whose usage limit was hit is closed until its reset
(plus a grace), then tried through one canary slot.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orch_providers",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text),
        sa.Column("window", sa.String(64)),
        sa.Column("source_task", sa.String(64)),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("backoff_s", sa.Float, nullable=False, server_default="0"),
        sa.Column("actor", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("orch_providers")
