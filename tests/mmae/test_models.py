"""Shapes, masking, patch layout and builders of mmae.models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmae.config import ModelConfig
from mmae.models import (
    VIT_PRESETS,
    MAEOutput,
    MaskedAutoencoder,
    ViTEncoder,
    build_backbone,
    build_mae,
    build_vit,
    cifar_resnet18,
    prediction_mlp,
    projection_mlp,
    random_masking,
    sincos_pos_embed_2d,
)

# (image side, patch size, channels)
GEOMETRIES = [(8, 2, 1), (32, 4, 3), (16, 4, 3), (16, 4, 1)]


def tiny_mae(img: int, patch: int, chans: int, depth: int = 1) -> MaskedAutoencoder:
    cfg = ModelConfig(size="tiny", depth=depth, patch_size=patch, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    return build_mae(cfg, img, chans)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_small_presets_forward_real_tensors(size: str) -> None:
    dim, depth, heads = VIT_PRESETS[size]
    encoder = build_vit(ModelConfig(size=size, patch_size=2), 8, 1)
    assert (encoder.embed_dim, len(encoder.blocks), encoder.blocks[0].attn.num_heads) == (dim, depth, heads)
    x = torch.randn(2, 1, 8, 8)
    assert encoder.forward_features(x).shape == (2, dim)
    tokens, mask, ids_restore = encoder.forward_masked(x, 0.75, torch.rand(2, 16))
    assert tokens.shape == (2, 1 + 4, dim) and mask.shape == ids_restore.shape == (2, 16)


@pytest.mark.parametrize("size", ["base", "large"])
def test_big_presets_build_with_preset_dims(size: str) -> None:
    dim, depth, heads = VIT_PRESETS[size]
    with torch.device("meta"):  # shape-only: no memory, no compute
        mae = build_mae(ModelConfig(size=size, patch_size=4), 32, 3)
        out = mae(torch.empty(2, 3, 32, 32), 0.75, torch.empty(2, 64))
        features = mae.encoder.forward_features(torch.empty(2, 3, 32, 32))
    encoder = mae.encoder
    assert (encoder.embed_dim, len(encoder.blocks), encoder.blocks[0].attn.num_heads) == (dim, depth, heads)
    assert out.pred.shape == (2, 64, 48) and out.cls.shape == (2, dim) and features.shape == (2, dim)
    per_block = 12 * dim * dim + 13 * dim  # qkv + proj + 2-layer MLP (ratio 4) + 2 LayerNorms, with biases
    assert sum(p.numel() for p in encoder.blocks.parameters()) == depth * per_block


def test_large_preset_parameter_count_matches_vit_large() -> None:
    with torch.device("meta"):
        encoder = build_vit(ModelConfig(size="large", patch_size=16), 224, 3)
    # timm's vit_large_patch16_224 without head has 303,301,632, of which 197 * 1024 are learned positions;
    # ours are fixed sin-cos buffers.
    assert sum(p.numel() for p in encoder.parameters()) == 303_301_632 - 197 * 1024


@pytest.mark.parametrize(("img", "patch", "chans"), GEOMETRIES)
def test_any_geometry_shapes(img: int, patch: int, chans: int) -> None:
    mae = tiny_mae(img, patch, chans)
    n = (img // patch) ** 2
    x = torch.randn(3, chans, img, img)
    out = mae(x, 0.75, torch.rand(3, n))
    assert isinstance(out, MAEOutput)
    assert out.pred.shape == out.target.shape == (3, n, patch * patch * chans)
    assert out.mask.shape == (3, n) and out.mask.dtype == torch.float32
    assert out.cls.shape == (3, 192)
    assert mae.encoder.num_patches == n and mae.encoder.patch_size == patch
    assert mae.encoder.forward_features(x).shape == (3, 192)
    assert mae.unpatchify(mae.patchify(x)).equal(x)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.6, 0.75, 0.9])
@pytest.mark.parametrize("n", [16, 37, 64])
def test_masking_keeps_round_n_times_one_minus_ratio(n: int, ratio: float) -> None:
    keep = round(n * (1 - ratio))
    tokens = torch.arange(n, dtype=torch.float32).view(1, n, 1).repeat(5, 1, 3)
    kept, mask, ids_restore = random_masking(tokens, ratio, torch.rand(5, n))
    assert kept.shape == (5, keep, 3)
    assert mask.sum(dim=1).eq(n - keep).all()
    ids_shuffle = ids_restore.argsort(dim=1)
    for row in range(5):  # visible tokens are exactly those with mask 0, in shuffle order
        visible = kept[row, :, 0].long()
        assert visible.equal(ids_shuffle[row, :keep])
        assert mask[row, visible].eq(0).all()
    shuffled = tokens.gather(1, ids_shuffle.unsqueeze(-1).expand(-1, -1, 3))
    assert shuffled.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, 3)).equal(tokens)


def test_masking_keeps_the_tokens_of_smallest_noise_per_sample() -> None:
    tokens = torch.randn(8, 64, 4)
    noise = torch.rand(8, 64)
    _, mask_a, _ = random_masking(tokens, 0.75, noise)
    _, mask_b, _ = random_masking(tokens, 0.75, noise.clone())
    assert mask_a.equal(mask_b)
    assert len({tuple(row.tolist()) for row in mask_a}) == 8
    smallest = noise.argsort(dim=1)[:, :16]
    assert mask_a.gather(1, smallest).eq(0).all() and mask_a.sum() == 8 * 48


def test_masking_rejects_noise_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"noise must be \[B, N\] = \[2, 16\], got \[2, 15\]"):
        random_masking(torch.randn(2, 16, 4), 0.75, torch.rand(2, 15))


def test_extreme_ratios_keep_and_hide_at_least_one_patch() -> None:
    tokens = torch.randn(2, 16, 4)
    assert random_masking(tokens, 0.99, torch.rand(2, 16))[0].shape[1] == 1
    assert random_masking(tokens, 0.01, torch.rand(2, 16))[1].sum(dim=1).eq(1).all()


def test_patchify_layout_matches_token_order() -> None:
    mae = tiny_mae(16, 4, 3)
    x = torch.randn(2, 3, 16, 16)
    patches = mae.patchify(x)
    first = x[:, :, 0:4, 0:4].permute(0, 2, 3, 1).reshape(2, -1)  # (row, column, channel)
    right_neighbour = x[:, :, 0:4, 4:8].permute(0, 2, 3, 1).reshape(2, -1)
    below = x[:, :, 4:8, 0:4].permute(0, 2, 3, 1).reshape(2, -1)
    assert patches[:, 0].equal(first) and patches[:, 1].equal(right_neighbour) and patches[:, 4].equal(below)


def test_mae_output_contract_and_gradients() -> None:
    mae = tiny_mae(8, 2, 1, depth=2)
    x = torch.randn(4, 1, 8, 8)
    noise = torch.rand(4, 16)
    out = mae(x, 0.75, noise)
    latent, mask, _ = mae.encoder.forward_masked(x, 0.75, noise)
    assert out.target.equal(mae.patchify(x))
    assert out.mask.equal(mask) and out.mask.sum(dim=1).eq(12).all()
    assert torch.allclose(out.cls, latent[:, 0])
    assert not torch.allclose(out.cls, mae.encoder.forward_features(x))  # masked pass != full view
    (out.pred.square().mean() + out.cls.square().mean()).backward()
    for name in ("encoder.patch_embed.proj.weight", "encoder.cls_token", "mask_token", "decoder_pred.weight"):
        grad = dict(mae.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_position_embeddings_are_fixed_sincos() -> None:
    pos = sincos_pos_embed_2d(8, 3)
    assert pos.shape == (9, 8)
    assert pos[0].equal(torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))  # position (0, 0)
    assert torch.allclose(pos[1, :2], torch.tensor([1.0, 0.01]).sin())  # column 1, both frequencies
    assert pos[1, 4:].equal(pos[0, 4:])  # same row
    encoder = ViTEncoder(8, 2, 1, embed_dim=16, depth=1, num_heads=2)
    assert "pos_embed" not in dict(encoder.named_parameters())
    assert encoder.pos_embed[0, 0].eq(0).all() and encoder.pos_embed.shape == (1, 17, 16)


def test_encoder_validates_geometry() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        ViTEncoder(10, 4, 3, embed_dim=16, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="num_heads"):
        ViTEncoder(8, 2, 3, embed_dim=16, depth=1, num_heads=3)


def test_cifar_resnet18_stem_and_output() -> None:
    net = cifar_resnet18(3)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert cifar_resnet18(1)(torch.randn(2, 1, 8, 8)).shape == (2, 512)


def test_heads() -> None:
    projector = projection_mlp(64, 32, 16)
    kinds = [type(m) for m in projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert projector(torch.randn(5, 64)).shape == (5, 16)
    predictor = prediction_mlp(16, 8, 16)
    assert [type(m) for m in predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert predictor(torch.randn(5, 16)).shape == (5, 16)


def test_builders_apply_the_depth_override_and_build_both_backbones() -> None:
    assert len(build_vit(ModelConfig(depth=2), 8, 1).blocks) == 2
    with torch.device("meta"):
        assert len(build_vit(ModelConfig(), 8, 1).blocks) == 12
        assert len(build_mae(ModelConfig(size="small", depth=3), 8, 1).encoder.blocks) == 3
    vit, dim = build_backbone(ModelConfig(depth=1), 8, 1)
    assert dim == 192 and vit(torch.randn(2, 1, 8, 8)).shape == (2, 192)
    resnet, dim = build_backbone(ModelConfig(arch="resnet18"), 32, 3)
    assert dim == 512 and resnet(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    with pytest.raises(ValueError, match="vit"):
        build_mae(ModelConfig(arch="resnet18"), 32, 3)
