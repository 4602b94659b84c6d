"""Numbers as JSON can carry them: NaN and the infinities become None (``null``).

JSON has no spelling for them (Python's ``json`` would write the non-standard ``NaN``, which browsers and
PostgreSQL's json type refuse), yet a diverging run produces them. Every layer that writes metrics to
JSON (``metrics.jsonl``, the workers' progress rows, the API's responses, the sweep report) goes
through ``finite_or_none``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def finite_or_none(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None."""
    return value if value is not None and math.isfinite(value) else None


def finite_numbers(values: Mapping[str, object] | None) -> dict[str, float | None]:
    """The numeric entries of ``values`` as floats, NaN and infinities as None; other entries (bools
    included) are left out."""
    return {
        name: finite_or_none(float(value))
        for name, value in (values or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
