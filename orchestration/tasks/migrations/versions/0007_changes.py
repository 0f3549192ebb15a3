"""Change sets: one change across several projects, a task per member (the tasks share the
change's id as their session), verified together and delivered all or none.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orch_changes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("projects", sa.Text, nullable=False),
        sa.Column("verified", sa.Boolean),
        sa.Column("verification", sa.Text),
        sa.Column("verified_at", sa.DateTime(timezone=True)),
        sa.Column("delivered_to", sa.String(16)),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("delivery_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("orch_changes")
