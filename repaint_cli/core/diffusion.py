"""Gaussian diffusion schedules as tensors: betas, respacing, posterior coefficients.

Pure math, no models and no files. Arrays are float64 while they are derived
(as guided-diffusion does, so respaced betas match its to the last bit) and
become float32 device tensors only in :meth:`Diffusion.coefficients`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import torch

F64 = torch.float64


PREDICTIONS = ("epsilon", "sample", "v_prediction")
FIXED_VARIANCES = ("large", "small")
NOISE_SCHEDULES = ("linear", "cosine", "squaredcos_cap_v2", "scaled_linear", "sigmoid")


def beta_schedule(name: str, num_steps: int, beta_start: float | None = None, beta_end: float | None = None) -> torch.Tensor:
    """Betas over ``num_steps`` training steps.

    guided-diffusion's names: 'linear' (0.0001 to 0.02, scaled by 1000/num_steps so the curve
    is the same for any step count) and 'cosine'. diffusers' names: 'linear' with explicit
    ``beta_start``/``beta_end`` (taken literally), 'scaled_linear' (linear in sqrt(beta)),
    'squaredcos_cap_v2' (the same cosine as guided-diffusion's) and 'sigmoid'.
    """
    if name == "linear":
        if beta_start is None and beta_end is None:
            scale = 1000 / num_steps  # keeps the same curve for any step count
            return torch.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=F64)
        return torch.linspace(_or(beta_start, 0.0001), _or(beta_end, 0.02), num_steps, dtype=F64)
    if name in ("cosine", "squaredcos_cap_v2"):
        def alpha_bar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999) for i in range(num_steps)]
        return torch.tensor(betas, dtype=F64)
    if name == "scaled_linear":
        return torch.linspace(_or(beta_start, 0.0001) ** 0.5, _or(beta_end, 0.02) ** 0.5, num_steps, dtype=F64) ** 2
    if name == "sigmoid":
        lo, hi = _or(beta_start, 0.0001), _or(beta_end, 0.02)
        return torch.sigmoid(torch.linspace(-6, 6, num_steps, dtype=F64)) * (hi - lo) + lo
    raise ValueError(f"unknown noise_schedule {name!r}: use one of {', '.join(NOISE_SCHEDULES)}")


def _or(value, default):
    return default if value is None else float(value)


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


class _TensorFields:
    """Field-wise operations for the frozen dataclasses of per-step tensors below."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields that hold a tensor, by name (a field left None is left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True, eq=False)
class DiffusionArrays(_TensorFields):
    """guided-diffusion's derived arrays, one entry per kept step, under its names (float64 in
    :attr:`Diffusion.arrays`)."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    log_betas: torch.Tensor
    # the variance for models that do not learn it: guided-diffusion's FIXED_LARGE (beta) or FIXED_SMALL (posterior)
    fixed_log_variance: torch.Tensor
    # x0 = x0_from_x * x_t + x0_from_out * model output, for what the model predicts
    x0_from_x: torch.Tensor
    x0_from_out: torch.Tensor


@dataclass(frozen=True, eq=False)
class DdimArrays(_TensorFields):
    """What DDIM's step adds for one noise scale eta (:meth:`Diffusion.ddim_arrays`)."""

    sqrt_alphas_cumprod_prev: torch.Tensor
    ddim_sigma: torch.Tensor
    ddim_direction: torch.Tensor


@dataclass(frozen=True, eq=False)
class Coefficients(DiffusionArrays):
    """What the sampler gathers from at each step, as device tensors (:meth:`Diffusion.coefficients`):
    the diffusion's arrays, the UNet's time per step, the x0 bound and, for DDIM only, its arrays."""

    timestep_map: torch.Tensor  # int64: the training step the UNet receives for each kept step
    x0_clip: torch.Tensor  # broadcasts against one sample: (1,) one bound (inf: none) or (columns,)
    sqrt_alphas_cumprod_prev: Optional[torch.Tensor] = None  # DDIM only (coefficients(eta=...)), as DdimArrays
    ddim_sigma: Optional[torch.Tensor] = None
    ddim_direction: Optional[torch.Tensor] = None

    def clone(self) -> "Coefficients":
        return replace(self, **{k: v.clone() for k, v in self.tensors().items()})

    def copy_(self, other: "Coefficients") -> "Coefficients":
        """Copies ``other``'s tensors into these (the same fields and shapes), in place; returns self."""
        for k, v in other.tensors().items():
            getattr(self, k).copy_(v)
        return self


def clip_to_bound(x0: torch.Tensor, bound: Optional[torch.Tensor]) -> torch.Tensor:
    """``x0`` clamped to [-bound, bound] element-wise; ``bound`` broadcasts against it (one number, or one
    per column or channel; inf: no bound); None: ``x0`` as it is."""
    return x0 if bound is None else torch.maximum(torch.minimum(x0, bound), -bound)


@dataclass
class Diffusion:
    """A (possibly respaced) diffusion process, with learned-range variance or a fixed one.

    The reverse step's variance: learned (interpolated between beta and the posterior's, when
    the model outputs twice its input's channels) or ``fixed_variance``: 'large' (beta,
    guided-diffusion's FIXED_LARGE, the images' default) or 'small' (the posterior's, FIXED_SMALL).
    ``clip_x0`` bounds the predicted x0: one number for every value (1.0: images in [-1, 1]), or
    one per column / channel (a sequence broadcast against one sample, e.g. a table's columns),
    or None (not clamped).
    """

    betas: torch.Tensor  # float64, one per kept step
    timestep_map: torch.Tensor  # int64: the training step index the UNet receives for each kept step
    learn_sigma: bool = True
    num_train_steps: int = 1000
    clip_x0: float | Sequence[float] | None = 1.0  # x0 is clamped to [-clip_x0, clip_x0]; None: not clamped
    prediction_type: str = "epsilon"  # what the model predicts: epsilon (all RePaint's models), sample (x0) or v
    fixed_variance: str = "large"  # the variance when the model does not learn it: large (beta) or small

    @classmethod
    def create(cls, steps: int = 1000, noise_schedule: str = "linear", timestep_respacing="",
               learn_sigma: bool = True, beta_start: float | None = None, beta_end: float | None = None,
               clip_x0: float | Sequence[float] | None = 1.0, prediction_type: str = "epsilon",
               fixed_variance: str = "large", **_ignored) -> "Diffusion":
        base = beta_schedule(noise_schedule, steps, beta_start, beta_end)
        kept = space_timesteps(steps, timestep_respacing)
        alphas_cumprod = torch.cumprod(1 - base, 0)
        betas, last = [], 1.0
        for i in kept:  # recompute betas so the kept steps keep their cumulative alphas
            betas.append(1 - alphas_cumprod[i] / last)
            last = alphas_cumprod[i]
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"unknown prediction_type {prediction_type!r}: use one of {', '.join(PREDICTIONS)}")
        if fixed_variance not in FIXED_VARIANCES:
            raise ValueError(f"unknown fixed_variance {fixed_variance!r}: use one of {', '.join(FIXED_VARIANCES)}")
        return cls(torch.stack(betas), torch.tensor(kept, dtype=torch.int64), learn_sigma, steps, clip_x0,
                   prediction_type, fixed_variance)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @functools.cached_property
    def arrays(self) -> DiffusionArrays:
        """guided-diffusion's derived arrays (float64), under its names; computed on first use."""
        b = self.betas
        a = 1 - b
        ac = torch.cumprod(a, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=F64), ac[:-1]])
        post_var = b * (1 - ac_prev) / (1 - ac)
        # the variance is 0 at t=0; log of the next one stands in, as guided-diffusion does. A one-step
        # schedule has no next one (guided-diffusion raises): beta_0 stands in, so every array keeps one
        # entry per step (a step at t=0 adds no noise either way)
        after_0 = post_var[1:2] if len(b) > 1 else b[0:1]
        posterior_log_var = torch.log(torch.cat([after_0, post_var[1:]]))
        x0_from_x, x0_from_out = _x0_coefficients(self.prediction_type, ac)
        return DiffusionArrays(
            betas=b,
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            sqrt_alphas_cumprod=ac.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1 - ac).sqrt(),
            sqrt_recip_alphas_cumprod=(1 / ac).sqrt(),
            sqrt_recipm1_alphas_cumprod=(1 / ac - 1).sqrt(),
            posterior_variance=post_var,
            posterior_log_variance_clipped=posterior_log_var,
            posterior_mean_coef1=b * ac_prev.sqrt() / (1 - ac),
            posterior_mean_coef2=(1 - ac_prev) * a.sqrt() / (1 - ac),
            log_betas=b.log(),
            fixed_log_variance=(posterior_log_var if self.fixed_variance == "small"
                                else torch.log(torch.cat([after_0, b[1:]]))),
            x0_from_x=x0_from_x,
            x0_from_out=x0_from_out,
        )

    def coefficients(self, device=None, dtype=torch.float32, eta: float | None = None) -> Coefficients:
        """The arrays the sampler gathers from, as device tensors (float32 by default); with ``eta``,
        also those of the DDIM step (``sampler.ddim_step``)."""
        ddim = {} if eta is None else self.ddim_arrays(eta).tensors()
        moved = {k: v.to(device=device, dtype=dtype) for k, v in {**self.arrays.tensors(), **ddim}.items()}
        # x0_clip: a tensor, not a Python branch, so one captured CUDA graph serves either setting
        return Coefficients(**moved, timestep_map=self.timestep_map.to(device), x0_clip=self.x0_clip(device, dtype))

    def x0_clip(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """``clip_x0`` as a tensor that broadcasts against one sample: (1,) for one bound (inf: none),
        (columns,) for one per column."""
        if self.clip_x0 is None or isinstance(self.clip_x0, (int, float)):
            return torch.tensor([math.inf if self.clip_x0 is None else self.clip_x0], dtype=dtype, device=device)
        return torch.as_tensor(self.clip_x0, dtype=dtype).to(device)

    def ddim_arrays(self, eta: float) -> DdimArrays:
        """DDIM's step (Song et al. 2021) with noise scale ``eta``: x_{t-1} = sqrt(abar_prev) x0
        + ddim_direction eps + ddim_sigma z. In float64: 1 - abar_prev - sigma^2 cancels to
        almost nothing at small t, where float32 would lose the digits."""
        ac_prev = self.arrays.alphas_cumprod_prev
        sigma = eta * self.arrays.posterior_variance.clamp(min=0).sqrt()
        return DdimArrays(sqrt_alphas_cumprod_prev=ac_prev.sqrt(), ddim_sigma=sigma,
                          ddim_direction=(1 - ac_prev - sigma ** 2).clamp(min=0).sqrt())

    # --- per-step math used by training, tests and the plain reference loop -------------

    def q_sample(self, x0, t, noise):
        arr = self.arrays
        return _take(arr.sqrt_alphas_cumprod, t, x0) * x0 + _take(arr.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def p_mean_variance(self, model_out, x_t, t, clip: bool = True):
        """Mean, log-variance and x0 of p(x_{t-1} | x_t) from the UNet's output (eps and v)."""
        arr = self.arrays
        if self.learn_sigma:
            pred, v = model_out.split(x_t.shape[1], dim=1)
            lo = _take(arr.posterior_log_variance_clipped, t, x_t)
            hi = _take(arr.log_betas, t, x_t)
            frac = (v + 1) / 2  # not clamped, as in the reference
            log_var = frac * hi + (1 - frac) * lo
        else:
            pred = model_out
            log_var = _take(arr.fixed_log_variance, t, x_t)
        x0 = _take(arr.x0_from_x, t, x_t) * x_t + _take(arr.x0_from_out, t, x_t) * pred
        if clip and self.clip_x0 is not None:
            x0 = clip_to_bound(x0, self.x0_clip(x0.device, x0.dtype))
        mean = _take(arr.posterior_mean_coef1, t, x_t) * x0 + _take(arr.posterior_mean_coef2, t, x_t) * x_t
        return mean, log_var, x0

    def q_posterior(self, x0, x_t, t):
        arr = self.arrays
        mean = _take(arr.posterior_mean_coef1, t, x_t) * x0 + _take(arr.posterior_mean_coef2, t, x_t) * x_t
        return mean, _take(arr.posterior_log_variance_clipped, t, x_t)

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


def _x0_coefficients(prediction_type: str, ac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_from_x, x0_from_out): the predicted x0 as a linear function of x_t and the model's output, per
    step. As data, not a branch in the step, so the sampler (and a captured CUDA graph) serves every kind."""
    if prediction_type == "sample":  # the output is x0 itself
        return torch.zeros_like(ac), torch.ones_like(ac)
    if prediction_type == "v_prediction":  # v = sqrt(ac) eps - sqrt(1-ac) x0 => x0 = sqrt(ac) x_t - sqrt(1-ac) v
        return ac.sqrt(), -(1 - ac).sqrt()
    return (1 / ac).sqrt(), -(1 / ac - 1).sqrt()  # eps: x0 = (x_t - sqrt(1-ac) eps) / sqrt(ac)


def diffusion_from_hparams(hp: dict, timestep_respacing="") -> Diffusion:
    """The diffusion a model was trained with, from its hyper-parameters (RePaint conf keys,
    plus beta_start / beta_end / clip_range for models from diffusers), respaced as asked."""
    clip = hp.get("clip_range", 1.0) if hp.get("clip_denoised", True) else None
    return Diffusion.create(steps=int(hp.get("diffusion_steps", 1000)), noise_schedule=hp.get("noise_schedule", "linear"),
                            timestep_respacing=timestep_respacing, learn_sigma=bool(hp.get("learn_sigma", True)),
                            beta_start=hp.get("beta_start"), beta_end=hp.get("beta_end"),
                            clip_x0=None if clip is None else float(clip),
                            prediction_type=hp.get("prediction_type", "epsilon"))


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
