"""The service's one clock: timezone-aware UTC, stored as such (PostgreSQL) or as naive UTC (SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware UTC (workers, below the service, read their own)."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time as timezone-aware UTC: SQLite hands back naive datetimes, and ours are all UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
