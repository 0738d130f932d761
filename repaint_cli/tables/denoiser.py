"""A small diffusion model per table: an MLP denoiser that fits any number of columns.

The denoiser predicts the noise (eps) of an encoded row at a diffusion time,
with fixed variance; it is trained on the table itself with a loss over the
observed cells only (a missing cell's input is a stand-in, see
``train_table_model``). Its config and training settings are ``model_config.py``'s, its files
``model_files.py``'s (both kinds share them).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..core.diffusion import Diffusion
from ..models.unet import timestep_embedding
from ..runtime.threads import one_thread
from .model_config import TableModelConfig, TrainSettings
from .steps import adamw, learning_rate, optimiser_step


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, h, temb):
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h) + temb)))


class TableDenoiser(nn.Module):
    """eps(x_t, t) for rows of ``dim`` encoded values."""

    def __init__(self, dim: int, cfg: TableModelConfig, seed: int = 0):
        super().__init__()
        self.dim, self.cfg = dim, cfg
        with torch.random.fork_rng(devices=[]):  # the layers' own init draws from the global RNG: undone below
            self.inp = nn.Linear(dim, cfg.width)
            self.time = nn.Sequential(nn.Linear(cfg.time_dim, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
            self.blocks = nn.ModuleList(ResBlock(cfg.width) for _ in range(cfg.blocks))
            self.out = nn.Sequential(nn.LayerNorm(cfg.width), nn.SiLU(), nn.Linear(cfg.width, dim))
        self._init_weights(torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def _init_weights(self, gen: torch.Generator) -> None:
        """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from a local generator
        (a library must not reseed or consume the caller's global RNG)."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                bound = 1 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
        nn.init.zeros_(self.out[-1].weight)  # starts by predicting zero noise
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, t):
        if len(t) > 1 and bool((t == t[0]).all()):  # sampling: one time for the block, embedded once
            temb = self.time(timestep_embedding(t[:1], self.cfg.time_dim)).expand(len(t), -1)
        else:
            temb = self.time(timestep_embedding(t, self.cfg.time_dim))
        h = self.inp(x) + temb
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)



def make_diffusion(cfg: TableModelConfig, respacing="", clip_x0=None, fixed_variance: str = "large") -> Diffusion:
    """The diffusion the table models use: eps prediction, a fixed variance ('large': beta, or
    'small': the posterior's; training does not depend on it), x0 not clipped unless ``clip_x0``
    gives a bound (sampling gives one per encoded column: the data's range)."""
    return Diffusion.create(cfg.diffusion_steps, cfg.noise_schedule, respacing, learn_sigma=False, clip_x0=clip_x0,
                            fixed_variance=fixed_variance)


def train_table_model(x: np.ndarray, keep: np.ndarray, cfg: TableModelConfig, settings: TrainSettings,
                      fill: Optional[np.ndarray] = None, model: Optional[TableDenoiser] = None,
                      on_step: Optional[Callable[[int, int, float], None]] = None) -> TableDenoiser:
    """Train (or go on training ``model``) on encoded rows ``x`` whose kept cells are observed.

    The loss is the eps MSE over observed cells only. A missing cell still needs an
    input value: ``fill`` (an earlier imputation, EM style) where given, else a fresh
    draw per step from the same column's observed cells (hot deck), so the model never
    learns a constant stand-in as if it were data.

    Training runs on one thread whatever torch's setting: the weight gradients' sums over the
    batch are split by thread, so two thread counts gave two models (and two tables).
    """
    cfg = cfg.settled("eps")
    settings = settings.settled("eps")
    with one_thread():
        return _train(x, keep, cfg, settings, fill, model, on_step)


def _train(x, keep, cfg: TableModelConfig, settings: TrainSettings, fill, model, on_step) -> TableDenoiser:
    gen = torch.Generator().manual_seed(settings.seed)
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    K = torch.from_numpy(np.ascontiguousarray(keep))
    n, dim = X.shape
    if model is None:
        model = TableDenoiser(dim, cfg, seed=settings.seed)
    model.train()
    diffusion = make_diffusion(cfg)
    hot_deck = _hot_deck_sources(keep) if fill is None else None
    F = torch.from_numpy(np.ascontiguousarray(fill, dtype=np.float32)) if fill is not None else None
    opt = adamw(model, settings.lr)
    batch = min(settings.batch_size, n)
    for step in range(settings.steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        x0, k = X[idx], K[idx]
        if F is not None:
            x0 = torch.where(k, x0, F[idx])
        elif hot_deck:
            x0 = _hot_deck(x0, k, X, hot_deck, gen)
        t = torch.randint(0, diffusion.num_steps, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        eps = model(diffusion.q_sample(x0, t, noise), t)
        loss = (((eps - noise) ** 2) * k).sum() / k.sum().clamp(min=1)
        optimiser_step(model, opt, loss, learning_rate(settings, step))
        if on_step is not None:
            on_step(step + 1, settings.steps, loss.item())
    model.eval()
    return model


def _hot_deck_sources(keep: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per group of encoded dimensions missing together (a column): its dims and its observed rows."""
    groups: dict[bytes, list[int]] = {}
    for d in range(keep.shape[1]):
        if not keep[:, d].all():
            groups.setdefault(keep[:, d].tobytes(), []).append(d)
    return [(torch.tensor(dims), torch.from_numpy(np.flatnonzero(keep[:, dims[0]]))) for dims in groups.values()]


def _hot_deck(x0, k, X, sources, gen):
    x0 = x0.clone()
    for dims, rows in sources:
        donors = X[rows[torch.randint(0, len(rows), (len(x0),), generator=gen)]][:, dims]
        x0[:, dims] = torch.where(k[:, dims], x0[:, dims], donors)
    return x0
