"""``mmae train`` / ``mmae eval``: one-line errors with exit status 2, and a tiny successful run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmae.cli import add_train_commands, load_config, main, parse_overrides
from mmae.metrics_file import read_metrics
from tests.tiny_config import tiny


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny(steps=4, checkpoint_every=2, **{"monitor.every": 2})))
    return path


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err.strip()


def test_missing_config_file(capsys, tmp_path):
    assert "not found" in _error_line(capsys, ["train", str(tmp_path / "nope.yaml")])


def test_unparsable_yaml_names_the_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: mmae\nloss: {mu: [1\n")
    assert "cannot parse" in _error_line(capsys, ["train", str(bad)])


def test_yaml_that_is_not_a_mapping(capsys, tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    assert "mapping" in _error_line(capsys, ["train", str(bad)])


def test_unknown_field_in_file_is_named(capsys, tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("loss:\n  tcr_lambdaa: 0.1\n")
    assert "loss.tcr_lambdaa" in _error_line(capsys, ["train", str(bad)])


def test_invalid_override_value_is_named(capsys, config_file):
    line = _error_line(capsys, ["train", str(config_file), "--set", "optim.lr=-1"])
    assert "optim.lr" in line


def test_unknown_override_key_is_named(capsys, config_file):
    assert "optim.nope" in _error_line(capsys, ["train", str(config_file), "--set", "optim.nope=1"])


def test_override_without_equals(capsys, config_file):
    assert "KEY=VALUE" in _error_line(capsys, ["train", str(config_file), "--set", "loss.mu"])


def test_missing_dataset_root_is_one_line(capsys, config_file, tmp_path):
    argv = [
        "train",
        str(config_file),
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        "data.dataset=cifar10",
        "--set",
        f"data.root={tmp_path / 'absent'}",
    ]
    assert "absent" in _error_line(capsys, argv)


def test_eval_without_checkpoint(capsys, tmp_path):
    assert "no checkpoint" in _error_line(capsys, ["eval", str(tmp_path)])


def test_overrides_are_yaml_scalars():
    parsed = parse_overrides(["loss.mu=3", "optim.grad_clip=0.5", "eval.enabled=false", "data.root=/x"])
    assert parsed == {"loss.mu": 3, "optim.grad_clip": 0.5, "eval.enabled": False, "data.root": "/x"}


def test_load_config_applies_overrides(config_file):
    config = load_config(config_file, ["optim.lr=1e-3", "model.depth=3"])
    assert config.optim.lr == 0.001 and config.model.depth == 3 and config.method == "mmae"


def test_a_higher_layer_can_add_subcommands():
    parser = argparse.ArgumentParser(prog="outer")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_commands(subparsers)
    subparsers.add_parser("serve")
    args = parser.parse_args(["train", "c.yaml", "--set", "a=1", "--set", "b=2"])
    assert args.overrides == ["a=1", "b=2"] and callable(args.handler)
    assert parser.parse_args(["serve"]).command == "serve"


@pytest.mark.slow
def test_train_then_eval_a_tiny_run(capsys, config_file, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", str(config_file), "--run-dir", str(run_dir), "--set", "loss.tcr_lambda=0.1"]) == 0
    out = capsys.readouterr().out
    assert "eval/linear_top1" in out and str(run_dir) in out
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["loss"]["tcr_lambda"] == 0.1
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    records = read_metrics(run_dir / "metrics.jsonl")
    losses = [r["metrics"]["train/loss"] for r in records if "train/loss" in r.get("metrics", {})]
    assert len(losses) == 4
    assert [r["step"] for r in records if "checkpoint" in r] == [2, 4]
    assert records[-1]["status"] == "finished"

    assert main(["eval", str(run_dir)]) == 0
    results = json.loads((run_dir / "eval.json").read_text())
    assert 0.0 <= results["eval/linear_top1"] <= 1.0 and "eval/knn_top5" in capsys.readouterr().out


@pytest.mark.slow
def test_console_error_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  patch_size: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mmae.cli", "train", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "patch_size" in proc.stderr
