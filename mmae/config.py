"""Training configuration: one pydantic model with defaults, validated once at the edge.

Every field is a knob a researcher may sweep (by its dotted name, e.g. ``loss.mu``).
Unknown fields are rejected so a typo never silently trains the wrong thing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["mae", "umae", "mmae", "simclr", "spectral", "barlow_twins", "byol"]
MAE_FAMILY: tuple[str, ...] = ("mae", "umae", "mmae")
SIAMESE_METHODS: tuple[str, ...] = ("simclr", "spectral", "barlow_twins", "byol")

# Native image geometry of the datasets whose size is known before loading.
NATIVE_IMAGE_SIZE: dict[str, int] = {"digits": 8, "cifar10": 32, "cifar100": 32, "synthetic": 8}


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # every float is finite


class DataConfig(StrictModel):
    dataset: Literal["digits", "cifar10", "cifar100", "imagefolder", "synthetic"] = "digits"
    root: str | None = None  # local folder: CIFAR python-pickle batches, or ImageFolder train/ + val/
    # resize to this side; None keeps the native size. At most 1024: over 4x ImageNet's 224 (12 MB an image)
    image_size: int | None = Field(default=None, ge=4, le=1024)
    batch_size: int = Field(default=256, ge=2, le=65_536)  # the global batch; 8x SimCLR's largest (8192)
    num_workers: int = Field(default=0, ge=0, le=64)  # DataLoader worker processes; no node feeds a GPU with more
    synthetic_samples: int = Field(default=512, ge=16, le=50_000)  # synthetic only: images per split; CIFAR's 50k
    synthetic_classes: int = Field(default=10, ge=2, le=1000)  # synthetic only; ImageNet's 1000

    @model_validator(mode="after")
    def _root_when_needed(self) -> DataConfig:
        if self.dataset in ("cifar10", "cifar100", "imagefolder") and not self.root:
            raise ValueError(f"data.root is required for dataset '{self.dataset}' (a local folder)")
        if self.dataset == "imagefolder" and self.image_size is None:
            raise ValueError("data.image_size is required for dataset 'imagefolder'")
        return self

    @property
    def resolved_image_size(self) -> int:
        """Side length of the images the model sees."""
        return self.image_size or NATIVE_IMAGE_SIZE[self.dataset]


class ModelConfig(StrictModel):
    arch: Literal["vit", "resnet18"] = "vit"  # resnet18 (CIFAR stem) is for Siamese methods only
    size: Literal["tiny", "small", "base", "large"] = "tiny"  # ViT width/depth/heads preset
    depth: int | None = Field(default=None, ge=1, le=64)  # override the preset's depth; ViT-H has 32, ViT-G 48
    patch_size: int = Field(default=2, ge=1, le=1024)  # must divide the image side, itself at most 1024
    mask_ratio: float = Field(default=0.75, gt=0.0, lt=1.0)  # MAE family: fraction of patches hidden
    decoder_dim: int = Field(default=128, ge=8, le=4096)  # MAE's decoders are 512 wide; ViT-G is 1664
    decoder_depth: int = Field(default=2, ge=1, le=64)  # MAE uses 8 blocks; as deep as the deepest encoder
    decoder_heads: int = Field(default=4, ge=1, le=64)  # MAE uses 16; 64 heads of 64 dims span a 4096 width
    norm_pix_loss: bool = False  # MAE family: regress per-patch normalised pixels
    projector_hidden_dim: int = Field(default=512, ge=8, le=16_384)  # Siamese projector MLP; Barlow Twins: 8192
    projector_dim: int = Field(default=128, ge=2, le=16_384)  # Siamese embedding size d; Barlow Twins: 8192
    predictor_hidden_dim: int = Field(default=512, ge=8, le=16_384)  # BYOL predictor MLP; BYOL: 4096


class LossConfig(StrictModel):
    temperature: float = Field(default=0.5, gt=0.0)  # simclr: InfoNCE temperature
    spectral_lambda: float = Field(default=1.0, ge=0.0)  # spectral: weight of Eq. 2's off-diagonal term
    barlow_lambda: float = Field(default=0.0051, ge=0.0)  # barlow_twins: weight of Eq. 3's off-diagonal term
    # umae: lambda of the U-MAE baseline the paper compares against (M-MAE repo uniformity_loss_square,
    # lamb = 0.01): lambda * mean over the B x B Gram of (zhat_i^T zhat_j)^2. The loss divides its
    # sum-form penalty by B^2 (B = the rows it penalises), i.e. the paper's gamma = lambda / B^2
    uniformity_lambda: float = Field(default=0.01, ge=0.0)
    tcr_lambda: float = Field(default=0.01, ge=0.0)  # mmae: lambda of Eq. 11
    mu: float = Field(default=1.0, gt=0.0)  # mmae: mu of TCR_mu in mu_convention's units (mmae.info.equivalent_mu)
    # mmae: "official" = logdet(I + (mu/d) Z^T Z), the M-MAE repo's form: the convention behind the paper's
    # tables (mu = 1 for ViT-B, 3 for ViT-L, Table 2's sweep). "paper" = logdet(mu I + Z^T Z) (Def. 4.8);
    # paper mu = d / official mu. Stored configs carry it explicitly, so no old run changes convention.
    mu_convention: Literal["paper", "official"] = "official"
    byol_momentum: float = Field(default=0.99, ge=0.0, le=1.0)  # byol: base EMA momentum (cosine to 1)


class OptimConfig(StrictModel):
    lr: float = Field(default=1e-3, gt=0.0)  # peak learning rate of AdamW
    weight_decay: float = Field(default=0.05, ge=0.0)
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta2: float = Field(default=0.95, ge=0.0, lt=1.0)
    warmup_steps: int = Field(default=20, ge=0, le=10_000_000)  # linear warmup, then cosine; steps' cap
    min_lr: float = Field(default=0.0, ge=0.0)
    grad_clip: float | None = Field(default=None, gt=0.0)


class MonitorConfig(StrictModel):
    every: int = Field(default=10, ge=1, le=10_000_000)  # steps between information snapshots; steps' cap
    online_probe: bool = True  # linear classifier on detached features, trained alongside
    online_probe_lr: float = Field(default=1e-2, gt=0.0)  # AdamW; it takes one step per monitor step


class EvalConfig(StrictModel):
    enabled: bool = True  # run the offline evaluation when pretraining ends
    # offline linear probe on frozen unmasked features; MAE's probe trains 90 epochs, 1000 is >10x that
    linear_epochs: int = Field(default=30, ge=1, le=1000)
    linear_lr: float = Field(default=1e-2, gt=0.0)
    knn_k: int = Field(default=20, ge=1, le=1000)  # weighted kNN; the literature uses 20-200
    knn_temperature: float = Field(default=0.07, gt=0.0)
    finetune_epochs: int = Field(default=0, ge=0, le=1000)  # 0 skips fine-tuning; MAE fine-tunes 50-100
    finetune_lr: float = Field(default=1e-3, gt=0.0)
    # linear probe protocol: "quick" = AdamW on precomputed features (linear_epochs, linear_lr); "paper" =
    # MAE's (mmae.paper_probe: LARS, BatchNorm head, crop + flip augmentation, warmup then cosine), for GPU runs
    protocol: Literal["quick", "paper"] = "quick"
    paper_epochs: int = Field(default=90, ge=1, le=1000)  # MAE: 90
    paper_warmup_epochs: int = Field(default=10, ge=0, le=1000)  # MAE: 10
    paper_base_lr: float = Field(default=0.1, gt=0.0, le=100.0)  # MAE: 0.1; lr = base * batch / 256
    paper_batch_size: int = Field(default=16_384, ge=2, le=65_536)  # MAE: 16384; capped at the train split


class TrainConfig(StrictModel):
    method: Method = "mmae"
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    steps: int = Field(default=300, ge=1, le=10_000_000)  # optimizer steps of pretraining
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on cuda, fp32 on cpu
    checkpoint_every: int = Field(default=100, ge=1, le=10_000_000)  # steps between checkpoints; steps' cap
    # newest step checkpoints kept on disk (last.pt is one); 100 ViT-L checkpoints with AdamW state are ~360 GB
    checkpoint_keep: int = Field(default=2, ge=1, le=100)
    log_every: int = Field(default=1, ge=1, le=10_000_000)  # steps between train/* metric emissions; steps' cap
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    monitor: MonitorConfig = MonitorConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="before")
    @classmethod
    def _absolute_uniformity_gamma(cls, data: Any) -> Any:
        """Read a config stored before ``loss.uniformity_lambda`` existed as the same run.

        Those carry an absolute ``loss.uniformity_gamma`` on the sum-form penalty of a single-process
        batch of ``data.batch_size`` rows, so ``gamma * B^2`` is exactly their lambda.
        """
        loss = data.get("loss") if isinstance(data, dict) else None
        if not isinstance(loss, dict) or "uniformity_gamma" not in loss:
            return data
        if "uniformity_lambda" in loss:
            raise ValueError("set loss.uniformity_lambda only: loss.uniformity_gamma is its old absolute form")
        batch = (data.get("data") or {}).get("batch_size", DataConfig.model_fields["batch_size"].default)
        gamma = loss["uniformity_gamma"]
        if not all(isinstance(value, int | float) and not isinstance(value, bool) for value in (gamma, batch)):
            raise ValueError("loss.uniformity_gamma and data.batch_size must be numbers")
        rest = {key: value for key, value in loss.items() if key != "uniformity_gamma"}
        return data | {"loss": rest | {"uniformity_lambda": gamma * batch**2}}

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.model.arch == "resnet18" and self.method in MAE_FAMILY:
            raise ValueError(f"model.arch 'resnet18' cannot run masked method '{self.method}'; use 'vit'")
        side = self.data.image_size
        if side is None and self.data.dataset in NATIVE_IMAGE_SIZE:
            side = NATIVE_IMAGE_SIZE[self.data.dataset]
        if self.model.arch == "vit" and side is not None and side % self.model.patch_size:
            raise ValueError(f"model.patch_size {self.model.patch_size} must divide the image size {side}")
        return self


def config_hash(config: TrainConfig) -> str:
    """Stable 16-hex-digit identity of a config (canonical JSON, sorted keys)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def flatten_config(config: TrainConfig) -> dict[str, Any]:
    """Dotted-key view of a config, e.g. ``{"loss.mu": 1.0, ...}`` (for params and sweep tables)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(f"{name}.", value)
            else:
                flat[name] = value

    walk("", config.model_dump(mode="json"))
    return flat


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return a validated copy of ``config`` with dotted-key overrides applied (``{"loss.mu": 3}``).

    Raises ``ValueError`` naming the key when a dotted path does not exist.
    """
    data = config.model_dump(mode="json")
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"unknown config field '{dotted}'")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"unknown config field '{dotted}'")
        node[leaf] = value
    return TrainConfig.model_validate(data)
