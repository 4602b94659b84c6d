"""The paper's linear-probe protocol (``eval.protocol: paper``): MAE's linear probing recipe.

He et al., 2022 (MAE), App. A.2, followed by the M-MAE paper's linear-probe numbers: the encoder is
frozen; a BatchNorm without affine parameters (eps 1e-6) sits before the linear classifier (weights
truncated normal, std 0.01; bias 0); LARS (``mmae.lars``, momentum 0.9, no weight decay) with
lr = ``paper_base_lr`` x batch / 256, a linear warmup of ``paper_warmup_epochs`` then a cosine to 0 per
step, ``paper_epochs`` epochs; every training batch is a fresh random-resized crop (area 0.08-1, aspect
3/4-4/3) + horizontal flip of the images, encoded by the frozen encoder (``mmae.probe.frozen_features``). The batch is
``paper_batch_size`` (MAE: 16384), capped at the training split.

Differences to MAE's code, by necessity: test images are not resized and centre-cropped (our splits are
already at the model's size), and the frozen encoder runs in eval mode (BatchNorm backbones keep their
pretraining statistics). Heavy: it encodes ``paper_epochs`` augmented passes over the training split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmae.accuracy import topk_accuracy
from mmae.config import EvalConfig, OptimConfig
from mmae.data import BatchShard, DatasetBundle, SimCLRAugment, StepRandom, eval_batches, train_batches
from mmae.data.global_batch import derived_seed
from mmae.lars import LARS
from mmae.objectives import Objective
from mmae.optim import build_scheduler
from mmae.probe import frozen_features

PROBE_STREAM = 2  # keeps the probe's crops apart from the pretraining steps' draws


def crop_and_flip(bundle: DatasetBundle) -> SimCLRAugment:
    """MAE's probe augmentation: RandomResizedCrop (scale 0.08-1) + RandomHorizontalFlip, nothing else."""
    return SimCLRAugment(
        bundle.image_size,
        bundle.in_chans,
        bundle.mean,
        bundle.std,
        min_scale=0.08,
        jitter_prob=0.0,
        gray_prob=0.0,
        blur_prob=0.0,
        noise_std=0.0,
    )


def batchnorm_head(feature_dim: int, num_classes: int, seed: int) -> nn.Sequential:
    """BatchNorm1d(affine=False, eps=1e-6) + Linear (trunc-normal std 0.01, zero bias), seeded locally."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = nn.Linear(feature_dim, num_classes)
        nn.init.trunc_normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6), linear)


def paper_linear_probe(
    objective: Objective,
    bundle: DatasetBundle,
    cfg: EvalConfig,
    seed: int,
    device: torch.device,
    precision: str,
) -> tuple[float, float]:
    """Train the BatchNorm + linear head on augmented frozen features; test (top-1, top-5), unaugmented.

    Features are ``objective.encode(images)``: [B, F] with F = ``objective.feature_dim``.
    """
    batch_size = min(cfg.paper_batch_size, len(bundle.train))
    steps_per_epoch = len(bundle.train) // batch_size
    head = batchnorm_head(objective.feature_dim, bundle.num_classes, seed).to(device)
    lr = cfg.paper_base_lr * batch_size / 256
    optimizer = LARS(head.parameters(), lr=lr, weight_decay=0.0)
    schedule = build_scheduler(
        optimizer,
        OptimConfig(lr=lr, warmup_steps=cfg.paper_warmup_epochs * steps_per_epoch),
        cfg.paper_epochs * steps_per_epoch,
    )
    augment, shard = crop_and_flip(bundle).to(device), BatchShard.whole(batch_size)
    probe_seed = derived_seed(seed, PROBE_STREAM)
    batches = train_batches(bundle, batch_size, probe_seed, device=device)
    for step in range(cfg.paper_epochs * steps_per_epoch):
        images, labels = next(batches)
        views = augment(images, StepRandom(probe_seed, step, shard, device))
        loss = F.cross_entropy(head(frozen_features(objective, views, device, precision)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    head.eval()
    with torch.no_grad():
        scores, targets = [], []
        for images, labels in eval_batches(bundle.test, batch_size, device):
            scores.append(head(frozen_features(objective, images, device, precision)))
            targets.append(labels)
    return topk_accuracy(torch.cat(scores), torch.cat(targets))
