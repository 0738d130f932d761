"""The RePaint loop written the straightforward way, as the paper's code runs it.

Coefficients are gathered per step from float64 arrays and copied to the
device (``_extract_into_tensor`` style), the time list walked with Python
ints, the known region blended with arithmetic. It draws the same noise as
:mod:`sampler`, so the two must agree to floating-point precision: the tests
use it as an independent check, and ``benchmarks/speed.py`` as the baseline.
"""
from __future__ import annotations


import torch

from .diffusion import Diffusion
from .noise import draw_noise
from .sampler import INIT_DRAW, KNOWN_DRAW, STEP_DRAW, UNDO_DRAW, draw_id


def _extract(arr: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((like.shape[0], 1, 1, 1), float(arr[t]), device=like.device, dtype=like.dtype)


@torch.no_grad()
def plain_repaint(model, diffusion: Diffusion, gt, keep, times, keys, model_kwargs=None):
    arr = diffusion.arrays
    tmap = diffusion.timestep_map.tolist()
    shape = tuple(gt.shape[1:])
    m = keep.float()

    def noise(draw: int):
        return draw_noise(keys, draw, shape)

    x = noise(INIT_DRAW)
    for i, (t_last, t_cur) in enumerate(zip(times[:-1], times[1:])):
        if t_cur < t_last:
            if i > 0:
                known = _extract(arr.sqrt_alphas_cumprod, t_last, x) * gt + \
                    _extract(arr.sqrt_one_minus_alphas_cumprod, t_last, x) * noise(draw_id(i, KNOWN_DRAW))
                x = m * known + (1 - m) * x
            ts = torch.full((x.shape[0],), tmap[t_last], device=x.device, dtype=torch.int64)
            out = model(x, ts, **(model_kwargs or {})).float()
            eps, v = out.split(x.shape[1], dim=1)
            x0 = (_extract(arr.sqrt_recip_alphas_cumprod, t_last, x) * x
                  - _extract(arr.sqrt_recipm1_alphas_cumprod, t_last, x) * eps).clamp(-1, 1)
            mean = _extract(arr.posterior_mean_coef1, t_last, x) * x0 + \
                _extract(arr.posterior_mean_coef2, t_last, x) * x
            frac = (v + 1) / 2
            log_var = frac * _extract(arr.log_betas, t_last, x) + \
                (1 - frac) * _extract(arr.posterior_log_variance_clipped, t_last, x)
            nonzero = 1.0 if t_last != 0 else 0.0
            x = mean + nonzero * torch.exp(0.5 * log_var) * noise(draw_id(i, STEP_DRAW))
        else:
            beta = _extract(arr.betas, t_last + 1, x)
            x = torch.sqrt(1 - beta) * x + torch.sqrt(beta) * noise(draw_id(i, UNDO_DRAW))
    return x
