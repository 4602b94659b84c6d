"""Shape stored rows (ORM entities, or the job list's plain rows) into the API's response models, with
metric values JSON can carry (NaN as null) and the collapse alarm's rule; pure functions, the routes load
the rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from mmae.finite import finite_numbers, finite_or_none
from service.schemas import (
    AttemptOut,
    Collapse,
    JobOut,
    JobSummary,
    Progress,
    Resources,
    Series,
    SweepOut,
    SweepRow,
    SweepTable,
)
from service.settings import Settings
from service.store.downsample import min_max_downsample
from service.store.job_queries import NewestRanks, ProgressRow
from service.store.models import AttemptProgress, Job, Sweep
from service.store.series import SeriesData
from service.store.states import JobStatus

# Shown in the sweep table for cells still running (finished cells show their summary).
LIVE_METRICS: tuple[str, ...] = ("train/loss", "info/erank", "probe/online_top1")


def mlflow_url(settings: Settings, run_id: str | None) -> str | None:
    if not run_id or not settings.mlflow_ui_url:
        return None
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/runs/{run_id}"


def progress_of(job: Job | Row, row: AttemptProgress | ProgressRow | None) -> Progress:
    if row is None:
        phase = "done" if job.status == JobStatus.SUCCEEDED else str(job.status)
        return Progress(step=0, total_steps=int((job.params or {}).get("steps") or 0), phase=phase)
    return Progress(step=row.step, total_steps=row.total_steps, phase=row.phase)


def job_summary(
    job: Job | Row, progress: AttemptProgress | ProgressRow | None, ranks: NewestRanks, settings: Settings
) -> JobSummary:
    return JobSummary(
        **_summary_fields(job, progress, settings),
        collapse=collapse_of(progress, ranks, settings.collapse_fraction),
    )


def job_out(job: Job, progress: AttemptProgress | None, ranks: NewestRanks, settings: Settings) -> JobOut:
    return JobOut(
        **_summary_fields(job, progress, settings),
        config=job.config,
        attempts=[AttemptOut.model_validate(attempt) for attempt in job.attempts],
        collapse=collapse_of(progress, ranks, settings.collapse_fraction),
    )


def collapse_of(progress: AttemptProgress | ProgressRow | None, ranks: NewestRanks, fraction: float) -> Collapse:
    """The collapse alarm of a run from its newest effective ranks and the [B, d] its monitor measures.

    Collapse means the representations vary in only a handful of the directions open to them: B
    centred features of width d span at most min(B - 1, d), so the alarm is relative to that bound,
    not to d alone. It reads the centred effective rank because a shared mean direction keeps the
    uncentred one (the paper's Def. 5.1, shown beside it) near 1 on healthy MAE features.
    """
    run_info = (progress.run_info or {}) if progress is not None else {}
    batch, dim = run_info.get("batch_size"), run_info.get("feature_dim")
    bound = min(batch - 1, dim) if batch and dim else None
    erank, centered = (finite_or_none(value) for value in ranks)
    facts = Collapse(
        erank=erank, erank_centered=centered, batch_size=batch, feature_dim=dim, rank_bound=bound, fraction=fraction
    )
    if centered is None or bound is None:
        return facts
    threshold = fraction * bound
    return facts.model_copy(update={"threshold": threshold, "collapsed": centered < threshold})


def _summary_fields(
    job: Job | Row, progress: AttemptProgress | ProgressRow | None, settings: Settings
) -> dict[str, Any]:
    summary = job.summary or (progress.summary if progress is not None else None)
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "method": job.method,
        "config_hash": job.config_hash,
        "priority": job.priority,
        "max_retries": job.max_retries,
        "retries_used": job.retries_used,
        "resources": Resources(
            num_cpus=job.num_cpus, num_gpus=job.num_gpus, workers=job.workers, placement=job.placement
        ),
        "tags": job.tags or [],
        "sweep_id": job.sweep_id,
        "cell_params": job.cell_params,
        "params": job.params or {},
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": progress_of(job, progress),
        "summary": finite_numbers(summary),
        "error": job.error,
        "mlflow_run_id": job.mlflow_run_id,
        "mlflow_url": mlflow_url(settings, job.mlflow_run_id),
        "owner": job.owner,
    }


def sweep_out(sweep: Sweep, counts: dict[str, int], settings: Settings) -> SweepOut:
    return SweepOut(
        id=sweep.id,
        name=sweep.name,
        strategy=sweep.strategy,
        parameters=sweep.parameters,
        base_config=sweep.base_config,
        num_samples=sweep.num_samples,
        max_concurrency=sweep.max_concurrency,
        tags=sweep.tags or [],
        created_at=sweep.created_at,
        counts=counts,
        total=sum(counts.values()),
        mlflow_parent_run_id=sweep.mlflow_parent_run_id,
        mlflow_url=mlflow_url(settings, sweep.mlflow_parent_run_id),
        owner=sweep.owner,
    )


def series_out(data: SeriesData, max_points: int | None = None) -> Series:
    """A series for JSON, downsampled to ``max_points`` when given."""
    steps, values = data.steps, data.values
    if max_points is not None:
        steps, values = min_max_downsample(steps, values, max_points)
    return Series(steps=steps, values=[finite_or_none(value) for value in values])


def sweep_table(
    sweep: Sweep, jobs: list[Job], progress: dict[int, AttemptProgress], live: dict[int, dict[str, float]]
) -> SweepTable:
    """One row per cell: parameter values, status, progress, metrics (live values, then the summary's)."""
    rows = [
        SweepRow(
            job_id=job.id,
            name=job.name,
            params=job.cell_params or {},
            status=job.status,
            progress=progress_of(job, progress.get(job.id)),
            metrics=finite_numbers(live.get(job.id, {}) | (job.summary or {})),
        )
        for job in jobs
    ]
    names = {name for row in rows for name in row.metrics}
    metrics = sorted(names, key=lambda name: (not name.startswith("eval/"), name))
    return SweepTable(parameters=list(sweep.parameters), metrics=metrics, rows=rows)
