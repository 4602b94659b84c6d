"""The rows a worker writes: metric points and attempt progress.

These two tables, and the two columns a worker reads (its attempt's ``status``, for the fence in
``workers.fence``; its job's ``mlflow_run_id``, in ``workers.attempt``), are the whole contract between a
running worker and the control plane. The service maps the tables into its ORM (``service.store.models``)
and reads them; only workers write them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from mmae.finite import finite_or_none

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row per (job, metric name, step). A retried or resumed attempt that re-emits a step
# overwrites the row (upsert), so a series never loses or doubles a point.
metric_points = Table(
    "metric_points",
    metadata,
    Column("job_id", Integer, primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("value", Double, nullable=False),
    Column("attempt_id", Integer, nullable=False),
    Column("logged_at", DateTime(timezone=True), nullable=False),
)
Index("ix_metric_points_job_step", metric_points.c.job_id, metric_points.c.step)

# One row per attempt, upserted by the worker's reporter as training advances.
attempt_progress = Table(
    "attempt_progress",
    metadata,
    Column("attempt_id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False, index=True),
    Column("step", BigInteger, nullable=False, default=0),
    Column("total_steps", BigInteger, nullable=False, default=0),
    Column("phase", String(64), nullable=False, default="starting"),  # starting|training|evaluating|done
    Column("last_checkpoint_step", BigInteger, nullable=True),
    Column("run_info", JSON, nullable=True),  # RunInfo as sent to on_train_start
    Column("summary", JSON, nullable=True),  # TrainResult.summary when the attempt finished
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)


def json_finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (at any depth) replaced by None: JSON has no spelling for them,
    and PostgreSQL's json type rejects the ``NaN`` Python would write."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {key: json_finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_finite(item) for item in value]
    return value
