"""jobs.run_dir_name (a run directory unique to each job) and (key, id) indexes for the job list

Existing jobs keep the directory they had (``job-<id>``); new jobs get ``job-<id>-<random>`` at
their first start, so a job whose id a reset database reuses never resumes an older job's checkpoint.
The single-column indexes on status, method and priority become (key, id) indexes, and name gets
one: the job list sorts by a key then id, and reads a page from the index instead of sorting.

Revision ID: 0002
Revises: 0001
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KEYS = ("status", "method", "priority")


def upgrade() -> None:
    """Add the column (jobs that already exist keep ``job-<id>``) and the (key, id) indexes."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_dir_name", sa.String(length=64), nullable=True))
        for key in KEYS:
            batch_op.drop_index(f"ix_jobs_{key}")
            batch_op.create_index(f"ix_jobs_{key}_id", [key, "id"], unique=False)
        batch_op.create_index("ix_jobs_name_id", ["name", "id"], unique=False)
    op.execute("UPDATE jobs SET run_dir_name = 'job-' || CAST(id AS VARCHAR(20))")


def downgrade() -> None:
    """Drop the column and go back to single-column indexes (jobs go back to ``job-<id>``)."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_name_id")
        for key in KEYS:
            batch_op.drop_index(f"ix_jobs_{key}_id")
            batch_op.create_index(f"ix_jobs_{key}", [key], unique=False)
        batch_op.drop_column("run_dir_name")
