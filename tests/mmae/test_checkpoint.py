"""Checkpoint files: atomic publication, last.pt tracking the newest, RNG round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mmae.checkpoint import capture_rng, last_checkpoint, load_checkpoint, restore_rng, save_checkpoint


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(()).item()


def test_save_publishes_step_file_and_last(tmp_path):
    assert last_checkpoint(tmp_path) is None
    first = save_checkpoint(tmp_path, 10, {"step": 10, "w": torch.arange(3)})
    second = save_checkpoint(tmp_path, 20, {"step": 20, "w": torch.arange(4)})
    assert first.name == "step_00000010.pt" and second.name == "step_00000020.pt"
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.pt"
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 20
    assert load_checkpoint(first)["step"] == 10
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "last.pt",
        "step_00000010.pt",
        "step_00000020.pt",
    ]


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path):
    save_checkpoint(tmp_path, 1, {"step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, 2, {"step": 2, "bad": Unpicklable()})
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "step_00000001.pt"]


def test_rng_state_round_trips_through_a_checkpoint_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint(tmp_path, 0, {"rng": capture_rng()})
    expected = [_draw() for _ in range(3)]
    restore_rng(load_checkpoint(last_checkpoint(tmp_path))["rng"])
    assert [_draw() for _ in range(3)] == expected


def test_checkpoints_load_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path, 5, {"rng": capture_rng(), "config": {"a": [1, None]}})
    state = torch.load(path, weights_only=True)
    assert state["config"] == {"a": [1, None]}


def test_only_the_newest_checkpoints_are_kept(tmp_path) -> None:
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert names == ["step_00000030.pt", "step_00000040.pt"]
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 40


def test_a_vetoed_checkpoint_leaves_the_final_names_untouched(tmp_path) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1})

    def refuse() -> None:
        raise PermissionError("no longer the current writer")

    with pytest.raises(PermissionError, match="current writer"):
        save_checkpoint(tmp_path, 2, {"step": 2}, before_publish=refuse)
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "step_00000001.pt"]


def test_the_veto_runs_once_the_bytes_are_complete(tmp_path) -> None:
    seen = []

    def look() -> None:
        temporary = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]
        seen.append(load_checkpoint(temporary[0])["step"])

    save_checkpoint(tmp_path, 3, {"step": 3}, before_publish=look)
    assert seen == [3]
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 3
