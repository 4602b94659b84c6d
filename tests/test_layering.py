"""Dependencies point one way: mmae <- workers <- service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "mmae": {"ray", "fastapi", "starlette", "sqlalchemy", "alembic", "mlflow", "service", "workers", "uvicorn"},
    "workers": {"service", "fastapi", "starlette", "uvicorn"},
}


def imported_roots(path: Path) -> set[str]:
    """Top-level package names imported anywhere in a module (including inside functions)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_higher_layers(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package]) for path in files
    }
    offenders = {path: names for path, names in offenders.items() if names}
    assert not offenders, f"{package}/ imports a higher layer: {offenders}"


def test_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import ray.job_submission\n    from mlflow import MlflowClient\n")
    assert imported_roots(module) == {"ray", "mlflow"}


def test_importing_mmae_does_not_load_service_side_packages() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mmae, mmae.config, mmae.info, mmae.losses, mmae.train;"
        "heavy = {'ray', 'fastapi', 'sqlalchemy', 'mlflow'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
