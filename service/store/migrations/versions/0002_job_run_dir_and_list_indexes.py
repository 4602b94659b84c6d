"""jobs.run_dir_name (a run directory unique to each job); jobs.params, jobs.linear_top1 and (key, id)
indexes for the job list

Existing jobs keep the directory they had (``job-<id>``); new jobs get ``job-<id>-<random>`` at
their first start, so a job whose id a reset database reuses never resumes an older job's checkpoint.
The single-column indexes on status, method and priority become (key, id) indexes, and name gets
one: the job list sorts by a key then id, and reads a page from the index instead of sorting.
``linear_top1`` copies the summary's ``eval/linear_top1`` into a column (filled from the summaries
already stored), so sorting by it no longer parses every row's JSON; ``params`` holds a job's key
parameters (``service.store.run_params.key_params``, computed here for the jobs already stored), so the list
no longer reads every job's full config.

Revision ID: 0002
Revises: 0001
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from service.store.run_params import key_params


revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KEYS = ("status", "method", "priority")


def upgrade() -> None:
    """Add the columns (jobs that already exist keep ``job-<id>``) and the (key, id) indexes."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_dir_name", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("linear_top1", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=True))
        for key in KEYS:
            batch_op.drop_index(f"ix_jobs_{key}")
            batch_op.create_index(f"ix_jobs_{key}_id", [key, "id"], unique=False)
        batch_op.create_index("ix_jobs_name_id", ["name", "id"], unique=False)
    op.execute("UPDATE jobs SET run_dir_name = 'job-' || CAST(id AS VARCHAR(20))")
    jobs = sa.table("jobs", sa.column("summary", sa.JSON), sa.column("linear_top1", sa.Float))
    op.execute(jobs.update().values(linear_top1=jobs.c.summary["eval/linear_top1"].as_float()))
    _fill_params()


def _fill_params() -> None:
    """Compute ``params`` of the jobs already stored, a batch at a time."""
    jobs = sa.table(
        "jobs", sa.column("id", sa.Integer), sa.column("method", sa.String), sa.column("config", sa.JSON),
        sa.column("cell_params", sa.JSON), sa.column("params", sa.JSON),
    )
    connection, last_id = op.get_bind(), -1
    columns = sa.select(jobs.c.id, jobs.c.method, jobs.c.config, jobs.c.cell_params).order_by(jobs.c.id)
    while batch := connection.execute(columns.where(jobs.c.id > last_id).limit(1000)).all():
        connection.execute(
            jobs.update().where(jobs.c.id == sa.bindparam("job_id")).values(params=sa.bindparam("job_params")),
            [{"job_id": row.id, "job_params": key_params(row.method, row.config, row.cell_params)} for row in batch],
        )
        last_id = batch[-1].id


def downgrade() -> None:
    """Drop the columns and go back to single-column indexes (jobs go back to ``job-<id>``)."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_name_id")
        for key in KEYS:
            batch_op.drop_index(f"ix_jobs_{key}_id")
            batch_op.create_index(f"ix_jobs_{key}", [key], unique=False)
        batch_op.drop_column("params")
        batch_op.drop_column("linear_top1")
        batch_op.drop_column("run_dir_name")
