"""deploy/Dockerfile: the one image of the API, MLflow and the Ray nodes runs unprivileged and carries no secret."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and line[0] != "#"]


def test_every_process_of_the_image_runs_as_a_numeric_unprivileged_user() -> None:
    steps = instructions()
    users = [(index, argument) for index, (name, argument) in enumerate(steps) if name == "USER"]
    assert users, "the image must not run as root"
    last_index, user = users[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), user  # numeric: runAsNonRoot can check it
    assert all(name not in {"RUN", "COPY", "ADD"} for name, _ in steps[last_index:]), "nothing runs as root after USER"
    run = " ".join(argument for name, argument in steps if name == "RUN")
    assert f"useradd --system --uid {uid} " in run
    assert "install -d -o mmae -g mmae -m 0750 /data /mlartifacts" in run  # volumes mounted there start out its own


def test_no_secret_is_baked_into_the_image() -> None:
    for name, argument in instructions():
        if name in {"ENV", "ARG"}:
            assert not re.search(r"TOKEN|PASSWORD|SECRET|AWS_", argument, re.IGNORECASE), argument
    ignored = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"**/.env", "**/*.env", "mmae-data"} <= set(ignored)  # env files and the admin-token file stay out
