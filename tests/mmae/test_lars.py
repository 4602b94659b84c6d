"""LARS (mmae.lars) against a hand computation, and the paper's linear-probe protocol on digits."""

from __future__ import annotations

import pytest
import torch

from mmae.config import EvalConfig
from mmae.data import build_datasets
from mmae.evaluate import evaluate
from mmae.lars import LARS
from mmae.objectives import build_objective
from mmae.paper_probe import paper_linear_probe
from mmae.train import seed_everything


def test_one_lars_step_matches_a_hand_computation():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # ||W|| = 5
    bias = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = LARS([weight, bias], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    # d = g + 0.1 W = [[0, 0.6], [0.8, 0]], ||d|| = 1, trust = 0.001 * 5 / 1 = 0.005, step = 0.5 * 0.005 * d
    weight.grad = torch.tensor([[-0.3, 0.6], [0.8, -0.4]])
    bias.grad = torch.tensor([0.5, -1.0])  # a vector: no decay, no trust ratio, step = 0.5 * g
    optimizer.step()
    assert torch.allclose(weight, torch.tensor([[3.0, -0.0015], [-0.002, 4.0]]), atol=1e-7)
    assert torch.allclose(bias, torch.tensor([0.75, 2.5]), atol=1e-7)
    # momentum: m = 0.9 * g + g = [0.95, -1.9]; a parameter without a gradient is left alone
    weight.grad = None
    optimizer.step()
    assert torch.allclose(bias, torch.tensor([0.275, 3.45]), atol=1e-6)
    assert torch.allclose(weight, torch.tensor([[3.0, -0.0015], [-0.002, 4.0]]), atol=1e-7)


def test_a_zero_matrix_takes_a_plain_momentum_step():
    weight = torch.nn.Parameter(torch.zeros(2, 3))
    optimizer = LARS([weight], lr=0.1)
    weight.grad = torch.ones(2, 3)
    optimizer.step()  # ||W|| = 0: trust ratio 1
    assert torch.allclose(weight, torch.full((2, 3), -0.1))


@pytest.fixture
def digits_objective(tiny_config):
    config = tiny_config("mae")
    seed_everything(0)
    bundle = build_datasets(config.data, config.seed)
    return config, bundle, build_objective(config, bundle.in_chans, bundle.image_size, bundle.mean, bundle.std)


@pytest.mark.slow
def test_paper_protocol_runs_on_digits_and_leaves_the_encoder_alone(digits_objective):
    _, bundle, objective = digits_objective
    before = {name: value.clone() for name, value in objective.state_dict().items()}
    cfg = EvalConfig(protocol="paper", paper_epochs=2, paper_warmup_epochs=1, paper_batch_size=256)
    top1, top5 = paper_linear_probe(objective, bundle, cfg, 0, torch.device("cpu"), "fp32")
    assert 0.0 <= top1 <= top5 <= 1.0
    assert objective.training
    assert all(torch.equal(before[name], value) for name, value in objective.state_dict().items())


@pytest.mark.slow
def test_evaluate_uses_the_protocol_the_config_names(digits_objective):
    config, bundle, objective = digits_objective
    quick = evaluate(objective, bundle, config, torch.device("cpu"), "fp32")
    paper_eval = EvalConfig(protocol="paper", paper_epochs=1, paper_warmup_epochs=0)
    paper_config = config.model_copy(update={"eval": paper_eval})
    paper = evaluate(objective, bundle, paper_config, torch.device("cpu"), "fp32")
    assert set(paper) == set(quick)
    assert paper["eval/knn_top1"] == quick["eval/knn_top1"]
    assert paper["eval/linear_top1"] != quick["eval/linear_top1"]
