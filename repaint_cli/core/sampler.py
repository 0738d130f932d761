"""The RePaint loop (Lugmayr et al. 2022, Algorithm 1), as pure tensor code.

Per reverse step at time t: noise the known part to level t, blend it in,
ask the model for eps and variance, take one ancestral step down. Per undo
step (a jump back): noise one level up with the forward kernel. Everything the
loop needs per step (t, draw number, whether to inject) lives in device
tensors, so the loop never synchronises with the device; no I/O happens here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .diffusion import Coefficients, clip_to_bound
from .noise import per_image_noise

# Noise draw numbers: draw 0 is the starting noise x_T; schedule step s owns draws
# 4s+4 .. 4s+7, one per purpose below (the fourth is spare).
INIT_DRAW = 0
KNOWN_DRAW, STEP_DRAW, UNDO_DRAW = 0, 1, 2  # purposes: noising the known part, the reverse step, the undo step


def draw_id(step: torch.Tensor | int, purpose: int):
    return step * 4 + 4 + purpose


@dataclass
class Conditioning:
    """What stays fixed over a batch's whole run.

    The noise comes from ``noise_source`` (see :func:`noise.per_image_noise`, the default: one
    key per image); tables pass their own (one key per row) with ``keys`` to match.
    """

    gt: torch.Tensor  # (B, C, H, W) float32 in [-1, 1] (tables: (rows, encoded width))
    keep: torch.Tensor  # (B, 1, H, W) bool, True = known pixel
    keys: torch.Tensor  # (B, 2) int64 noise keys, as the noise source wants them (per image by default)
    coefs: Coefficients  # Diffusion.coefficients(device)
    model_kwargs: dict = field(default_factory=dict)  # e.g. {"y": labels}
    cond_fn: Optional[Callable] = None  # guidance: a gradient of log p (a classifier's, core/guidance.py's) * scale
    noise_index: Optional[torch.Tensor] = None  # arange(C*H*W), reused across draws
    method: str = "repaint"  # the reverse step: a key of METHODS
    noise_source: Callable = per_image_noise  # (keys, draw, shape, index) -> noise of gt's shape
    # (B,) bool, or None: set for an image whose raw model output held NaN/Inf at any step (the clip into
    # [-1, 1] would hide an Inf); kept on the device, read once per batch by the caller
    nonfinite: Optional[torch.Tensor] = None

    def noise(self, draw) -> torch.Tensor:
        """Draw number ``draw`` (see :func:`draw_id`) from the noise source."""
        return self.noise_source(self.keys, draw, self.gt.shape, self.noise_index)


def reverse_step(model, x, cond: Conditioning, t, step, inject):
    """x_t -> x_{t-1} by the conditioning's method; returns (x_{t-1}, predicted x0).
    t, step: int64 0-dim tensors; inject: bool (False before the first reverse step)."""
    return METHODS[cond.method](model, x, cond, t, step, inject)


def repaint_step(model, x, cond: Conditioning, t, step, inject):
    """RePaint (Lugmayr et al. 2022): noise the known part to level t, blend it into x_t,
    then one ancestral step with the model's mean and variance."""
    i = t.reshape(1)  # a 1-element index gathers on the device; a 0-dim one would sync through .item()
    x = torch.where(cond.keep & inject, _noised_known(cond, i, step), x)
    x0, log_var, t_model = _predict(model, x, cond, i)
    return _ancestral(x, x0, log_var, cond, t, i, step, t_model), x0


def ddnm_step(model, x, cond: Conditioning, t, step, inject):
    """DDNM (Wang et al., ICLR 2023), noiseless inpainting: the known pixels go into the
    *predicted x0* (its range-space part A^+ y; the model keeps the null space), then the
    same ancestral step from that x0. x_t itself is never overwritten; its time travel is
    the jump schedule's undo steps."""
    i = t.reshape(1)
    x0, log_var, t_model = _predict(model, x, cond, i)
    x0 = torch.where(cond.keep, cond.gt, x0)
    return _ancestral(x, x0, log_var, cond, t, i, step, t_model), x0


def ddim_step(model, x, cond: Conditioning, t, step, inject):
    """RePaint's blending of the noised known part, then a DDIM step (Song et al. 2021) with
    noise scale eta (coefficients from ``Diffusion.coefficients(eta=...)``): eta 0 is deterministic between
    resamplings, eta 1 has the ancestral step's variance. Guidance (``cond_fn``, a gradient of
    log p) moves the predicted noise, as guided-diffusion's ``condition_score`` does for DDIM."""
    c = cond.coefs
    if c.ddim_sigma is None:
        raise ValueError("the DDIM step needs the coefficients of Diffusion.coefficients(eta=...)")
    i = t.reshape(1)
    x = torch.where(cond.keep & inject, _noised_known(cond, i, step), x)
    x0, _, t_model = _predict(model, x, cond, i)
    if cond.cond_fn is not None:
        x0 = _guided_x0(x, x0, cond, i, t_model)
    eps = (c.sqrt_recip_alphas_cumprod[i] * x - x0) / c.sqrt_recipm1_alphas_cumprod[i]  # from the clipped x0
    x = c.sqrt_alphas_cumprod_prev[i] * x0 + c.ddim_direction[i] * eps
    return x + c.ddim_sigma[i] * (t > 0) * cond.noise(draw_id(step, STEP_DRAW)), x0


def _guided_x0(x, x0, cond: Conditioning, i, t_model):
    """eps - sqrt(1 - abar) * term, as x0: x0 + (1 - abar) / sqrt(abar) * term, clipped again."""
    c = cond.coefs
    term = cond.cond_fn(x, t_model, **cond.model_kwargs)
    x0 = x0 + c.sqrt_one_minus_alphas_cumprod[i] ** 2 * c.sqrt_recip_alphas_cumprod[i] * term
    return clip_to_bound(x0, c.x0_clip)


def _noised_known(cond: Conditioning, i, step):
    """The known image at noise level t: sqrt(abar) gt + sqrt(1 - abar) eps."""
    c = cond.coefs
    noise = cond.noise(draw_id(step, KNOWN_DRAW))
    return c.sqrt_alphas_cumprod[i] * cond.gt + c.sqrt_one_minus_alphas_cumprod[i] * noise


def _predict(model, x, cond: Conditioning, i):
    """The model's predicted x0 (clipped) and log-variance at step index i, and the time it was given."""
    c = cond.coefs
    t_model = c.timestep_map[i].expand(x.shape[0])
    out = model(x, t_model, **cond.model_kwargs).float()
    if cond.nonfinite is not None:  # in place, no sync: the flag is a buffer of a captured graph too
        cond.nonfinite |= ~torch.isfinite(out).flatten(1).all(dim=1)
    pred = out[:, : x.shape[1]]  # eps for RePaint's models; x0 or v for some diffusers models
    if out.shape[1] == 2 * x.shape[1]:  # learned range: interpolate log-variances
        frac = (out[:, x.shape[1]:] + 1) / 2
        log_var = frac * c.log_betas[i] + (1 - frac) * c.posterior_log_variance_clipped[i]
    else:  # fixed large variance
        log_var = c.fixed_log_variance[i].expand_as(x)
    x0 = c.x0_from_x[i] * x + c.x0_from_out[i] * pred  # eps: (x - sqrt(1-abar) eps) / sqrt(abar)
    return clip_to_bound(x0, c.x0_clip), log_var, t_model  # [-1, 1] for RePaint's models


def _ancestral(x, x0, log_var, cond: Conditioning, t, i, step, t_model):
    """x_{t-1} ~ N(posterior mean of (x0, x_t) [+ variance * guidance], exp(log_var))."""
    c = cond.coefs
    mean = c.posterior_mean_coef1[i] * x0 + c.posterior_mean_coef2[i] * x
    if cond.cond_fn is not None:
        mean = mean + log_var.exp() * cond.cond_fn(x, t_model, **cond.model_kwargs)
    sigma = (0.5 * log_var).exp() * (t > 0)
    return mean + sigma * cond.noise(draw_id(step, STEP_DRAW))


METHODS = {"repaint": repaint_step, "ddnm": ddnm_step, "ddim": ddim_step}


def undo_step(x, cond: Conditioning, t, step):
    """x_{t} -> x_{t+1} by the forward kernel with the beta of step t+1."""
    beta = cond.coefs.betas[(t + 1).reshape(1)]
    return (1 - beta).sqrt() * x + beta.sqrt() * cond.noise(draw_id(step, UNDO_DRAW))


@dataclass
class StepInfo:
    """What the callback receives after each schedule step."""

    index: int  # position in the schedule (0-based)
    total: int  # number of schedule steps
    t: int  # the time before the step
    t_next: int  # the time after it
    x: torch.Tensor  # current x_{t_next} (a live buffer: copy it if you keep it)
    x0: Optional[torch.Tensor]  # latest predicted x0 (None before the first reverse step)

    @property
    def is_undo(self) -> bool:
        return self.t_next > self.t


class EagerSteps:
    """Runs each step as ordinary PyTorch calls (the CPU path and the fallback)."""

    def __init__(self, model, cond: Conditioning):
        self.model, self.cond = model, cond

    def reverse(self, x, t, step, inject):
        return reverse_step(self.model, x, self.cond, t, step, inject)

    def undo(self, x, t, step):
        return undo_step(x, self.cond, t, step)


def repaint(model, cond: Conditioning, times: list[int], callback: Optional[Callable[[StepInfo], None]] = None,
            steps=None) -> torch.Tensor:
    """Run RePaint over ``times`` (a jump schedule) and return x_0 in [-1, 1].

    ``steps`` replaces the eager step functions (the engine passes a CUDA-graph
    runner); its results must be identical up to floating point.
    """
    steps = steps or EagerSteps(model, cond)
    device = cond.gt.device
    times_dev = torch.tensor(times, dtype=torch.int64, device=device)
    step_ids = torch.arange(len(times), dtype=torch.int64, device=device)
    inject_flags = step_ids > 0  # the reference has no x0 yet at the very first step
    x = cond.noise(torch.tensor(INIT_DRAW, device=device))
    x0 = None
    total = len(times) - 1
    for i in range(total):
        t_cur, t_next = times[i], times[i + 1]
        if t_next < t_cur:
            x, x0 = steps.reverse(x, times_dev[i], step_ids[i], inject_flags[i])
        else:
            x = steps.undo(x, times_dev[i], step_ids[i])
        if callback is not None:
            callback(StepInfo(i, total, t_cur, t_next, x, x0))
    return x
