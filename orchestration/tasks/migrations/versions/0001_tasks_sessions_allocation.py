"""Tasks, agent sessions and allocation overrides: the schema as of commit c1fae76, the last
made with `create_all` (TaskStore made the first two, AllocationOverrides the third).

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tasks(op)
    create_sessions(op)
    create_allocation(op)


def downgrade() -> None:
    op.drop_table("orch_allocation")
    op.drop_table("orch_sessions")
    op.drop_index("ix_orch_tasks_session", table_name="orch_tasks")
    op.drop_index("ix_orch_tasks_status", table_name="orch_tasks")
    op.drop_index("ix_orch_tasks_project", table_name="orch_tasks")
    op.drop_table("orch_tasks")


def create_tasks(operations: Any) -> None:
    operations.create_table(
        "orch_tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("after", sa.Text, nullable=False),
        sa.Column("profile", sa.String(63)),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_key", sa.String(512)),
        sa.Column("session", sa.String(63)),
        sa.Column("dispatched", sa.Boolean, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("branch", sa.String(255)),
        sa.Column("commit", sa.String(64)),
        sa.Column("session_id", sa.String(255)),
        sa.Column("cost_usd", sa.Float),
        sa.Column("duration_s", sa.Float),
        sa.Column("tokens_in", sa.Integer),
        sa.Column("tokens_out", sa.Integer),
        sa.Column("turns", sa.Integer),
        sa.Column("summary", sa.Text),
        sa.Column("extra", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id"),
        # Unnamed, as create_all made it: the database names it the same way then and now.
        sa.UniqueConstraint("source_key"),
    )
    operations.create_index("ix_orch_tasks_project", "orch_tasks", ["project"])
    operations.create_index("ix_orch_tasks_status", "orch_tasks", ["status"])
    operations.create_index("ix_orch_tasks_session", "orch_tasks", ["session"])


def create_sessions(operations: Any) -> None:
    operations.create_table(
        "orch_sessions",
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("task_id", sa.String(32)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project", "profile"),
    )


def create_allocation(operations: Any) -> None:
    """Also called on its own when a database made before migrations lacks the table."""
    operations.create_table(
        "orch_allocation",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
