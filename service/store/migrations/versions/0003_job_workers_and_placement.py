"""jobs.workers and jobs.placement: a job trains on several data-parallel workers

``num_cpus`` and ``num_gpus`` now mean per worker; a job holds ``workers`` times them. The columns
come with server defaults, so jobs stored before this revision read as one worker packed ("pack"),
which is what they ran as.

Revision ID: 0003
Revises: 0002
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the columns; existing jobs get one worker, packed."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workers", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("placement", sa.String(length=16), server_default="pack", nullable=False))


def downgrade() -> None:
    """Drop the columns (every job reads as one worker again)."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("placement")
        batch_op.drop_column("workers")
