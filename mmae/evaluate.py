"""Offline evaluation of a pretrained objective on the dataset's held-out test split.

Three protocols, each reporting top-1 and top-5 accuracy:
- linear probe on the frozen encoder: ``eval.protocol`` "quick" on precomputed unmasked features
  (``mmae.probe.linear_probe``), or "paper", MAE's recipe with augmentation (``mmae.paper_probe``);
- weighted kNN on cosine similarity (Wu et al., 2018): neighbour i votes exp(s_i / T) for its class;
- fine-tuning the encoder with a fresh linear head (only when ``eval.finetune_epochs > 0``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.accuracy import topk_accuracy
from mmae.checkpoint import load_checkpoint
from mmae.config import TrainConfig
from mmae.data import DatasetBundle, build_datasets, eval_batches, train_batches
from mmae.objectives import Objective, build_objective
from mmae.paper_probe import paper_linear_probe
from mmae.probe import linear_probe
from mmae.runtime import autocast, resolve_device, resolve_precision


@torch.no_grad()
def extract_features(
    objective: Objective, dataset: object, batch_size: int, device: torch.device, precision: str
) -> tuple[Tensor, Tensor]:
    """Frozen unmasked features of a whole split: (features [N, F] float32, labels [N] long)."""
    was_training = objective.training
    objective.eval()
    features, labels = [], []
    for images, targets in eval_batches(dataset, batch_size, device):
        with autocast(device, precision):
            features.append(objective.encode(images).float())
        labels.append(targets)
    objective.train(was_training)
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def knn_classify(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    k: int,
    temperature: float,
    chunk: int = 512,
) -> tuple[float, float]:
    """Weighted kNN: (top-1, top-5) on test features [M, F] against train features [N, F]."""
    bank, bank_labels = F.normalize(train[0], dim=1), train[1]
    votes = []
    for queries in F.normalize(test[0], dim=1).split(chunk):
        similarity, index = (queries @ bank.T).topk(min(k, len(bank)), dim=1)  # [m, k]
        weights = (similarity / temperature).exp()
        scores = torch.zeros(len(queries), num_classes, device=queries.device)
        votes.append(scores.scatter_add_(1, bank_labels[index], weights))
    return topk_accuracy(torch.cat(votes), test[1])


def finetune(
    objective: Objective, bundle: DatasetBundle, config: TrainConfig, device: torch.device, precision: str
) -> tuple[float, float]:
    """Train a copy of the encoder plus a linear head end to end; test (top-1, top-5).

    AdamW (lr ``eval.finetune_lr``, weight decay ``optim.weight_decay``), cosine over
    ``eval.finetune_epochs`` epochs of the training split, no augmentation. The original is untouched.
    """
    model = copy.deepcopy(objective).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = nn.Linear(objective.feature_dim, bundle.num_classes).to(device)
    params = [p for p in (*model.parameters(), *head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.eval.finetune_lr, weight_decay=config.optim.weight_decay)
    batch_size = min(config.data.batch_size, len(bundle.train))
    steps = config.eval.finetune_epochs * max(1, len(bundle.train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    batches = train_batches(bundle, batch_size, config.seed + 1, device=device)
    for _ in range(steps):
        images, labels = next(batches)
        with autocast(device, precision):
            logits = head(model.encode(images))
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        scores, labels = [], []
        for images, targets in eval_batches(bundle.test, batch_size, device):
            with autocast(device, precision):
                scores.append(head(model.encode(images)).float())
            labels.append(targets)
    return topk_accuracy(torch.cat(scores), torch.cat(labels))


def evaluate(
    objective: Objective, bundle: DatasetBundle, config: TrainConfig, device: torch.device, precision: str
) -> dict[str, float]:
    """All enabled protocols -> ``eval/{linear,knn,finetune}_top{1,5}`` metrics (fractions in [0, 1])."""
    cfg, batch_size = config.eval, config.data.batch_size
    train = extract_features(objective, bundle.train, batch_size, device, precision)
    test = extract_features(objective, bundle.test, batch_size, device, precision)
    results = {}
    if cfg.protocol == "paper":
        linear = paper_linear_probe(objective, bundle, cfg, config.seed, device, precision)
    else:
        linear = linear_probe(train, test, bundle.num_classes, cfg.linear_epochs, cfg.linear_lr, config.seed)
    results["eval/linear_top1"], results["eval/linear_top5"] = linear
    results["eval/knn_top1"], results["eval/knn_top5"] = knn_classify(
        train, test, bundle.num_classes, cfg.knn_k, cfg.knn_temperature
    )
    if cfg.finetune_epochs > 0:
        results["eval/finetune_top1"], results["eval/finetune_top5"] = finetune(
            objective, bundle, config, device, precision
        )
    return results


def evaluate_checkpoint(path: Path) -> dict[str, float]:
    """Rebuild the run stored in checkpoint ``path`` (its config, data and weights) and evaluate it."""
    state = load_checkpoint(path)
    config = TrainConfig.model_validate(state["config"])
    device = resolve_device(config)
    bundle = build_datasets(config.data, config.seed)
    objective = build_objective(config, bundle.in_chans, bundle.image_size, bundle.mean, bundle.std)
    objective.load_state_dict(state["objective"])
    objective.to(device)
    return evaluate(objective, bundle, config, device, resolve_precision(config, device))
