"""The paper's empirical claims, checked at digits scale on CPU: ``make reproduce``.

Runs the cells of the shipped paper sweeps (``examples/paper/*.yaml``, expanded as the service expands
them) with ``mmae.train.fit``, once per seed, and judges each claim on the recorded metric series:

- **Fig 4** (``fig4_methods.yaml``): the final effective rank (Def. 5.1, ``info/erank``) of M-MAE above
  MAE's at matched settings, and U-MAE's between them.
- **Figs 1, 2** (``fig1_siamese.yaml`` for Barlow Twins, ``fig3_temperature.yaml``'s temperature 0.5 for
  SimCLR, the same training): the matrix mutual information and joint entropy (alpha = 1, the branches'
  feature correlation matrices, ``info/{mi,joint_entropy}_corr_a1``) higher at the last snapshot than at
  the first (step ``monitor.every``).
- **Fig 3** (``fig3_temperature.yaml``): SimCLR at temperature 0.3 ends with the highest MI and joint
  entropy of 0.3 / 0.5 / 0.7.

A claim holds only if it holds in every seed; the verdict line says in how many it did. Nothing is
asserted: a claim that fails is printed as "did not reproduce at this scale". BYOL (fig1's third cell)
is left out: no claim here is about it. Run: ``python bench/reproduce.py [--seeds 3]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from mmae.callbacks import Callback
from mmae.config import TrainConfig, apply_overrides, config_hash
from mmae.progress import ProgressBar
from mmae.train import fit
from service.scheduling.sweeps import expand
from service.schemas import SweepCreate

PAPER_SWEEPS = Path(__file__).resolve().parent.parent / "examples" / "paper"
MI, JOINT, ERANK = "info/mi_corr_a1", "info/joint_entropy_corr_a1", "info/erank"
COLUMNS = (ERANK, MI, JOINT, "eval/linear_top1", "eval/knn_top1")
Results = dict[tuple[str, int], dict[str, list[float]]]  # (cell label, seed) -> metric -> recorded series


class SeriesRecorder(Callback):
    """Every recorded value of every metric, in step order."""

    def __init__(self) -> None:
        self.series: dict[str, list[float]] = {}

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.series.setdefault(name, []).append(value)


@dataclass(frozen=True)
class Study:
    """The cells of one paper sweep file to run, by the label of what their swept fields set."""

    sweep: str  # file name under examples/paper
    swept: str  # the dotted field whose value labels a cell (besides the seed)
    keep: tuple[object, ...]  # values of ``swept`` to run


STUDIES = (
    Study("fig4_methods.yaml", "method", ("mae", "umae", "mmae")),
    Study("fig1_siamese.yaml", "method", ("barlow_twins",)),
    Study("fig3_temperature.yaml", "loss.temperature", (0.3, 0.5, 0.7)),
)


@dataclass(frozen=True)
class Run:
    label: str  # "fig4 method=mmae"
    seed: int
    config: TrainConfig


def plan(seeds: int) -> list[Run]:
    """Every (cell, seed) of the studies, each configuration once."""
    runs: dict[str, Run] = {}
    for study in STUDIES:
        request = SweepCreate.model_validate(yaml.safe_load((PAPER_SWEEPS / study.sweep).read_text()))
        for cell in expand(request, max_cells=1000):
            value = cell.params.get(study.swept, _field(cell.config, study.swept))
            if value not in study.keep:
                continue
            label = f"{study.sweep.split('_')[0]} {study.swept}={value}"
            for seed in range(seeds):
                config = apply_overrides(cell.config, {"seed": seed})
                runs.setdefault(config_hash(config), Run(label, seed, config))
    return list(runs.values())


def _field(config: TrainConfig, dotted: str) -> object:
    node: object = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def execute(runs: list[Run]) -> Results:
    """Train every run (a progress bar each); returns its recorded series by (label, seed)."""
    results = {}
    started = time.perf_counter()
    for index, run in enumerate(runs, 1):
        print(f"[{index}/{len(runs)}] {run.label} seed={run.seed}", flush=True)
        recorder = SeriesRecorder()
        with tempfile.TemporaryDirectory() as run_dir:
            fit(run.config, Path(run_dir), [recorder, ProgressBar()], resume=False)
        results[(run.label, run.seed)] = recorder.series
        finals = ", ".join(f"{name} {recorder.series[name][-1]:.3f}" for name in COLUMNS if name in recorder.series)
        print(f"    {finals}; {time.perf_counter() - started:.0f} s so far", flush=True)
    return results


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def print_table(results: Results, seeds: int) -> None:
    """One row per cell: mean ± std over seeds of the first and last snapshot of each column."""
    labels = list(dict.fromkeys(label for label, _ in results))
    header = [
        "cell",
        *(f"{name.split('/')[1]} first -> last" if name.startswith("info/") else name for name in COLUMNS),
    ]
    print(f"\n{seeds} seeds; mean ± std over seeds\n")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for label in labels:
        cells = [label]
        for name in COLUMNS:
            per_seed = [results[(label, seed)].get(name) for seed in range(seeds)]
            if not all(per_seed):
                cells.append("-")
            elif name.startswith("info/"):
                cells.append(f"{_mean_std([s[0] for s in per_seed])} -> {_mean_std([s[-1] for s in per_seed])}")
            else:
                cells.append(_mean_std([s[-1] for s in per_seed]))
        print("| " + " | ".join(cells) + " |")


@dataclass(frozen=True)
class Claim:
    text: str
    holds_in: Callable[[Results, int], bool]  # does the claim hold in this seed's runs?


def _last(results: Results, label: str, seed: int, name: str) -> float:
    return results[(label, seed)][name][-1]


def _rises(label: str, name: str) -> Callable[[Results, int], bool]:
    return lambda results, seed: results[(label, seed)][name][-1] > results[(label, seed)][name][0]


def _order(labels: tuple[str, ...], name: str) -> Callable[[Results, int], bool]:
    """Final ``name`` strictly increasing along ``labels``."""

    def holds(results: Results, seed: int) -> bool:
        finals = [_last(results, label, seed, name) for label in labels]
        return all(low < high for low, high in itertools.pairwise(finals))

    return holds


def _highest(best: str, others: tuple[str, ...], name: str) -> Callable[[Results, int], bool]:
    return lambda results, seed: all(
        _last(results, best, seed, name) > _last(results, other, seed, name) for other in others
    )


MAE, UMAE, MMAE = "fig4 method=mae", "fig4 method=umae", "fig4 method=mmae"
SIMCLR, BARLOW = "fig3 loss.temperature=0.5", "fig1 method=barlow_twins"
T03, T05, T07 = "fig3 loss.temperature=0.3", SIMCLR, "fig3 loss.temperature=0.7"
CLAIMS = (
    Claim("Fig 4: final erank M-MAE > MAE (matched settings)", _order((MAE, MMAE), ERANK)),
    Claim("Fig 4: final erank MAE < U-MAE < M-MAE", _order((MAE, UMAE, MMAE), ERANK)),
    Claim("Fig 1: SimCLR MI rises (last > first snapshot)", _rises(SIMCLR, MI)),
    Claim("Fig 2: SimCLR joint entropy rises", _rises(SIMCLR, JOINT)),
    Claim("Fig 1: Barlow Twins MI rises", _rises(BARLOW, MI)),
    Claim("Fig 2: Barlow Twins joint entropy rises", _rises(BARLOW, JOINT)),
    Claim("Fig 3: SimCLR t=0.3 ends with the highest MI of 0.3/0.5/0.7", _highest(T03, (T05, T07), MI)),
    Claim("Fig 3: SimCLR t=0.3 ends with the highest joint entropy", _highest(T03, (T05, T07), JOINT)),
    Claim("Fig 3: SimCLR t=0.3 has the best kNN top-1", _highest(T03, (T05, T07), "eval/knn_top1")),
)


def print_verdicts(results: Results, seeds: int) -> None:
    """One line per claim: held (in every seed) or did not reproduce, with the count of seeds."""
    print("\nclaim | verdict")
    for claim in CLAIMS:
        held = sum(claim.holds_in(results, seed) for seed in range(seeds))
        verdict = "held" if held == seeds else "did not reproduce at this scale"
        print(f"{claim.text} | {verdict} ({held}/{seeds} seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, choices=range(1, 11), metavar="1..10")
    seeds = parser.parse_args().seeds
    runs = plan(seeds)
    print(f"{len(runs)} runs from {', '.join(study.sweep for study in STUDIES)} in {PAPER_SWEEPS}", flush=True)
    results = execute(runs)
    print_table(results, seeds)
    print_verdicts(results, seeds)


if __name__ == "__main__":
    main()
