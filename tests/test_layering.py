"""Dependencies point one way: mmae <- workers <- service, and inside service
store, cluster <- tracking <- scheduling <- api (the top-level modules are the shared vocabulary)."""

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
    offenders = {str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package]) for path in files}
    offenders = {path: names for path, names in offenders.items() if names}
    assert not offenders, f"{package}/ imports a higher layer: {offenders}"


# service's subpackages, each with the subpackages it may import
SERVICE_LAYERS = {
    "store": set(),
    "cluster": set(),
    "tracking": {"store"},
    "scheduling": {"store", "cluster", "tracking"},
    "api": {"store", "cluster", "tracking", "scheduling"},
}
# top-level service modules every layer may use (settings, schemas, errors, auth, ...) lean on the bottom only;
# the CLI is the outermost entry point and may use anything
SHARED_MAY_IMPORT = {"store", "cluster"}


def imported_service_packages(path: Path) -> set[str]:
    """The service subpackages (``service.<name>``) a module imports, inside functions too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        names.update(module.split(".")[1] for module in modules if module.startswith("service.") and "." in module)
    return names & set(SERVICE_LAYERS)


def test_service_subpackages_import_one_way() -> None:
    service = ROOT / "service"
    assert {path.name for path in service.iterdir() if (path / "__init__.py").is_file()} == set(SERVICE_LAYERS)
    offenders = {}
    for path in sorted(service.rglob("*.py")):
        parts = path.relative_to(service).parts
        if len(parts) == 1:
            allowed = set(SERVICE_LAYERS) if path.name == "cli.py" else SHARED_MAY_IMPORT
        else:
            allowed = SERVICE_LAYERS[parts[0]] | {parts[0]}
        if extra := imported_service_packages(path) - allowed:
            offenders[str(path.relative_to(ROOT))] = sorted(extra)
    assert not offenders, f"service/ subpackages import against the layering: {offenders}"


def test_service_checker_sees_the_subpackage_in_every_import_form(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from service.api import main\nimport service.tracking.tracker\nfrom service import settings\n")
    assert imported_service_packages(module) == {"api", "tracking"}


def test_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import ray.job_submission\n    from mlflow import MlflowClient\n")
    assert imported_roots(module) == {"ray", "mlflow"}


@pytest.mark.slow
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
