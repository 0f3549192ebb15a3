"""The task's heartbeat: when the run working on a running task last said it was alive, so the
dispatch tick can tell a run whose worker died (with its code server or host) from a slow one.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orch_tasks") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("orch_tasks") as batch:
        batch.drop_column("heartbeat_at")
