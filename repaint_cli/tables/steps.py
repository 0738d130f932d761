"""The optimiser both table models train with: AdamW without weight decay, a linear warm-up then a
cosine decay to zero, gradients clipped to norm 1. Pure torch, no I/O. ``conditional.py`` and
``denoiser.py`` each keep their own batches and loss, and take their steps from here."""
from __future__ import annotations

import math

import torch
from torch import nn


def adamw(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW in one fused kernel where this torch has it on the CPU (2.4 and later): the optimiser is a
    noticeable share of a small model's step (benchmarks/RESULTS.md#tables-training-step)."""
    params = list(model.parameters())
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older torch: the default (foreach) update
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def learning_rate(settings, step: int) -> float:
    """The rate at ``step`` (0-based) of ``settings.steps``: warm-up over ``settings.warmup`` steps, cosine after."""
    warm = min(1.0, (step + 1) / settings.warmup)
    return settings.lr * warm * 0.5 * (1 + math.cos(math.pi * step / settings.steps))


def optimiser_step(model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
