"""Fast start: what the worker entrypoint imports before its first heartbeat. MLflow (imported by the
reporter's MLflow sender once the run is known), matplotlib (the final plot) and PostgreSQL's dialect (a
SQLite deployment never needs it) stay out; torch comes after the first heartbeat."""

from __future__ import annotations

import json
import subprocess
import sys

LATE = ("mlflow", "matplotlib", "torch", "sqlalchemy.dialects.postgresql")


def test_the_worker_entrypoint_imports_nothing_it_needs_only_later() -> None:
    probe = f"import json, sys, workers.run; print(json.dumps([m for m in {LATE!r} if m in sys.modules]))"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(output) == []
