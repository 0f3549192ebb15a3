"""Project lifecycle states with their audit log, where each task's work was delivered, and how
many runs a task was given (an interrupted attempt is not counted, but its run key is used).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orch_project_states",
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project"),
    )
    op.create_table(
        "orch_project_state_log",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_orch_project_state_log_project", "orch_project_state_log", ["project"])
    with op.batch_alter_table("orch_tasks") as batch:
        batch.add_column(sa.Column("delivered_to", sa.String(16)))
        batch.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("delivery_error", sa.Text))
        batch.add_column(sa.Column("dispatches", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("orch_tasks") as batch:
        batch.drop_column("dispatches")
        batch.drop_column("delivery_error")
        batch.drop_column("delivered_at")
        batch.drop_column("delivered_to")
    op.drop_index("ix_orch_project_state_log_project", table_name="orch_project_state_log")
    op.drop_table("orch_project_state_log")
    op.drop_table("orch_project_states")
