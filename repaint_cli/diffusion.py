"""Gaussian diffusion schedules as tensors: betas, respacing, posterior coefficients.

Pure math, no models and no files. Arrays are float64 while they are derived
(as guided-diffusion does, so respaced betas match its to the last bit) and
become float32 device tensors only in :meth:`Diffusion.coefficients`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

F64 = torch.float64


def beta_schedule(name: str, num_steps: int) -> torch.Tensor:
    """guided-diffusion's named schedules ('linear', 'cosine') over ``num_steps`` training steps."""
    if name == "linear":
        scale = 1000 / num_steps  # keeps the same curve for any step count
        return torch.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=F64)
    if name == "cosine":
        def alpha_bar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999) for i in range(num_steps)]
        return torch.tensor(betas, dtype=F64)
    raise ValueError(f"unknown noise_schedule {name!r}: use 'linear' or 'cosine'")


def space_timesteps(num_steps: int, section_counts) -> list[int]:
    """The training steps kept by guided-diffusion's ``timestep_respacing``.

    ``'250'`` keeps 250 evenly spread steps; ``'10,15,20'`` splits the range in
    three sections and keeps that many in each; ``'ddimN'`` uses a whole stride.
    """
    if section_counts in ("", None):
        return list(range(num_steps))
    if isinstance(section_counts, int):
        section_counts = [section_counts]
    elif isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            wanted = int(section_counts[len("ddim"):])
            for stride in range(1, num_steps):
                if len(range(0, num_steps, stride)) == wanted:
                    return list(range(0, num_steps, stride))
            raise ValueError(f"cannot make exactly {wanted} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_steps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):  # a running sum, as the reference: it rounds differently from stride*j at .5 ties
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


@dataclass
class Diffusion:
    """A (possibly respaced) diffusion process with learned-range variance."""

    betas: torch.Tensor  # float64, one per kept step
    timestep_map: torch.Tensor  # int64: the training step index the UNet receives for each kept step
    learn_sigma: bool = True
    num_train_steps: int = 1000

    @classmethod
    def create(cls, steps: int = 1000, noise_schedule: str = "linear", timestep_respacing="",
               learn_sigma: bool = True, **_ignored) -> "Diffusion":
        base = beta_schedule(noise_schedule, steps)
        kept = space_timesteps(steps, timestep_respacing)
        alphas_cumprod = torch.cumprod(1 - base, 0)
        betas, last = [], 1.0
        for i in kept:  # recompute betas so the kept steps keep their cumulative alphas
            betas.append(1 - alphas_cumprod[i] / last)
            last = alphas_cumprod[i]
        return cls(torch.stack(betas), torch.tensor(kept, dtype=torch.int64), learn_sigma, steps)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    def arrays(self) -> dict[str, torch.Tensor]:
        """guided-diffusion's derived arrays (float64), under its names; computed once."""
        cached = self.__dict__.get("_arrays")
        if cached is None:
            cached = self.__dict__["_arrays"] = self._derive_arrays()
        return cached

    def _derive_arrays(self) -> dict[str, torch.Tensor]:
        b = self.betas
        a = 1 - b
        ac = torch.cumprod(a, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=F64), ac[:-1]])
        post_var = b * (1 - ac_prev) / (1 - ac)
        # the variance is 0 at t=0; log of the next one stands in, as guided-diffusion does. A one-step
        # schedule has no next one (guided-diffusion raises): beta_0 stands in, so every array keeps one
        # entry per step (a step at t=0 adds no noise either way)
        after_0 = post_var[1:2] if len(b) > 1 else b[0:1]
        return {
            "betas": b,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / ac).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / ac - 1).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": torch.log(torch.cat([after_0, post_var[1:]])),
            "posterior_mean_coef1": b * ac_prev.sqrt() / (1 - ac),
            "posterior_mean_coef2": (1 - ac_prev) * a.sqrt() / (1 - ac),
            "log_betas": b.log(),
            # guided-diffusion's FIXED_LARGE variance, for models without learned sigma
            "fixed_log_variance": torch.log(torch.cat([after_0, b[1:]])),
        }

    def coefficients(self, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """The arrays the sampler gathers from, as device tensors (float32 by default)."""
        out = {k: v.to(device=device, dtype=dtype) for k, v in self.arrays().items()}
        out["timestep_map"] = self.timestep_map.to(device)
        return out

    # --- per-step math used by training, tests and the plain reference loop -------------

    def q_sample(self, x0, t, noise):
        arr = self.arrays()
        return _take(arr["sqrt_alphas_cumprod"], t, x0) * x0 + _take(arr["sqrt_one_minus_alphas_cumprod"], t, x0) * noise

    def p_mean_variance(self, model_out, x_t, t, clip: bool = True):
        """Mean, log-variance and x0 of p(x_{t-1} | x_t) from the UNet's output (eps and v)."""
        arr = self.arrays()
        if self.learn_sigma:
            eps, v = model_out.split(x_t.shape[1], dim=1)
            lo = _take(arr["posterior_log_variance_clipped"], t, x_t)
            hi = _take(arr["log_betas"], t, x_t)
            frac = (v + 1) / 2  # not clamped, as in the reference
            log_var = frac * hi + (1 - frac) * lo
        else:
            eps = model_out
            log_var = _take(arr["fixed_log_variance"], t, x_t)
        x0 = _take(arr["sqrt_recip_alphas_cumprod"], t, x_t) * x_t - _take(arr["sqrt_recipm1_alphas_cumprod"], t, x_t) * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        mean = _take(arr["posterior_mean_coef1"], t, x_t) * x0 + _take(arr["posterior_mean_coef2"], t, x_t) * x_t
        return mean, log_var, x0

    def q_posterior(self, x0, x_t, t):
        arr = self.arrays()
        mean = _take(arr["posterior_mean_coef1"], t, x_t) * x0 + _take(arr["posterior_mean_coef2"], t, x_t) * x_t
        return mean, _take(arr["posterior_log_variance_clipped"], t, x_t)

    def training_losses(self, model, x0, t, noise=None, model_kwargs=None):
        """Improved DDPM's hybrid objective: eps MSE plus the variational bound for the variance.

        The bound term sees the mean through a stop-gradient, so it trains only the
        variance, and is scaled by num_train_steps/1000 (guided-diffusion's RESCALED_MSE).
        """
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, self.timestep_map.to(t.device)[t], **(model_kwargs or {}))
        c = x0.shape[1]
        eps = out[:, :c]
        mse = ((noise - eps) ** 2).mean(dim=(1, 2, 3))
        if not self.learn_sigma:
            return {"loss": mse, "mse": mse}
        frozen = torch.cat([eps.detach(), out[:, c:]], dim=1)
        mean, log_var, _ = self.p_mean_variance(frozen, x_t, t, clip=False)
        true_mean, true_log_var = self.q_posterior(x0, x_t, t)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean(dim=(1, 2, 3)) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl) * (self.num_steps / 1000.0)
        return {"loss": mse + vb, "mse": mse, "vb": vb}


def _take(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return arr.to(like.device)[t].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of 8-bit data in [-1, 1] under a Gaussian, per pixel bin."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )
