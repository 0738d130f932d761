"""Making a fast step from a model and a batch: device, precision, CUDA graphs, threads.

The sampler's math lives in :mod:`sampler`; this module only decides *how* it
runs. On CUDA: fp16 autocast for the UNet (the sampler's state stays fp32),
``channels_last``, and the reverse and undo steps captured once per batch
shape as CUDA graphs and replayed. On the CPU: fp32, eager, optional
``torch.compile``. Every choice can be switched off and falls back cleanly.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from .sampler import Conditioning, EagerSteps, reverse_step, undo_step

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class EngineOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    cuda_graphs: bool = True
    channels_last: Optional[bool] = None  # None: on for CUDA, off on CPU (measured: benchmarks/RESULTS.md)
    compile: bool = False
    threads: Optional[int] = None


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The UNet's compute dtype. Half precision on the CPU is refused: it is ~300x slower there."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if device.type != "cuda" and precision != "fp32":
        warnings.warn(f"--precision {precision} is for CUDA; running fp32 on {device.type}")
        return torch.float32
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        warnings.warn("this GPU has no bf16 support; using fp16")
        return torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def set_threads(threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(int(threads))


class PrecisionModel(torch.nn.Module):
    """Calls the UNet under autocast (and channels_last input); returns fp32."""

    def __init__(self, model, dtype: torch.dtype, device: torch.device, channels_last: bool):
        super().__init__()
        self.inner = model
        self.dtype = dtype
        self.device_type = device.type
        self.channels_last = channels_last

    def forward(self, x, t, **kw):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            return self.inner(x, t, **kw).float()
        # cache off: required under CUDA graph capture, and weights are cast once per call anyway
        with torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=False):
            return self.inner(x, t, **kw).float()


def prepare_model(model, device: torch.device, opts: EngineOptions) -> PrecisionModel:
    """Put the model on its device in the engine's layout; wrap it for precision."""
    set_threads(opts.threads)
    dtype = resolve_precision(opts.precision, device)
    channels_last = opts.channels_last if opts.channels_last is not None else device.type == "cuda"
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    wrapped = PrecisionModel(model, dtype, device, channels_last)
    if opts.compile:
        try:
            wrapped = torch.compile(wrapped, dynamic=False)
        except Exception as e:  # compile is an optimisation: never fatal
            warnings.warn(f"torch.compile unavailable ({e}); running eager")
    return wrapped


class CudaGraphSteps:
    """The reverse and undo steps captured as CUDA graphs for one batch, then replayed.

    Inputs live in static buffers (x, t, step, inject); each call copies the new
    values in (device to device, no host sync) and replays. The noise is drawn
    inside the graph from the counter-based generator, so per-image determinism
    holds exactly as in eager mode.
    """

    def __init__(self, model, cond: Conditioning, warmup: int = 2):
        dev = cond.gt.device
        self.x = torch.zeros_like(cond.gt)
        self.t = torch.ones((), dtype=torch.int64, device=dev)
        self.step = torch.zeros((), dtype=torch.int64, device=dev)
        self.inject = torch.zeros((), dtype=torch.bool, device=dev)
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):  # lets kernels pick algorithms and allocate outside capture
                reverse_step(model, self.x, cond, self.t, self.step, self.inject)
                undo_step(self.x, cond, self.t, self.step)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.g_reverse = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.g_reverse):
            self.out_x, self.out_x0 = reverse_step(model, self.x, cond, self.t, self.step, self.inject)
        self.g_undo = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.g_undo, pool=self.g_reverse.pool()):
            self.out_undo = undo_step(self.x, cond, self.t, self.step)

    def _load(self, x, t, step):
        if x.data_ptr() != self.x.data_ptr():
            self.x.copy_(x)
        self.t.copy_(t)
        self.step.copy_(step)

    def reverse(self, x, t, step, inject):
        self._load(x, t, step)
        self.inject.copy_(inject)
        self.g_reverse.replay()
        return self.out_x, self.out_x0

    def undo(self, x, t, step):
        self._load(x, t, step)
        self.g_undo.replay()
        return self.out_undo


def make_steps(model, cond: Conditioning, opts: EngineOptions, log=None):
    """CUDA graphs where they can work (CUDA, no classifier autograd), else eager."""
    if opts.cuda_graphs and cond.gt.is_cuda and cond.cond_fn is None and not opts.compile:
        try:
            return CudaGraphSteps(model, cond)
        except Exception as e:  # an op that cannot be captured: run eager, say so
            if log:
                log(f"CUDA graph capture failed ({type(e).__name__}: {e}); running eager")
            torch.cuda.synchronize()
    return EagerSteps(model, cond)


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def auto_batch_size(model, image_size: int, device: torch.device, n_images: int, cap: int = 64) -> int:
    """The largest batch that should fit: from free CUDA memory, or a CPU default.

    On CUDA one UNet call at batch 1 is measured for its peak activation memory
    and the batch is sized to 80% of what is free. On the CPU throughput per
    image stops improving beyond a small batch (benchmarks/RESULTS.md), so 4.
    """
    if device.type != "cuda":
        return max(1, min(4, n_images))
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    t = torch.zeros(1, dtype=torch.int64, device=device)
    kw = {"y": torch.zeros(1, dtype=torch.int64, device=device)} if getattr(model, "num_classes", None) else {}
    with torch.no_grad():
        model(x, t, **kw)
    per_image = max(torch.cuda.max_memory_allocated(device) - base, 1)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(cap, n_images, int(0.8 * free // (per_image * 1.5))))
