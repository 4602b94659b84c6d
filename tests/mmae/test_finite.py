"""NaN and the infinities become None on their way to JSON; every other number passes unchanged."""

from __future__ import annotations

import json
import math

from mmae.finite import finite_numbers, finite_or_none


def test_finite_or_none_keeps_finite_numbers_only() -> None:
    assert [finite_or_none(value) for value in (1.5, 0.0, -2.0, math.nan, math.inf, -math.inf, None)] == [
        1.5,
        0.0,
        -2.0,
        None,
        None,
        None,
        None,
    ]


def test_finite_numbers_keeps_numbers_as_floats_and_writes_strict_json() -> None:
    values = {"loss": 0.5, "step": 3, "erank": math.nan, "js": -math.inf, "done": True, "phase": "eval"}
    clean = finite_numbers(values)
    assert clean == {"loss": 0.5, "step": 3.0, "erank": None, "js": None}
    assert isinstance(clean["step"], float)
    assert json.loads(json.dumps(clean, allow_nan=False)) == clean
    assert finite_numbers(None) == {}
