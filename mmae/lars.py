"""LARS: layer-wise adaptive rate scaling (You, Gitman and Ginsburg, 2017, arXiv:1708.03888).

The optimiser of MAE's linear probe (He et al., 2022, App. A.2; ``util/lars.py`` of the MAE code, itself
from MoCo v3), used by ``eval.protocol: paper``. For each parameter ``w`` with gradient ``g``:

    d     = g + weight_decay * w                          (matrices only)
    trust = trust_coefficient * ||w|| / ||d||             (matrices only; 1 when either norm is 0)
    m     = momentum * m + trust * d                      (m starts at 0)
    w     = w - lr * m

Vectors (biases, normalisation scales) get neither weight decay nor the trust ratio, as in MAE's code.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step per weight matrix is scaled by ``trust_coefficient * ||w|| / ||d||``."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "trust_coefficient": trust_coefficient,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One update of every parameter that has a gradient (see the module doc)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if param.ndim > 1:
                    update = update.add(param, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.linalg.vector_norm(param), torch.linalg.vector_norm(update)
                    trust = group["trust_coefficient"] * param_norm / update_norm
                    usable = (param_norm > 0) & (update_norm > 0)
                    update = update * torch.where(usable, trust, torch.ones_like(trust))
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                param.add_(buffer, alpha=-group["lr"])
