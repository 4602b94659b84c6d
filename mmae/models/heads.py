"""MLP heads of the Siamese methods: projector (SimCLR / Barlow Twins / BYOL) and BYOL's predictor."""

from __future__ import annotations

from torch import nn


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Three-layer projector ``[B, in_dim] -> [B, out_dim]``: Linear-BN-ReLU-Linear-BN-ReLU-Linear.

    The form of SimCLR v2 and Barlow Twins (whose official projector is this with wider layers).
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


def prediction_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL predictor ``[B, in_dim] -> [B, out_dim]``: Linear-BN-ReLU-Linear (Grill et al., 2020)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )
