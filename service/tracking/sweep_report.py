"""Load what a sweep's reproduction report shows (``service.tracking.report`` renders it) and store the page on the
sweep's MLflow parent run as ``report.html``.

Reads reuse the sweep table's queries: each cell's final metrics are its summary over the newest
values of the report's ``info/*`` metrics (``latest_values``), and its curves are ``read_series``
downsampled like the web page's (``series_out``'s min/max buckets).
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmae.finite import finite_numbers
from service.store.downsample import min_max_downsample
from service.store.job_queries import get_sweep
from service.store.models import Job, Sweep
from service.store.series import SeriesData, latest_values, read_series
from service.tracking.report import CURVES, FINALS, ReportCell, SweepReport, render
from service.tracking.tracker import Tracker

log = logging.getLogger(__name__)
CURVE_POINTS = 200  # per cell and metric: enough for a 640-pixel-wide figure
MAX_CURVE_CELLS = 40  # cells whose curves a figure draws; the table always has every cell
REPORT_ARTIFACT = "report.html"


def load_report(session: Session, sweep_id: int) -> str:
    """The report page of sweep ``sweep_id`` (``NotFound`` when there is none)."""
    return render(gather(session, get_sweep(session, sweep_id)))


def gather(session: Session, sweep: Sweep) -> SweepReport:
    """The sweep's cells with their final metrics and (for the first ``MAX_CURVE_CELLS``) their curves."""
    jobs = session.scalars(select(Job).where(Job.sweep_id == sweep.id).order_by(Job.id)).all()
    live = latest_values(session, [job.id for job in jobs], FINALS)
    cells = [
        ReportCell(
            job_id=job.id,
            name=job.name,
            status=str(job.status),
            params=job.cell_params or {},
            config=job.config or {},
            finals=finite_numbers(live.get(job.id, {}) | (job.summary or {})),
            series=_curves(session, job.id) if index < MAX_CURVE_CELLS else {},
        )
        for index, job in enumerate(jobs)
    ]
    return SweepReport(
        sweep_id=sweep.id,
        name=sweep.name,
        tags=sweep.tags or [],
        parameters=list(sweep.parameters),
        base_config=sweep.base_config,
        cells=cells,
        curves_left_out=max(0, len(jobs) - MAX_CURVE_CELLS),
    )


def _curves(session: Session, job_id: int) -> dict[str, SeriesData]:
    return {
        name: SeriesData(*min_max_downsample(data.steps, data.values, CURVE_POINTS))
        for name, data in read_series(session, job_id, CURVES).items()
    }


def store_report(tracker: Tracker, run_id: str | None, html: str) -> None:
    """Log the page on the sweep's parent run; MLflow is secondary, so a failure is logged, never raised."""
    if run_id is None:
        return
    try:
        tracker.log_report(run_id, html, REPORT_ARTIFACT)
    except Exception as error:  # any tracking-server failure
        log.warning("report of MLflow run %s not stored: %s", run_id, error)


def publish_report(session: Session, sweep: Sweep, tracker: Tracker) -> None:
    """Render the report of a sweep whose cells all ended and store it on its parent run."""
    store_report(tracker, sweep.mlflow_parent_run_id, render(gather(session, sweep)))
