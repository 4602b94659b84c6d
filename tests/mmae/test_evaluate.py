"""Offline evaluation: top-k, kNN, a linear probe above chance on digits, fine-tuning, checkpoints."""

from __future__ import annotations

import pytest
import torch

from mmae.accuracy import topk_accuracy
from mmae.data import build_datasets
from mmae.evaluate import evaluate, evaluate_checkpoint, extract_features, knn_classify
from mmae.objectives import build_objective
from mmae.probe import linear_probe
from mmae.train import fit, seed_everything


def test_topk_accuracy_counts_hits_within_k():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    labels = torch.tensor([0, 1, 2])
    assert topk_accuracy(scores, labels, ks=(1, 2, 5)) == pytest.approx((1 / 3, 2 / 3, 1.0))


def _clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    centers = torch.eye(4, 8) * 5
    return centers[labels] + 0.3 * torch.randn(n, 8, generator=gen), labels


def test_knn_and_linear_probe_solve_separable_clusters():
    train, test = _clusters(200, 0), _clusters(80, 1)
    assert knn_classify(train, test, num_classes=4, k=10, temperature=0.1) == (1.0, 1.0)
    assert linear_probe(train, test, num_classes=4, epochs=20, lr=0.05, seed=0) == (1.0, 1.0)


def test_knn_weights_votes_by_similarity():
    bank = (torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 1, 1]))
    query = (torch.tensor([[1.0, 0.05]]), torch.tensor([0]))
    assert knn_classify(bank, query, num_classes=2, k=3, temperature=0.05)[0] == 1.0
    assert knn_classify(bank, query, num_classes=2, k=3, temperature=100.0)[0] == 0.0


@pytest.mark.slow
def test_evaluate_on_digits_is_well_formed_and_above_chance(tiny_config):
    config = tiny_config("mae", **{"eval.finetune_epochs": 1, "eval.linear_epochs": 20})
    seed_everything(0)
    bundle = build_datasets(config.data, config.seed)
    objective = build_objective(config, bundle.in_chans, bundle.image_size)
    results = evaluate(objective, bundle, config, torch.device("cpu"), "fp32")
    assert set(results) == {f"eval/{p}_top{k}" for p in ("linear", "knn", "finetune") for k in (1, 5)}
    assert all(0.0 <= value <= 1.0 for value in results.values())
    assert all(results[f"eval/{p}_top5"] >= results[f"eval/{p}_top1"] for p in ("linear", "knn", "finetune"))
    assert results["eval/linear_top1"] > 0.5  # chance is 0.1
    assert objective.training  # evaluation leaves the model as it found it


@pytest.mark.slow
def test_features_are_unmasked_and_deterministic(tiny_config):
    config = tiny_config("mmae")
    bundle = build_datasets(config.data, config.seed)
    objective = build_objective(config, bundle.in_chans, bundle.image_size)
    first = extract_features(objective, bundle.test, 100, torch.device("cpu"), "fp32")
    second = extract_features(objective, bundle.test, 64, torch.device("cpu"), "fp32")
    assert first[0].shape == (len(bundle.test), objective.feature_dim)
    assert torch.allclose(first[0], second[0], atol=1e-5) and torch.equal(first[1], second[1])


@pytest.mark.slow
def test_evaluate_checkpoint_rebuilds_the_run(tiny_config, tmp_path):
    config = tiny_config("simclr", steps=3, **{"eval.enabled": True})
    result = fit(config, tmp_path)
    again = evaluate_checkpoint(result.last_checkpoint)
    assert again["eval/linear_top1"] == pytest.approx(result.summary["eval/linear_top1"])
    assert again["eval/knn_top1"] == pytest.approx(result.summary["eval/knn_top1"])
