"""Min/max bucket downsampling keeps the shape of a series: first, last, extremes, order."""

from __future__ import annotations

import math
import random

import pytest

from service.store.downsample import min_max_downsample


def random_series(rng: random.Random, count: int) -> tuple[list[int], list[float]]:
    steps = sorted(rng.sample(range(count * 3), count))
    values = [rng.gauss(0, 1) * (1 + i % 7) for i in range(count)]
    return steps, values


@pytest.mark.parametrize("seed", range(25))
def test_properties_hold_on_random_series(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randint(1, 5000)
    max_points = rng.randint(4, 600)
    steps, values = random_series(rng, count)
    out_steps, out_values = min_max_downsample(steps, values, max_points)
    assert len(out_steps) == len(out_values)
    assert len(out_steps) <= max_points
    assert out_steps[0] == steps[0] and out_steps[-1] == steps[-1]
    assert out_values[0] == values[0] and out_values[-1] == values[-1]
    assert out_steps == sorted(set(out_steps)), "a strictly increasing subsequence"
    by_step = dict(zip(steps, values, strict=True))
    assert all(by_step[s] == v for s, v in zip(out_steps, out_values, strict=True))
    assert min(out_values) == min(values) and max(out_values) == max(values)


def test_short_series_are_returned_whole() -> None:
    assert min_max_downsample([1, 2, 3], [3.0, 1.0, 2.0], 4) == ([1, 2, 3], [3.0, 1.0, 2.0])


def test_a_spike_survives_heavy_downsampling() -> None:
    steps = list(range(100_000))
    values = [0.0] * 100_000
    values[31_337] = 1e6
    values[77_777] = -5.0
    out_steps, out_values = min_max_downsample(steps, values, 10)
    assert len(out_steps) <= 10
    assert 31_337 in out_steps and 77_777 in out_steps
    assert max(out_values) == 1e6 and min(out_values) == -5.0


def test_non_finite_values_do_not_hide_extremes() -> None:
    values = [1.0, math.nan, 7.0, math.inf, -3.0, math.nan, 2.0] * 200
    steps = list(range(len(values)))
    _, out_values = min_max_downsample(steps, values, 20)
    finite = [v for v in out_values if math.isfinite(v)]
    assert max(finite) == 7.0 and min(finite) == -3.0


def test_rejects_too_small_budgets() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        min_max_downsample([1, 2, 3, 4, 5], [1.0] * 5, 3)
