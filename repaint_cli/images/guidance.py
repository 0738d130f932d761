"""Class labels and classifier guidance for class-conditional models (ImageNet 256).

As guided-diffusion's ``condition_mean``: the gradient of log p(y | x_t) from a
noisy-image classifier, times ``classifier_scale``, shifts the mean of each
reverse step by variance * gradient. The gradient is always taken in fp32.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Optional

import torch
import torch.nn.functional as F

from ..core.guidance import KeepsGraph, OnSomeCalls, reconstruction_guidance


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names, in index order (package data)."""
    text = resources.files("repaint_cli").joinpath("data/imagenet_classes.txt").read_text()
    return [line for line in text.splitlines() if line]


def parse_class(label, num_classes: int) -> Optional[int]:
    """An index, an ImageNet class name, or 'random' (None: drawn per image)."""
    if label is None or str(label) == "random":
        return None
    s = str(label).strip()
    if s.lstrip("-").isdigit():
        idx = int(s)
        if not 0 <= idx < num_classes:
            raise ValueError(f"--class {s}: index out of range 0..{num_classes - 1}")
        return idx
    names = imagenet_classes() if num_classes == 1000 else []
    lowered = [n.lower() for n in names]
    if s.lower() in lowered:
        return lowered.index(s.lower())
    close = [n for n in names if s.lower() in n.lower()][:5]
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    raise ValueError(f"--class {s!r}: not an ImageNet class name or index{hint}")


class Guidance:
    """Labels for a class-conditional model, and the classifier's gradient when one is used."""

    def __init__(self, num_classes: int, label=None, classifier=None, scale: float = 1.0):
        self.num_classes = num_classes
        self.fixed = parse_class(label, num_classes)
        self.classifier = classifier
        self.scale = float(scale)
        # scale 0 means no guidance at all: the exact same computation as without a classifier
        self.cond_fn = self._cond_fn if classifier is not None and self.scale != 0 else None

    def label_for(self, job) -> int:
        """The given class, else the one drawn for the image: its job's label key (seed and name only)."""
        return self.fixed if self.fixed is not None else job.keys.label % self.num_classes

    def model_kwargs(self, batch, device) -> dict:
        labels = [self.label_for(p.job) for p in batch]
        return {"y": torch.tensor(labels, dtype=torch.int64, device=device)}

    def _cond_fn(self, x, t, y=None, **_):
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            x_in = x.detach().float().requires_grad_(True)
            log_probs = F.log_softmax(self.classifier(x_in, t).float(), dim=-1)
            selected = log_probs[torch.arange(len(y), device=y.device), y]
            return torch.autograd.grad(selected.sum(), x_in)[0] * self.scale


def reconstruction(model, diffusion, gt: torch.Tensor, keep: torch.Tensor, scale: float, cond_fn=None,
                   guided: Optional[list] = None):
    """(model to sample with, cond_fn) for reconstruction guidance at ``scale`` on one batch
    (``core/guidance.py``); scale 0 returns them unchanged, the exact computation without it.
    A classifier's ``cond_fn`` and the reconstruction term add up (both are gradients of log p).
    ``guided``: one flag per UNet call of the run (``core.schedule.guided_calls``), None for all: the
    reconstruction term only on the flagged calls, the others without its backward pass."""
    if not scale:
        return model, cond_fn
    # the model is given the kept steps' training times: abar at those times is all the term reads
    abar = torch.ones(diffusion.num_train_steps, dtype=torch.float64)
    abar[diffusion.timestep_map] = diffusion.arrays.alphas_cumprod.double()
    net = KeepsGraph(model)
    recon = reconstruction_guidance(net, gt, keep, float(scale), abar, diffusion.prediction_type)
    if guided is not None and not all(guided):
        net = OnSomeCalls(model, net, recon, guided)
        recon = net.cond_fn
    if cond_fn is None:
        return net, recon
    return net, lambda x, t, **kw: recon(x, t, **kw) + cond_fn(x, t, **kw)
