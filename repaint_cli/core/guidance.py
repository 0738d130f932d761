"""Reconstruction guidance: a pull of each reverse step towards the known values, for images and tables.

The MCG idea (Chung et al., NeurIPS 2022) and Ho et al. 2022's reconstruction guidance: the
gradient over x_t of the log-likelihood of the known values under the model's predicted x0,
log p ~ -|keep * (x0 - gt)|^2 / (2 r_t^2) with r_t^2 = (1 - abar_t) / abar_t (the predicted x0's
error grows with the noise, as in PiGDM, Song et al. 2023), times a scale. It runs through the
sampler's guidance hook (``Conditioning.cond_fn``: the ancestral step's mean += variance * term;
the DDIM step moves its eps by -sqrt(1 - abar_t) * term). Scale 0 is no guidance at all.
"""
from __future__ import annotations

import torch


class KeepsGraph(torch.nn.Module):
    """The model, run with autograd on during sampling, keeping its last call's graph: the
    guidance needs the gradient at the very input the reverse step just evaluated, and
    reusing that forward pass saves one of the step's three passes."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cfg, self.last = model, getattr(model, "cfg", None), None

    def forward(self, x, t, **kwargs):
        with torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            out = self.model(x_in, t, **kwargs)
        self.last = (x, t, x_in, out)
        return out.detach()

    def graph_for(self, x, t, **kwargs):
        """(input, output) with autograd history for model(x, t), reusing the last call when it was this one."""
        # identity, not torch.equal: the sampler passes the very t it gave the model, and a comparison of values
        # would read the device (a sync, impossible inside a captured CUDA graph)
        if self.last is not None and self.last[0] is x and self.last[1] is t:
            x_in, out = self.last[2], self.last[3]
        else:
            x_in = x.detach().clone().requires_grad_(True)
            out = self.model(x_in, t, **kwargs)
        self.last = None
        return x_in, out


class OnSomeCalls(torch.nn.Module):
    """The model for the sampler when only some calls take the guidance (``core.schedule.guided_calls``: one flag
    per call, in order): a flagged call runs ``guided`` (a :class:`KeepsGraph`) and gets ``term``; the others run
    the plain ``model`` (no autograd graph, no backward) and get no term, so they cost an unguided call. It counts
    its calls, so it serves one run of the sampler (and is never captured in a CUDA graph: the choice is made on
    the host at each call)."""

    per_call = True  # runtime/cuda_graphs: a choice made on the host at each call, which a replay would skip

    def __init__(self, model, guided: KeepsGraph, term, flags: list[bool]):
        super().__init__()
        self.model, self.guided, self.term, self.flags = model, guided, term, list(flags)
        self.cfg = getattr(model, "cfg", None)
        self.calls, self.on = 0, False

    def forward(self, x, t, **kwargs):
        # past the flags (a longer schedule than planned) every call is guided: never silently less guidance
        self.on = self.flags[self.calls] if self.calls < len(self.flags) else True
        self.calls += 1
        return (self.guided if self.on else self.model)(x, t, **kwargs)

    def cond_fn(self, x, t, **kwargs):
        return self.term(x, t, **kwargs) if self.on else torch.zeros_like(x)


def predicted_x0(x, out, a, prediction_type: str = "epsilon"):
    """x0 from the model's output (its first x.shape[1] channels) at abar ``a``, unclipped."""
    pred = out[:, : x.shape[1]]  # learned-variance models append their variance channels
    if prediction_type == "sample":
        return pred
    if prediction_type == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * pred
    return (x - (1 - a).sqrt() * pred) / a.sqrt()


def reconstruction_guidance(model: KeepsGraph, gt: torch.Tensor, keep: torch.Tensor, scale: float,
                            alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"):
    """The guidance term as a ``cond_fn(x, t_model, **model_kwargs)``. ``alphas_cumprod``: the
    model's own (unrespaced) abar, indexed by the time the model is given; ``keep``: True where
    ``gt`` is known (broadcast over ``gt``)."""
    abar = alphas_cumprod.float().to(gt.device)

    def cond_fn(x, t_model, **kwargs):
        with torch.enable_grad():
            x_in, out = model.graph_for(x, t_model, **kwargs)
            a = abar[t_model].reshape(-1, *[1] * (x.dim() - 1))
            x0 = predicted_x0(x_in, out.float(), a, prediction_type)
            # the factor scale * a / (1 - a) goes in before the backward, not after: the gradient reaching the
            # (fp16) model's output is then scale * (x - sqrt(a) gt - sqrt(1 - a) eps) / sqrt(1 - a) on the
            # known pixels, a few units, where unscaled it is (x0 - gt) sqrt((1 - a) / a), ~157^2 times larger
            # near t = T, enough to overflow fp16 in the model's backward
            weight = (scale * a / (1 - a)).detach()
            err = 0.5 * (((x0 - gt) ** 2) * keep * weight).sum()
            grad, = torch.autograd.grad(err, x_in)
        return -grad

    return cond_fn
