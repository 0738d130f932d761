"""Making a fast step from a model and a batch: device, precision, CUDA graphs, threads.

The sampler's math lives in :mod:`sampler`; this module only decides *how* it
runs. On CUDA: fp16 autocast for the UNet (the sampler's state stays fp32),
``channels_last``, and the reverse and undo steps captured once per batch
shape as CUDA graphs and replayed. On the CPU: fp32, ``channels_last``, eager,
optional ``torch.compile``. Every choice can be switched off and falls back cleanly.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from .invariant import set_batch_invariant
from .sampler import Conditioning, EagerSteps, reverse_step, undo_step

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class EngineOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    cuda_graphs: bool = True
    channels_last: Optional[bool] = None  # None = on: faster on CUDA, and 1.1-1.3x on this CPU (benchmarks/RESULTS.md)
    compile: bool = False
    threads: Optional[int] = None
    batch_invariant: bool = True  # CPU only: an image's UNet output the same bits in any batch (invariant.py)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RuntimeError(f"--device {name}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise RuntimeError(f"--device {name}: use auto, cpu, cuda or cuda:N")
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
    channels_last = opts.channels_last if opts.channels_last is not None else True
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        set_batch_invariant(model, opts.batch_invariant and not opts.compile)  # compile makes its own kernels
    wrapped = PrecisionModel(model, dtype, device, channels_last)
    if opts.compile:
        try:
            wrapped = torch.compile(wrapped, dynamic=False)
        except Exception as e:  # compile is an optimisation: never fatal
            warnings.warn(f"torch.compile unavailable ({e}); running eager")
    return wrapped


class CudaGraphSteps:
    """The reverse and undo steps captured as CUDA graphs for one batch shape, then replayed.

    Everything a step reads lives in static buffers owned here: the batch
    (gt, keep mask, noise keys, labels, coefficients) is copied in once per
    batch by :meth:`load_batch`, and x, t and the draw number once per step
    (device to device, no host sync). The noise is drawn inside the graph from
    the counter-based generator, so per-image determinism holds exactly as in
    eager mode. One capture serves every batch of the same shape.
    """

    def __init__(self, model, cond: Conditioning, warmup: int = 2, capture=None):
        dev = cond.gt.device
        self.cond = Conditioning(
            cond.gt.clone(), cond.keep.clone(), cond.keys.clone(), {k: v.clone() for k, v in cond.coefs.items()},
            {k: v.clone() for k, v in cond.model_kwargs.items()}, None,
            torch.arange(cond.gt[0].numel(), device=dev),
        )
        self.x = torch.zeros_like(cond.gt)
        self.t = torch.ones((), dtype=torch.int64, device=dev)
        self.step = torch.zeros((), dtype=torch.int64, device=dev)
        self.inject = torch.zeros((), dtype=torch.bool, device=dev)

        def reverse():
            return reverse_step(model, self.x, self.cond, self.t, self.step, self.inject)

        def undo():
            return (undo_step(self.x, self.cond, self.t, self.step),)

        capture = capture or _cuda_capture
        if dev.type == "cuda":
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(warmup):  # lets kernels pick algorithms and allocate outside capture
                    reverse()
                    undo()
            torch.cuda.current_stream(dev).wait_stream(side)
        with torch.no_grad():
            # separate memory pools: a shared one could place out_undo where the reverse graph writes
            self.g_reverse, (self.out_x, self.out_x0) = capture(reverse, None)
            self.g_undo, (self.out_undo,) = capture(undo, None)

    def load_batch(self, cond: Conditioning) -> "CudaGraphSteps":
        static = self.cond
        static.gt.copy_(cond.gt)
        static.keep.copy_(cond.keep)
        static.keys.copy_(cond.keys)
        for k, v in cond.model_kwargs.items():
            static.model_kwargs[k].copy_(v)
        for k, v in cond.coefs.items():
            static.coefs[k].copy_(v)
        return self

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


def _cuda_capture(fn, share_pool_with=None):
    """Capture ``fn`` as a CUDA graph; returns (graph, its static outputs)."""
    graph = torch.cuda.CUDAGraph()
    pool = share_pool_with.pool() if share_pool_with is not None else None
    with torch.cuda.graph(graph, pool=pool):
        outs = fn()
    return graph, outs


class EagerReplay:
    """Stands in for a CUDA graph where there is none (tests of the buffer plumbing on the CPU):
    replaying re-runs the function and copies its results into the same output buffers."""

    def __init__(self, fn):
        self.fn = fn
        self.outs = fn()

    def replay(self):
        for out, new in zip(self.outs, self.fn()):
            out.copy_(new)

    @staticmethod
    def capture(fn, share_pool_with=None):
        g = EagerReplay(fn)
        return g, g.outs


def graph_signature(model, cond: Conditioning) -> tuple:
    """What a captured graph depends on besides buffer contents: the model and every shape."""
    return (id(model), tuple(cond.gt.shape), tuple(cond.keep.shape), str(cond.gt.device),
            tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(cond.model_kwargs.items())),
            tuple((k, tuple(v.shape)) for k, v in sorted(cond.coefs.items())))


def make_steps(model, cond: Conditioning, opts: EngineOptions, log=None, cache: Optional[dict] = None):
    """CUDA graphs where they can work (CUDA, no classifier autograd), else eager.

    ``cache`` (a dict kept for a run) reuses a capture for every batch of the same shape.
    """
    if (opts.cuda_graphs and cond.gt.is_cuda and cond.cond_fn is None and not opts.compile
            and not (cache or {}).get("capture_failed")):
        sig = graph_signature(model, cond)
        if cache is not None and sig in cache:
            return cache[sig].load_batch(cond)
        try:
            runner = CudaGraphSteps(model, cond)
        except Exception as e:  # an op that cannot be captured: run eager, say so
            if is_oom(e):
                raise  # the batch is too big, not the graph: let the caller split it
            if log:
                log(f"CUDA graph capture failed ({type(e).__name__}: {e}); running eager", "warning")
            torch.cuda.synchronize()
            if cache is not None:
                cache["capture_failed"] = True  # do not retry the capture for every batch
            return EagerSteps(model, cond)
        if cache is not None:
            cache[sig] = runner
        return runner
    return EagerSteps(model, cond)


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def auto_batch_size(model, image_size: int, device: torch.device, n_images: int, cap: int = 64) -> int:
    """The largest batch that should fit: from free CUDA memory, or a CPU default.

    On CUDA one UNet call at batch 1 is measured for its peak activation memory
    and the batch is sized to 80% of what is free. On the CPU batching pays at
    small sizes (emoji32: 4.8 ms per image-call at batch 16 against 8.6 ms at 1,
    benchmarks/RESULTS.md) and little at large ones: 16 up to 64 px, 4 at 128, 1 at 256.
    """
    if device.type != "cuda":
        cpu_default = max(1, min(16, 4 * (128 // image_size) ** 2))
        return max(1, min(cpu_default, n_images))
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
