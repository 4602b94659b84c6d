"""The paper's own results, as plain data, for placing beside ours (Zhang et al., "Information Flow in
Self-Supervised Learning"; /work/shared/paper/information-flow-in-ssl.md).

Only numbers printed in the paper are here. Accuracies are percentages, as the paper prints them.

- Table 2 (App. B): linear probing of M-MAE, ViT-Base on ImageNet-1K, against the TCR coefficient mu.
  The setting is §6.1's: pre-trained 200 epochs, batch size 1024, mask ratio 0.75, lambda = 0.01,
  weight decay 0.05; mu in the official code's convention.
- Table 3 (App. C.2): CIFAR-100, ViT-Base, mu = 1, pre-trained 1000 epochs, U-MAE's hyper-parameters;
  linear probe and fine-tuning top-1 / top-5 of M-MAE, U-MAE and MAE.
- Figures 1-5 are plots without printed numbers: only their qualitative findings are recorded
  (``FIGURE_FINDINGS``), never values read off a plot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperSetting:
    """Where a number comes from: the table or figure and its scale."""

    source: str
    backbone: str
    dataset: str
    pretrain: str

    @property
    def label(self) -> str:
        return f"paper ({self.source}): {self.backbone}, {self.dataset}, {self.pretrain}"


TABLE2 = PaperSetting("Table 2", "ViT-B", "ImageNet-1K", "200 ep, batch 1024")
TABLE3 = PaperSetting("Table 3", "ViT-B", "CIFAR-100", "1000 ep, mu = 1")
FIGURE3 = PaperSetting("Fig 3", "SimCLR", "CIFAR-10", "temperatures 0.3, 0.5, 0.7")
FIGURE1 = PaperSetting("Figs 1, 2, 5", "SimCLR, Barlow Twins, BYOL", "CIFAR-10", "MI, joint entropy, JS")
FIGURE4 = PaperSetting("Fig 4", "MAE, U-MAE, M-MAE", "App. C.2", "effective rank during pre-training")

# Table 2: mu (official convention) -> M-MAE linear probing top-1 (%), ViT-B, ImageNet-1K.
TABLE2_MU_LINEAR_TOP1: dict[float, float] = {
    0.1: 58.61,
    0.5: 59.38,
    0.75: 59.87,
    1.0: 62.40,
    1.25: 59.54,
    1.5: 57.76,
    3.0: 50.46,
}

# Table 3: method -> our metric name -> linear probe and fine-tuning top-1 / top-5 (%), ViT-B, CIFAR-100.
TABLE3_CIFAR100: dict[str, dict[str, float]] = {
    "mmae": {"linear_top1": 60.9, "linear_top5": 88.1, "finetune_top1": 83.8, "finetune_top5": 97.0},
    "umae": {"linear_top1": 59.7, "linear_top5": 86.8, "finetune_top1": 84.1, "finetune_top5": 96.5},
    "mae": {"linear_top1": 59.2, "linear_top5": 86.8, "finetune_top1": 84.5, "finetune_top5": 96.6},
}

FIGURE3_TEMPERATURES: tuple[float, ...] = (0.3, 0.5, 0.7)
FIGURE1_METHODS: tuple[str, ...] = ("simclr", "barlow_twins", "byol")

# What the figures show, in the paper's words; they print no numbers.
FIGURE_FINDINGS: dict[str, str] = {
    "fig1": "Matrix mutual information (alpha = 1, covariance matrices between branches) increases during "
    "training; SimCLR's and Barlow Twins' meet at the end (Fig 1, CIFAR-10).",
    "fig2": "Matrix joint entropy increases during training; SimCLR's and Barlow Twins' meet at the end "
    "(Fig 2, CIFAR-10).",
    "fig3": "Temperature 0.3 outperforms 0.5 and 0.7 in kNN accuracy and also has the biggest matrix mutual "
    "information and joint entropy (Fig 3, SimCLR on CIFAR-10).",
    "fig4": "M-MAE has the biggest effective rank, U-MAE's is bigger than MAE's, and M-MAE's increases "
    "during training (Fig 4).",
    "fig5": "Matrix JS divergence between branches stays small and increases during training (Fig 5a, CIFAR-10).",
}
