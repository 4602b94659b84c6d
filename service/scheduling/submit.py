"""Turn validated job and sweep requests into database rows, idempotently.

Every row records the submitting token's owner. An ``Idempotency-Key`` belongs to the token that sent
it: a create with a key that token already used returns the row it created the first time when the
request is the same (by the digest of the validated request), and is a 409 when it differs. A sweep
resubmitted by the same owner with the same name and the same cells (by config hash) returns the
existing sweep.
Before any row is written, every config (each sweep cell's, after its overrides) is checked: its
global batch must split evenly over the workers, and its ``data.root``, if any, must lie inside the
operator's dataset roots (``service.data_roots``).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

from fastapi import HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mmae.config import TrainConfig, config_hash
from service.auth import Principal
from service.data_roots import DataRoots, root_refusal
from service.errors import validation_error
from service.scheduling.sweeps import Cell
from service.schemas import JobCreate, Resources, SweepCreate
from service.store.models import Job, Sweep
from service.store.run_params import key_params

Row = TypeVar("Row", Job, Sweep)


def create_job(
    session: Session,
    request: JobCreate,
    allocation: Resources,
    idempotency_key: str | None,
    data_roots: DataRoots,
    caller: Principal,
) -> tuple[Job, bool]:
    """Insert a queued job owned by ``caller.owner``; returns ``(job, created)`` (``created`` is False for a
    replayed key; 409 when ``caller`` used the key for a different request).

    ``allocation``: ``request.resources`` with ``num_cpus: "auto"`` resolved (``service.scheduling.allocation``); the
    key compares the request as sent, so a replay matches after the cluster changed size.
    ``data_roots``: ``Settings.data_roots`` (none: only the bundled datasets)."""
    _check_batch_split(request.config, allocation)
    _check_data_root(request.config, data_roots, ("body", "config", "data", "root"))
    key = IdempotencyScope(caller.token_id, idempotency_key, request_digest(request))
    existing = key.replay(session, Job)
    if existing is not None:
        return existing, False
    job = _new_job(
        request.config,
        request.name,
        request.priority,
        request.max_retries,
        allocation,
        request.tags,
        caller.owner,
    )
    key.stamp(job)
    session.add(job)
    return _commit_or_replay(session, job, lambda: key.replay(session, Job))


def create_sweep(
    session: Session,
    request: SweepCreate,
    cells: list[Cell],
    allocation: Resources,
    idempotency_key: str | None,
    data_roots: DataRoots,
    caller: Principal,
) -> tuple[Sweep, bool]:
    """Insert a sweep and one queued job per cell, all owned by ``caller.owner``; returns ``(sweep, created)``
    (409 when ``caller`` used ``idempotency_key`` for a different request).

    ``allocation``: each cell's resources, ``request.resources`` with ``auto`` resolved (as ``create_job``).
    ``data_roots``: ``Settings.data_roots`` (none: only the bundled datasets)."""
    for cell in cells:
        _check_batch_split(cell.config, allocation, cell.params)
        swept = "data.root" in cell.params
        loc = ("body", "parameters", "data.root") if swept else ("body", "base_config", "data", "root")
        _check_data_root(cell.config, data_roots, loc)
    key = IdempotencyScope(caller.token_id, idempotency_key, request_digest(request))
    existing = key.replay(session, Sweep) or _same_sweep(session, request.name, cells, caller.owner)
    if existing is not None:
        return existing, False
    sweep = Sweep(
        name=request.name,
        base_config=request.base_config.model_dump(mode="json"),
        parameters={path: spec.model_dump(mode="json") for path, spec in request.parameters.items()},
        strategy=request.strategy,
        num_samples=request.num_samples,
        max_concurrency=request.max_concurrency,
        tags=list(request.tags),
        owner=caller.owner,
    )
    key.stamp(sweep)
    for cell in cells:
        job = _new_job(
            cell.config,
            _cell_name(request.name, cell.params),
            request.priority,
            request.max_retries,
            allocation,
            request.tags,
            caller.owner,
            cell.params,
        )
        sweep.jobs.append(job)
    session.add(sweep)
    return _commit_or_replay(session, sweep, lambda: key.replay(session, Sweep))


def _check_batch_split(config: TrainConfig, resources: Resources, cell_params: dict[str, object] | None = None) -> None:
    """Raise a 422 at ``resources.workers`` naming both numbers (and the sweep cell's params) when the
    global batch ``config.data.batch_size`` does not split evenly over ``resources.workers`` ranks."""
    batch_size, workers = config.data.batch_size, resources.workers
    if batch_size % workers == 0:
        return
    cell = f"sweep cell {cell_params}: " if cell_params is not None else ""
    raise validation_error(
        ("body", "resources", "workers"),
        f"{cell}config.data.batch_size {batch_size} is not divisible by resources.workers {workers} "
        "(every worker takes an equal share of the global batch)",
    )


def _check_data_root(config: TrainConfig, data_roots: DataRoots, loc: tuple[str, ...]) -> None:
    """Raise a 422 at ``loc`` naming the allowed roots when ``config.data.root`` lies outside them."""
    refusal = root_refusal(config.data.root, data_roots)
    if refusal is not None:
        raise validation_error(loc, refusal)


def _new_job(
    config: TrainConfig,
    name: str | None,
    priority: int,
    max_retries: int,
    resources: Resources,
    tags: list[str],
    owner: str,
    cell_params: dict[str, object] | None = None,
) -> Job:
    digest, dumped = config_hash(config), config.model_dump(mode="json")
    return Job(
        name=name or f"{config.method}-{config.data.dataset}-{digest[:6]}",
        method=config.method,
        config=dumped,
        cell_params=cell_params,
        params=key_params(config.method, dumped, cell_params),
        config_hash=digest,
        priority=priority,
        max_retries=max_retries,
        workers=resources.workers,
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus,
        placement=resources.placement,
        tags=list(tags),
        owner=owner,
    )


def _cell_name(sweep_name: str, params: dict[str, object]) -> str:
    label = ",".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in params.items())
    return f"{sweep_name}/{label}"[:200]


def request_digest(request: BaseModel) -> str:
    """sha256 of the validated request (defaults filled in, keys sorted): equal for the same request."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyScope:
    """An ``Idempotency-Key`` as the token that sent it, with the digest of the request it came with."""

    def __init__(self, token_id: int, key: str | None, digest: str) -> None:
        self.token_id, self.key, self.digest = token_id, key, digest

    def stamp(self, row: Job | Sweep) -> None:
        """Record the key on a new row (nothing without a key)."""
        if self.key:
            row.idempotency_key, row.idempotency_token_id, row.request_digest = self.key, self.token_id, self.digest

    def replay(self, session: Session, model: type[Row]) -> Row | None:
        """The row this token created with this key, None if none; 409 when it came from a different request."""
        if not self.key:
            return None
        row = session.scalar(
            select(model).where(model.idempotency_token_id == self.token_id, model.idempotency_key == self.key)
        )
        if row is not None and row.request_digest != self.digest:
            kind = "job" if model is Job else "sweep"
            raise HTTPException(
                status_code=409,
                detail=f"Idempotency-Key already used by this token for {kind} {row.id} with a different "
                "request; send a new key for a new request",
            )
        return row


def _same_sweep(session: Session, name: str, cells: list[Cell], owner: str) -> Sweep | None:
    """An existing sweep of ``owner`` with this name whose cells are exactly ``cells`` (by config hash)."""
    wanted = {cell.config_hash for cell in cells}
    rows = session.execute(
        select(Job.sweep_id, Job.config_hash)
        .join(Sweep, Sweep.id == Job.sweep_id)
        .where(Sweep.name == name, Sweep.owner == owner)
    )
    hashes: dict[int, set[str]] = defaultdict(set)
    for sweep_id, digest in rows:
        hashes[sweep_id].add(digest)
    match = next((sweep_id for sweep_id, found in sorted(hashes.items()) if found == wanted), None)
    return session.get(Sweep, match) if match is not None else None


def _commit_or_replay(session: Session, row: Row, replay: Callable[[], Row | None]) -> tuple[Row, bool]:
    """Commit ``row``; if a concurrent request won the race on the idempotency key, return its row."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        winner = replay()
        if winner is None:
            raise
        return winner, False
    return row, True
