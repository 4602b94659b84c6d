"""The local commands: ``mmae train CONFIG.yaml [--set key=value ...] [--run-dir DIR]`` and ``mmae eval RUN_DIR``.

The ``mmae`` console script is ``service.cli:main``, which registers these next to the control-plane
commands through ``add_train_commands``; ``python -m mmae.cli`` runs them alone. Bad input (a missing
file, unparsable YAML, an unknown or invalid config field, missing dataset files) prints one line naming
the problem and exits with status 2, never a traceback. Torch and the training code are imported only
when a command runs, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mmae.callbacks import Callback, RunInfo
from mmae.config import TrainConfig, apply_overrides

EXIT_USAGE = 2


class CliError(Exception):
    """A user-input problem; its message is printed as one line and the command exits with status 2."""


def describe_validation_error(error: ValidationError) -> str:
    """One line naming the first offending field, e.g. ``invalid config field 'optim.lr': ...``."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"unknown config field '{field}'{more}"
    return f"invalid config field '{field}': {message}{more}" if field else f"invalid config: {message}{more}"


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["loss.mu=3", "data.root=/x"]`` -> ``{"loss.mu": 3, "data.root": "/x"}`` (values as YAML scalars)."""
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise CliError(f"--set {key}: cannot parse value '{raw}' as YAML") from error
    return overrides


def load_config(path: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config file, apply ``--set`` overrides and validate; raises ``CliError`` on bad input."""
    if not path.is_file():
        raise CliError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CliError(f"cannot parse {path}{where}: {getattr(error, 'problem', None) or error}") from error
    if not isinstance(data, dict):
        raise CliError(f"{path} must hold a mapping of config sections, got {type(data).__name__}")
    try:
        return apply_overrides(TrainConfig.model_validate(data), parse_overrides(overrides))
    except ValidationError as error:
        raise CliError(describe_validation_error(error)) from error
    except ValueError as error:
        raise CliError(str(error)) from error


class _InterruptStop(Callback):
    """While installed, the first Ctrl-C asks ``fit`` to checkpoint and stop; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    def should_stop(self) -> bool:
        return self.requested

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route SIGINT here for the duration (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self.handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class _Started(Callback):
    """Remembers whether training began: errors before that are input errors (data files, device)."""

    def __init__(self) -> None:
        self.started = False

    def on_train_start(self, info: RunInfo) -> None:
        self.started = True


def train_command(args: argparse.Namespace) -> int:
    """``mmae train``: train with a progress bar, write metrics.jsonl + config.yaml; print the summary."""
    from mmae.metrics_file import MetricsFile
    from mmae.progress import ProgressBar
    from mmae.train import fit

    config = load_config(args.config, args.overrides)
    run_dir = args.run_dir or Path("runs") / f"{args.config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    started, interrupt = _Started(), _InterruptStop()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        callbacks = [started, MetricsFile(run_dir / "metrics.jsonl"), ProgressBar(), interrupt]
        with interrupt.installed():
            result = fit(config, run_dir, callbacks)
    except (OSError, ValueError) as error:
        if started.started:
            raise
        raise CliError(str(error).splitlines()[0]) from error
    print(f"run dir: {run_dir}")
    if result.stopped_early:
        print(f"stopped early at step {result.final_step}; resume with --run-dir {run_dir}")
    _print_metrics(result.summary)
    return 0


def eval_command(args: argparse.Namespace) -> int:
    """``mmae eval RUN_DIR``: evaluate the run's last checkpoint, print and save ``eval.json``."""
    from mmae.checkpoint import last_checkpoint
    from mmae.evaluate import evaluate_checkpoint

    path = last_checkpoint(args.run_dir)
    if path is None:
        raise CliError(f"no checkpoint found: {args.run_dir / 'checkpoints' / 'last.pt'}")
    try:
        results = evaluate_checkpoint(path)
    except (OSError, ValueError) as error:
        raise CliError(str(error).splitlines()[0]) from error
    (args.run_dir / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    _print_metrics(results)
    return 0


def _print_metrics(metrics: dict[str, float]) -> None:
    width = max((len(name) for name in metrics), default=0)
    for name in sorted(metrics):
        print(f"{name:<{width}}  {metrics[name]:.6g}")


def guard_cli_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command handler: a ``CliError`` becomes one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CliError as error:
            print(f"mmae: error: {error}", file=sys.stderr)
            return EXIT_USAGE

    return run


def add_train_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``eval``; each sets ``handler(args) -> exit status`` as a default."""
    train = subparsers.add_parser("train", help="pretrain locally from a YAML config")
    train.add_argument("config", type=Path, help="YAML file of TrainConfig sections")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a dotted config field, e.g. --set loss.mu=3 (repeatable)",
    )
    train.add_argument("--run-dir", type=Path, help="checkpoints + metrics.jsonl go here; resumes if present")
    train.set_defaults(handler=guard_cli_errors(train_command))
    evaluate = subparsers.add_parser("eval", help="evaluate the last checkpoint of a run directory")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.set_defaults(handler=guard_cli_errors(eval_command))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mmae.cli`` (``train`` and ``eval`` only); returns the exit status."""
    parser = argparse.ArgumentParser(prog="mmae", description="Matrix-information self-supervised learning")
    add_train_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
