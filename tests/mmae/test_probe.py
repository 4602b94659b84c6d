"""The online probe: what it learns from (whole images, monitor steps) and a learning rate that keeps up."""

from __future__ import annotations

import torch

from mmae.config import DataConfig, MonitorConfig
from mmae.data import build_datasets, train_batches
from mmae.probe import OnlineProbe, frozen_features
from mmae.train import build_parts, seed_everything, train_step


def test_default_online_probe_learns_digit_pixels_in_thirty_updates():
    """A 300-step run with monitor.every = 10 gives the probe 30 updates: at the default learning rate
    its reads then pass 80% on raw digit pixels (1e-3, the old default, reads 35-45% there)."""
    bundle = build_datasets(DataConfig(), seed=0)
    torch.manual_seed(0)
    probe = OnlineProbe(64, bundle.num_classes, MonitorConfig().online_probe_lr)
    batches = train_batches(bundle, 128, seed=0)
    reads = []
    for update in range(1, 31):
        images, labels = next(batches)
        probe.update(images.flatten(1), labels)
        if update % 5 == 0:
            reads.append(probe.read_accuracy())
    assert min(reads[-2:]) > 0.8


def test_probe_learns_on_monitor_steps_from_unmasked_features(tiny_config, monkeypatch):
    config = tiny_config("mae", **{"monitor.every": 2})
    seed_everything(0)
    bundle = build_datasets(config.data, config.seed)
    device = torch.device("cpu")
    parts = build_parts(config, bundle, device)
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(parts.probe, "update", lambda features, labels: seen.append(features))
    images, labels = next(train_batches(bundle, config.data.batch_size, config.seed))
    train_step(parts, images, labels, 0, config, device, "fp32")
    assert seen == []  # step 1 is not a monitor step
    before = frozen_features(parts.objective, images, device, "fp32")
    out = train_step(parts, images, labels, 1, config, device, "fp32")
    assert len(seen) == 1 and parts.objective.training
    assert torch.allclose(seen[0], before), "the encoder as the step's forward saw it, not after its update"
    assert not torch.allclose(seen[0], frozen_features(parts.objective, images, device, "fp32"))
    assert not torch.allclose(seen[0], out.monitor_views[0])  # not the masked pass's CLS
