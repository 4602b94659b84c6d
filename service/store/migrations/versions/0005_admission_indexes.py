"""Admission indexes: the queue by (status, priority, queued_at, id) and its shapes by (status, num_cpus,
num_gpus, workers), so an admission pass reads a page of the queue, not the whole of it.

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add both indexes."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_queue", ["status", "priority", "queued_at", "id"], unique=False)
        batch_op.create_index("ix_jobs_status_shape", ["status", "num_cpus", "num_gpus", "workers"], unique=False)


def downgrade() -> None:
    """Drop both indexes."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_shape")
        batch_op.drop_index("ix_jobs_queue")
