"""Request and response bodies of the REST API (pydantic), kept apart from the ORM models.

Request models reject unknown fields, so a typo is a 422 naming the field instead of a silent default.
Configs are validated by ``mmae.config.TrainConfig`` itself, so their errors point inside the config
(``["body", "config", "loss", "mu"]``).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StringConstraints,
    Tag,
    model_validator,
)

from mmae.config import TrainConfig
from service.store.clock import as_utc

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Label = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:=+/-]{1,64}$")]
Tags = Annotated[list[Label], Field(max_length=32)]
Priority = Annotated[int, Field(ge=-1000, le=1000)]
MaxRetries = Annotated[int, Field(ge=0, le=20)]
# A swept distribution's bounds: past any config field's range, yet integers up to here are exact floats
SweepBound = Annotated[float, Field(ge=-1e15, le=1e15)]
SWEEP_CELL_CEILING = 10_000  # no sweep has more cells, whatever MMAE_MAX_SWEEP_CELLS says: ~4 s of API CPU

# SQLite hands back naive datetimes; every time the API returns is UTC, so say so.
Timestamp = Annotated[datetime, AfterValidator(as_utc)]

SortKey = Literal[
    "created_at", "-created_at", "priority", "-priority", "status", "-status",
    "method", "-method", "name", "-name", "linear_top1", "-linear_top1",
]  # fmt: skip


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # 1e999 parses as inf: refused here


def _cpu_count(value: Any) -> float | str:
    """``"auto"``, or a number of CPUs greater than 0 and at most 1024 (as a float)."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError('should be a number of CPUs or "auto"')
    if not 0 < value <= 1024:  # NaN and infinities fail too
        raise ValueError('should be greater than 0 and at most 1024, or "auto"')
    return float(value)


CpuCount = Annotated[
    float | Literal["auto"], PlainValidator(_cpu_count, json_schema_input_type=float | Literal["auto"])
]


class Resources(RequestModel):
    """What a job asks of the cluster: ``workers`` data-parallel ranks (Ray Train when more than one),
    each holding ``num_cpus`` and ``num_gpus``, placed by ``placement`` (``pack``: as few nodes as
    possible; ``spread``: as many). ``config.data.batch_size`` is the global batch, split evenly over
    the workers. ``num_cpus: "auto"`` (the default) is resolved when the job is submitted
    (``service.scheduling.allocation``): the largest node's CPUs for a CPU job, a fixed number per GPU for a GPU job."""

    num_cpus: CpuCount = "auto"  # per worker
    num_gpus: float = Field(default=0.0, ge=0, le=64)  # per worker
    workers: int = Field(default=1, ge=1, le=256)
    placement: Literal["pack", "spread"] = "pack"


class JobCreate(RequestModel):
    name: Name | None = None
    config: TrainConfig  # partial JSON: unset fields take TrainConfig's defaults
    priority: Priority = 0
    max_retries: MaxRetries = 2
    resources: Resources = Resources()
    tags: Tags = []


class ValuesSpec(RequestModel):
    values: list[Any] = Field(min_length=1, max_length=1000)


class DistributionSpec(RequestModel):
    distribution: Literal["uniform", "log_uniform", "int_uniform"]
    low: SweepBound
    high: SweepBound

    @model_validator(mode="after")
    def _ordered(self) -> DistributionSpec:
        if not self.low < self.high:
            raise ValueError("low must be smaller than high")
        if self.distribution == "log_uniform" and self.low <= 0:
            raise ValueError("log_uniform needs low > 0")
        if self.distribution == "int_uniform" and math.ceil(self.low) > math.floor(self.high):
            raise ValueError("int_uniform needs an integer between low and high")
        return self


def _spec_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "distribution" if "distribution" in value else "values"
    return "distribution" if hasattr(value, "distribution") else "values"


ParameterSpec = Annotated[
    Annotated[ValuesSpec, Tag("values")] | Annotated[DistributionSpec, Tag("distribution")],
    Discriminator(_spec_kind),
]
ParameterPath = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")]


class SweepCreate(RequestModel):
    name: Name
    base_config: TrainConfig = TrainConfig()
    parameters: dict[ParameterPath, ParameterSpec] = Field(min_length=1, max_length=16)
    strategy: Literal["grid", "random"] = "grid"
    num_samples: int | None = Field(default=None, ge=1, le=SWEEP_CELL_CEILING)  # random only
    # random only: the same seed draws the same cells, so resubmitting is idempotent; a 64-bit integer
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    max_concurrency: int | None = Field(default=None, ge=1, le=SWEEP_CELL_CEILING)  # more would never bind
    priority: Priority = 0
    max_retries: MaxRetries = 2
    resources: Resources = Resources()
    tags: Tags = []


class LoginRequest(RequestModel):
    token: str = Field(min_length=1, max_length=200)


class Me(BaseModel):
    """The caller's token: its name, role (admin | user | read), owner, and when its access ends."""

    name: str
    role: str
    owner: str
    expires_at: Timestamp | None


class Health(BaseModel):
    status: Literal["ok", "unavailable"] = "ok"
    database: Literal["ok", "unavailable"]
    ray: Literal["ok", "unavailable"]
    failing: list[str] = []  # the dependencies that are unavailable (503 when any)


class Progress(BaseModel):
    step: int = 0
    total_steps: int = 0
    phase: str = "queued"


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    number: int
    status: str
    ray_submission_id: str | None
    submitted_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    error: str | None


class Collapse(BaseModel):
    """The collapse alarm: the newest ``info/erank_centered`` of the monitored features ``[B, d]`` (Def. 5.1
    effective rank of the l2-normalised features less their batch mean: how many directions they vary in)
    below ``fraction`` x ``rank_bound``, where ``rank_bound = min(B - 1, d)`` is the most it can be.

    ``collapsed`` is None until the run reports a centred effective rank, and for runs that recorded no
    batch size (they predate the centred measure, so the rule does not apply).
    """

    erank: float | None = None  # newest info/erank (Def. 5.1 of the features themselves), for display
    erank_centered: float | None = None  # newest info/erank_centered: what the alarm compares
    batch_size: int | None = None  # B: rows of the monitored matrix (the global batch)
    feature_dim: int | None = None  # d: width of the monitored features
    rank_bound: int | None = None  # min(B - 1, d)
    fraction: float
    threshold: float | None = None  # fraction * rank_bound
    collapsed: bool | None = None


class JobSummary(BaseModel):
    id: int
    name: str
    status: str
    method: str
    config_hash: str
    priority: int
    max_retries: int
    retries_used: int
    resources: Resources
    tags: list[str]
    sweep_id: int | None
    cell_params: dict[str, Any] | None
    params: dict[str, Any]  # the method's key knobs (loss.mu, loss.temperature, ...) plus any sweep cell params
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    progress: Progress
    summary: dict[str, float | None]
    error: str | None
    mlflow_run_id: str | None
    mlflow_url: str | None
    collapse: Collapse  # from the newest info/erank_centered: the runs list flags collapsed runs too
    owner: str | None  # the submitting token's owner; None for jobs from before owners existed


class JobOut(JobSummary):
    config: dict[str, Any]
    attempts: list[AttemptOut]


class JobPage(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int


class Series(BaseModel):
    steps: list[int]
    values: list[float | None]  # null where the value was NaN or infinite


class MetricsOut(BaseModel):
    series: dict[str, Series]


class LogsOut(BaseModel):
    lines: list[str]


class SweepOut(BaseModel):
    id: int
    name: str
    strategy: str
    parameters: dict[str, Any]
    base_config: dict[str, Any]
    num_samples: int | None
    max_concurrency: int | None
    tags: list[str]
    created_at: Timestamp
    counts: dict[str, int]  # job status -> number of cells
    total: int
    mlflow_parent_run_id: str | None
    mlflow_url: str | None
    owner: str | None  # the submitting token's owner; None for sweeps from before owners existed


class SweepPage(BaseModel):
    items: list[SweepOut]
    total: int
    limit: int
    offset: int


class SweepRow(BaseModel):
    job_id: int
    name: str
    params: dict[str, Any]
    status: str
    progress: Progress
    metrics: dict[str, float | None]


class SweepTable(BaseModel):
    parameters: list[str]
    metrics: list[str]
    rows: list[SweepRow]


class RetriedOut(BaseModel):
    retried: list[int]


class ClusterOut(BaseModel):
    resources: dict[str, float]
    available: dict[str, float]
    gpus_busy: float
    gpus_free: float
    queue_length: int
    running: int
    nodes: list[dict[str, Any]]
    ray: Literal["ok", "unavailable"]


class Example(BaseModel):
    name: str
    kind: Literal["job", "sweep"]
    body: dict[str, Any]


class UiSettings(BaseModel):
    collapse_fraction: float
    mlflow_ui_url: str | None
