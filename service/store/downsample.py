"""Shrink a metric series for plotting without hiding what matters: min/max buckets.

The interior points are cut into equal-width buckets by index; each bucket keeps its smallest and
largest finite value (in step order). The first and last points are always kept, so are the global
extremes (they are some bucket's min or max) and the output is a subsequence of the input.
"""

from __future__ import annotations

import numpy as np

MIN_POINTS = 4  # first + last + at least one bucket's min and max


def min_max_downsample(steps: list[int], values: list[float], max_points: int) -> tuple[list[int], list[float]]:
    """Return at most ``max_points`` (>= 4) points of the series, a subsequence in step order."""
    if max_points < MIN_POINTS:
        raise ValueError(f"max_points must be at least {MIN_POINTS}")
    count = len(steps)
    if count <= max_points:
        return list(steps), list(values)
    kept = _bucket_picks(np.asarray(values[1:-1], dtype=np.float64), (max_points - 2) // 2) + 1
    indices = [0, *kept.tolist(), count - 1]
    return [steps[i] for i in indices], [values[i] for i in indices]


def _bucket_picks(interior: np.ndarray, buckets: int) -> np.ndarray:
    """Sorted unique indices into ``interior``: the first argmin and argmax of each bucket's finite values
    (a bucket with none keeps its first point), computed for all buckets at once."""
    edges = np.linspace(0, len(interior), buckets + 1).astype(np.int64)
    starts = edges[:-1][edges[1:] > edges[:-1]]  # the non-empty buckets
    bucket = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(interior))))
    finite = np.isfinite(interior)
    low = np.where(finite, interior, np.inf)
    high = np.where(finite, interior, -np.inf)
    lowest = _first_in_bucket(low == np.minimum.reduceat(low, starts)[bucket], bucket)
    highest = _first_in_bucket(high == np.maximum.reduceat(high, starts)[bucket], bucket)
    return np.unique(np.concatenate([lowest, highest]))


def _first_in_bucket(hit: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """Index of the first True of ``hit`` within each bucket (every bucket has one)."""
    index = np.flatnonzero(hit)
    _, first = np.unique(bucket[index], return_index=True)
    return index[first]
