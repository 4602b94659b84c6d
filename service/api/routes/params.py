"""Path, query and header parameters shared by several routers (bounded so no value can overflow a column)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path, Query

from service.store.downsample import MIN_POINTS

MAX_ID = 2**31 - 1

JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
SweepId = Annotated[int, Path(ge=1, le=MAX_ID)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", pattern=r"^[\x21-\x7e]{1,200}$")]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10**9)]
MaxPoints = Annotated[int, Query(ge=MIN_POINTS, le=100_000)]
SinceStep = Annotated[int | None, Query(ge=-1, le=2**62)]
