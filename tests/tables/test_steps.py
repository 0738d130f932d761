"""tables/steps.py: AdamW without weight decay, a linear warm-up then a cosine decay to zero, gradients clipped."""
import math
from types import SimpleNamespace

import pytest
import torch

from repaint_cli.tables.steps import adamw, learning_rate, optimiser_step


def test_the_rate_warms_up_linearly_then_decays_as_a_cosine_to_zero():
    s = SimpleNamespace(lr=1e-3, warmup=10, steps=100)
    assert learning_rate(s, 0) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(0)))
    assert learning_rate(s, 4) == pytest.approx(5e-4 * 0.5 * (1 + math.cos(math.pi * 4 / 100)))
    assert learning_rate(s, 50) == pytest.approx(1e-3 * 0.5)
    rates = [learning_rate(s, k) for k in range(9, 100)]
    assert all(a > b for a, b in zip(rates, rates[1:])), "after the warm-up the rate only falls"
    assert learning_rate(s, 100) == pytest.approx(0.0, abs=1e-12)


def test_adamw_has_no_weight_decay():
    opt = adamw(torch.nn.Linear(3, 2), lr=0.01)
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["weight_decay"] == 0.0 and g["lr"] == 0.01 for g in opt.param_groups)


def test_a_step_sets_the_rate_and_clips_the_gradient_to_norm_one():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    loss = (model(torch.full((8, 4), 100.0)) ** 2).mean()  # a huge gradient
    optimiser_step(model, opt, loss, lr=0.5)
    assert opt.param_groups[0]["lr"] == 0.5
    moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert moved.norm().item() == pytest.approx(0.5, rel=1e-4), "SGD moved lr * the clipped gradient (norm 1)"
