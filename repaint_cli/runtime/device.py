"""Making a fast step from a model and a batch: device, precision, CUDA graphs, threads.

The sampler's math lives in :mod:`sampler`; this module only decides *how* it
runs. On CUDA: the UNet's conv and linear weights converted to fp16 once and
run under autocast (the sampler's state stays fp32), and the reverse and undo
steps captured once per batch shape as CUDA graphs, checked against an eager
step, and replayed. On the CPU: fp32, ``channels_last``, eager, optional
``torch.compile``. Every choice can be switched off and falls back cleanly,
and every fallback is said out loud: a wrong graph is never used silently.
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..models.batch_invariant import self_check as invariant_self_check
from ..models.batch_invariant import set_batch_invariant
from ..core.noise import prepare_fused_noise
from ..core.sampler import Conditioning, EagerSteps, reverse_step, undo_step

from ..choices import PRECISIONS  # defined once, in repaint_cli/choices.py


@dataclass
class EngineOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    cuda_graphs: bool = True
    # None = on on the CPU (1.1-1.3x here, benchmarks/RESULTS.md), off on CUDA: CUDA's GroupNorm converts
    # channels_last to NCHW and back at every norm, and no GPU benchmark has shown a gain yet
    channels_last: Optional[bool] = None
    compile: bool = False
    threads: Optional[int] = None
    batch_invariant: bool = True  # CPU only: an image's UNet output the same bits in any batch (batch_invariant.py)
    batch_size: object = "auto"  # images per batch, or "auto": sized from memory and resolution


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
    if dev.type == "cuda":
        return use_cuda_device(dev)
    return dev


def use_cuda_device(dev: torch.device) -> torch.device:
    """Make ``dev`` the current CUDA device; returns it with its index.

    CUDA graphs capture on the *current* device's streams: with work on cuda:1
    while cuda:0 is current, the capture records nothing and every replay does
    nothing, so the device a run picks must also be the current one.
    """
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"--device {dev}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def default_channels_last(device: torch.device) -> bool:
    """channels_last unless asked otherwise: measured faster on the CPU; not (yet) on CUDA (see EngineOptions)."""
    return device.type == "cpu"


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
    """``threads`` for PyTorch; None: :func:`default_threads` (the cores that are free), unless the
    caller already chose a count with ``torch.set_num_threads`` (it is then left as it is)."""
    if threads:
        torch.set_num_threads(int(threads))
    elif torch.get_num_threads() == _TORCH_THREADS:
        torch.set_num_threads(default_threads())


_DEFAULT_THREADS: list = []  # the choice, made once per process (see default_threads)
_TORCH_THREADS = torch.get_num_threads()  # PyTorch's own choice: one per physical core, or OMP_NUM_THREADS


def default_threads() -> int:
    """Threads when --threads is not given: the usable cores that are not busy, at least 1.

    PyTorch takes one thread per core whatever else runs; on a busy machine its
    threads wait for each other at every layer (one emoji took 256 s on 2 threads
    against 21.7 s on 1 at load 8). Busy cores: the 1-minute load average, rounded.
    Decided once per process, before our own work weighs on the load (the fp32
    retry's model gets the same count). OMP_NUM_THREADS, when set (torchrun sets
    it to 1), is left as PyTorch read it; and no more threads than PyTorch's own
    default (one per physical core). The UNet's CPU output was the same bits at
    1 to 5 threads on this project's CPU (invariant.py, tests/test_invariant.py),
    so there the choice never changes a result.
    """
    if not _DEFAULT_THREADS:
        if os.environ.get("OMP_NUM_THREADS"):
            _DEFAULT_THREADS.append(_TORCH_THREADS)
        else:
            _DEFAULT_THREADS.append(free_cores(usable_cores(), load_average(), _TORCH_THREADS))
    return _DEFAULT_THREADS[0]


def free_cores(usable: int, load: float, cap: int) -> int:
    """``usable`` cores less the busy ones (``load`` rounded), at most ``cap``, at least 1."""
    return max(1, min(cap, usable - int(round(max(load, 0.0)))))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (runnable processes); 0 where the system has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


class PrecisionModel(torch.nn.Module):
    """Calls the UNet under autocast (and channels_last input); returns fp32.

    For fp16/bf16 the inner model's conv and linear weights are already in that
    dtype (:func:`low_precision_copy`): autocast caches casts only of weights that
    require grad, so fp32 weights would be cast again on every call.

    ``per_image``: call the UNet one image at a time (the CPU's batch-invariant
    layers failed their self-check: a lone image's result never depends on a batch).
    ``compiled``: the ``torch.compile`` form of :meth:`eager`, used until it fails
    (see :meth:`use_compiled`).
    """

    def __init__(self, model, dtype: torch.dtype, device: torch.device, channels_last: bool, per_image: bool = False):
        super().__init__()
        self.inner = model
        self.dtype = dtype
        self.device_type = device.type
        self.channels_last = channels_last
        self.per_image = per_image
        self.compiled: Optional[Callable] = None
        self.on_compile_failure: Optional[Callable[[], None]] = None

    def forward(self, x, t, **kw):
        if self.compiled is not None:
            try:
                return self.compiled(x, t, **kw)
            except Exception as e:  # compile is an optimisation: never fatal
                if is_oom(e):
                    raise  # the batch is too big, not the compiler: let the caller split it
                self.compiled = None  # warn once; every later call runs eager
                first = (str(e).splitlines() or [""])[0][:200]
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {first}); running eager")
                if self.on_compile_failure is not None:
                    self.on_compile_failure()
        return self.eager(x, t, **kw)

    def eager(self, x, t, **kw):
        if not self.per_image or x.shape[0] == 1:
            return self._call(x, t, **kw)
        # each image copied out of the batch, so that its layout never depends on where it sat
        return torch.cat([self._call(x[i:i + 1].clone(), t[i:i + 1].clone(),
                                     **{k: v[i:i + 1].clone() for k, v in kw.items()}) for i in range(x.shape[0])])

    def _call(self, x, t, **kw):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            return self.inner(x, t, **kw).float()
        # cache off: required under CUDA graph capture; the weights need no cast (see the class docstring)
        with torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=False):
            return self.inner(x, t, **kw).float()


LOW_PRECISION_LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def low_precision_copy(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A copy of ``model`` on ``device`` whose conv and linear weights are ``dtype``.

    guided-diffusion's ``convert_to_fp16`` extended to the linear layers (the
    timestep and class embeddings' MLPs and the ResBlocks' ``emb_layers``);
    norms and embeddings stay fp32. Under autocast this gives the same numbers as
    casting fp32 weights on every call (autocast casts conv and linear weights to
    ``dtype`` anyway), without the per-call cast. The copy is built on the host and
    moved once, so the device never holds the fp32 and the low-precision weights
    at the same time; ``model``, the fp32 master for the NaN retry, keeps its fp32
    weights (and is moved to the host if it was elsewhere).
    """
    host = torch.device("cpu")
    source = model.to(host) if next(model.parameters()).device.type != "meta" else model
    low = copy.deepcopy(source)
    for m in low.modules():
        if isinstance(m, LOW_PRECISION_LAYERS):
            for name in ("weight", "bias"):
                p = getattr(m, name, None)
                if p is not None and p.is_floating_point():
                    p.data = p.data.to(dtype)
    if hasattr(low, "dtype"):  # the UNet casts its input to this; its norms compute in fp32 whatever it is
        low.dtype = dtype
    return low.to(device)


def prepare_model(model, device: torch.device, opts: EngineOptions) -> PrecisionModel:
    """Put the model on its device in the engine's layout; wrap it for precision.

    fp32 moves ``model`` itself; fp16/bf16 use a low-precision copy and leave
    ``model`` on the host as the fp32 master (:func:`low_precision_copy`).
    """
    set_threads(opts.threads)
    dtype = resolve_precision(opts.precision, device)
    channels_last = opts.channels_last if opts.channels_last is not None else default_channels_last(device)
    if dtype != torch.float32:
        model = low_precision_copy(model, dtype, device)
    else:
        if getattr(model, "dtype", torch.float32) != torch.float32 and hasattr(model, "convert_to_fp32"):
            model.convert_to_fp32()  # loaded with the card's use_fp16 on CUDA (models.load): fp32 asked for
        model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    per_image = False
    if device.type == "cpu":
        per_image = use_batch_invariant(model, opts.batch_invariant and not opts.compile)  # compile: own kernels
    wrapped = PrecisionModel(model, dtype, device, channels_last, per_image)
    if opts.compile:
        compile_guarded(wrapped, invariant_if_eager=device.type == "cpu" and opts.batch_invariant)
    return wrapped


def compile_guarded(wrapped: PrecisionModel, invariant_if_eager: bool) -> None:
    """``torch.compile`` for ``wrapped``; where it fails, now or at its first call (where the
    compiling happens), a warning and eager calls, batch-invariant on the CPU as without --compile."""
    def back_to_eager():
        if invariant_if_eager:
            wrapped.per_image = use_batch_invariant(wrapped.inner, True)

    wrapped.on_compile_failure = back_to_eager
    try:
        wrapped.compiled = torch.compile(wrapped.eager, dynamic=False)
    except Exception as e:  # compile is an optimisation: never fatal
        warnings.warn(f"torch.compile unavailable ({e}); running eager")
        back_to_eager()


def use_batch_invariant(model, on: bool) -> bool:
    """Switch the CPU model's batch-invariant layers on (or off); True when the UNet must instead be
    called image by image: the layers failed their start-up self-check on this CPU (said once)."""
    problem = invariant_self_check() if on else None
    set_batch_invariant(model, on and problem is None)
    if problem is None:
        return False
    warnings.warn(f"the batch-invariant CPU layers failed their self-check at {torch.get_num_threads()} threads "
                  f"({problem}); calling the UNet one image at a time instead (same results at any batch size, slower)")
    return True


class CaptureProblem(RuntimeError):
    """A capture that must not be replayed although nothing raised (PyTorch warned: e.g. an empty graph)."""


# PyTorch's own warnings that a capture recorded nothing or the wrong thing (CUDAGraph::capture_end
# warns "The CUDA Graph is empty. This usually means that the graph was attempted to be captured on
# wrong device or stream."): such a graph replays as a no-op, so it is a failure, never chatter.
_CAPTURE_FAILURE = re.compile(r"graph is empty|wrong device or stream|capture.{0,40}(fail|invalid)", re.I)


class CudaGraphSteps:
    """The reverse and undo steps captured as CUDA graphs for one batch shape, then replayed.

    Everything a step reads lives in static buffers owned here: the batch
    (gt, keep mask, noise keys, labels, coefficients) is copied in once per
    batch by :meth:`load_batch`, and x, t and the draw number once per step
    (device to device, no host sync). The noise is drawn inside the graph from
    the counter-based generator, so per-image determinism holds exactly as in
    eager mode. One capture serves every batch of the same shape;
    :meth:`check_against_eager` tells whether a capture can be trusted.
    """

    def __init__(self, model, cond: Conditioning, warmup: int = 2, capture=None, with_undo: bool = True):
        dev = cond.gt.device
        self.model = model
        self.cond = Conditioning(
            cond.gt.clone(), cond.keep.clone(), cond.keys.clone(), {k: v.clone() for k, v in cond.coefs.items()},
            {k: v.clone() for k, v in cond.model_kwargs.items()}, None,
            torch.arange(cond.gt[0].numel(), device=dev), cond.method, cond.noise_source,
        )
        self.x = torch.zeros_like(cond.gt)
        # t = 0 during warm-up and capture: a valid index for every schedule (with t_T 1 there is only
        # betas[0]); the undo reads betas[t + 1], which exists whenever a schedule has an undo (t_T >= 2)
        self.t = torch.zeros((), dtype=torch.int64, device=dev)
        self.step = torch.zeros((), dtype=torch.int64, device=dev)
        self.inject = torch.zeros((), dtype=torch.bool, device=dev)
        self.warnings: list[str] = []  # PyTorch's warnings during capture, for the run's log
        self.g_undo = self.out_undo = None  # no undo graph where the schedule has no undo step

        def reverse():
            return reverse_step(model, self.x, self.cond, self.t, self.step, self.inject)

        def undo():
            return (undo_step(self.x, self.cond, self.t, self.step),)

        capture = capture or _cuda_capture
        if dev.type == "cuda":
            prepare_fused_noise(dev)  # compiles and checks the fused noise draw now, never during a capture
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(warmup):  # lets kernels pick algorithms and allocate outside capture
                    reverse()
                    if with_undo:
                        undo()
            torch.cuda.current_stream(dev).wait_stream(side)
        with torch.no_grad(), (torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()):
            # separate memory pools: a shared one could place out_undo where the reverse graph writes
            self.g_reverse, (self.out_x, self.out_x0), notes = capture(reverse)
            self.warnings += notes
            if with_undo:
                self.g_undo, (self.out_undo,), notes = capture(undo)
                self.warnings += notes

    def check_against_eager(self) -> Optional[str]:
        """Replay each graph once and compare it with an eager step on the same buffers.

        Returns None when they agree (within the fp16/bf16 tolerance where the
        model runs in half precision), else what differed. A graph captured on the
        wrong device or stream replays as a no-op and leaves its outputs as they
        were: this is what catches it before any image depends on it.
        """
        c = self.cond
        n_steps = c.coefs["betas"].shape[0]
        tol = 1e-3 if getattr(self.model, "dtype", torch.float32) == torch.float32 else 3e-2
        problems = []
        with torch.no_grad():
            # a noisy x at mid-schedule, so that the model, the noise and the coefficients all matter
            self.x.copy_(c.noise(torch.ones((), dtype=torch.int64, device=self.x.device)))
            self.t.fill_((n_steps - 1) // 2)
            self.step.fill_(1)
            self.inject.fill_(True)
            self.g_reverse.replay()
            want_x, want_x0 = reverse_step(self.model, self.x, c, self.t, self.step, self.inject)
            problems += [_differs("reverse x", self.out_x, want_x, tol), _differs("reverse x0", self.out_x0, want_x0, tol)]
            if self.g_undo is not None:
                self.g_undo.replay()
                problems.append(_differs("undo x", self.out_undo, undo_step(self.x, c, self.t, self.step), tol))
        problems = [p for p in problems if p]
        return ("replay differs from the eager step (" + "; ".join(problems) + ")") if problems else None

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
        if self.g_undo is None:  # not captured: the schedule has no undo step; stay correct anyway
            return undo_step(x, self.cond, t, step)
        self._load(x, t, step)
        self.g_undo.replay()
        return self.out_undo


def _differs(what: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> Optional[str]:
    """None if ``got`` equals ``want`` within ``tol`` relative to want's scale (NaN where want has NaN)."""
    if got.shape != want.shape:
        return f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    got, want = got.float(), want.float()
    nan_mismatch = bool((torch.isnan(got) != torch.isnan(want)).any())
    diff = float((got - want).abs().nan_to_num(0.0, posinf=float("inf")).max())
    scale = 1.0 + float(want.abs().nan_to_num(0.0, posinf=0.0).max())
    if nan_mismatch or not diff <= tol * scale:
        return f"{what} off by {diff:.3g}{' and NaN where eager has none' if nan_mismatch else ''}"
    return None


def _cuda_capture(fn):
    """Capture ``fn`` as a CUDA graph on the current device; returns (graph, its static outputs, warnings).

    Written out instead of ``torch.cuda.graph`` for three reasons. That context
    manager leaves its capture stream current when ``capture_end`` raises, so the
    eager fallback would run on it; here the stream is always restored. Its
    capture mode is global, so a CUDA call on another thread (the writer freeing
    pinned memory) invalidates the capture; here it is thread-local. And warnings
    such as "the CUDA Graph is empty" would be dropped by a warnings filter (the
    CLI hides library chatter); here they come back, and the failing ones raise.
    """
    dev = torch.device("cuda", torch.cuda.current_device())
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream(dev)
    torch.cuda.synchronize(dev)
    with torch.cuda.stream(stream), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            outs = fn()
        except BaseException:
            with contextlib.suppress(Exception):  # end the broken capture; the original error is the news
                graph.capture_end()
            raise
        graph.capture_end()
    torch.cuda.current_stream(dev).wait_stream(stream)
    notes = [str(w.message) for w in caught]
    failures = [n for n in notes if _CAPTURE_FAILURE.search(n)]
    if failures:
        raise CaptureProblem(failures[0])
    return graph, outs, notes


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
    def capture(fn):
        g = EagerReplay(fn)
        return g, g.outs, []


def graph_signature(model, cond: Conditioning, with_undo: bool = True) -> tuple:
    """What a captured graph depends on besides buffer contents: the model, the method, the noise source, every shape."""
    return (id(model), tuple(cond.gt.shape), tuple(cond.keep.shape), str(cond.gt.device), with_undo, cond.method,
            cond.noise_source,
            tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(cond.model_kwargs.items())),
            tuple((k, tuple(v.shape)) for k, v in sorted(cond.coefs.items())))


class GraphCache:
    """A run's captured step runners, one per model and batch shape, the least recently used dropped first.

    Each capture keeps a private memory pool as large as one step's
    activations for as long as it lives, so a run keeps at most ``capacity`` of
    them (the full batch and the last partial one, or the fp32 retry's);
    :meth:`clear` after an out-of-memory gives all of them back.
    """

    def __init__(self, capacity: int = 2):
        self.capacity = max(1, int(capacity))
        self.runners: "OrderedDict[tuple, CudaGraphSteps]" = OrderedDict()
        self.capture_failed = False  # a capture failed or did not match eager: the run stays eager

    def get(self, sig: tuple) -> Optional[CudaGraphSteps]:
        runner = self.runners.get(sig)
        if runner is not None:
            self.runners.move_to_end(sig)
        return runner

    def make_room(self) -> None:
        """Drop the oldest captures so that one more fits in the capacity (before capturing it)."""
        while len(self.runners) >= self.capacity:
            self.runners.popitem(last=False)

    def put(self, sig: tuple, runner: CudaGraphSteps) -> None:
        self.make_room()
        self.runners[sig] = runner

    def clear(self) -> None:
        self.runners.clear()

    def __len__(self) -> int:
        return len(self.runners)


def make_steps(model, cond: Conditioning, opts: EngineOptions, log=None, cache: Optional[GraphCache] = None,
               capture=None, with_undo: bool = True):
    """CUDA graphs where they can work (CUDA, no classifier autograd), else eager.

    ``cache`` (kept for a run) reuses a capture for every batch of the same
    shape. ``with_undo``: whether the schedule has undo steps (no undo graph
    otherwise). ``capture`` replaces the CUDA capture (tests on the CPU). Every
    new capture is replayed once against an eager step; a capture that fails or
    differs is reported through ``log`` (or ``warnings``) and the run goes on eager.
    """
    wants_graphs = (opts.cuda_graphs and (cond.gt.is_cuda or capture is not None) and cond.cond_fn is None
                    and not opts.compile)
    if not wants_graphs or (cache is not None and cache.capture_failed):
        return EagerSteps(model, cond)
    sig = graph_signature(model, cond, with_undo)
    if cache is not None:
        hit = cache.get(sig)
        if hit is not None:
            return hit.load_batch(cond)
        cache.make_room()  # free the oldest capture's pool before this one takes its own
    say = log or (lambda msg, level="warning": warnings.warn(msg, stacklevel=3))
    runner = None
    try:
        runner = CudaGraphSteps(model, cond, capture=capture, with_undo=with_undo)
        problem = runner.check_against_eager()
    except Exception as e:  # an op that cannot be captured: run eager, say so
        if is_oom(e):
            raise  # the batch is too big, not the graph: let the caller split it
        problem = f"capture failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    for note in (runner.warnings if runner is not None else []):
        say(f"during CUDA graph capture: {note}", "warning")
    if problem:
        say(f"CUDA graph {problem}; running eager instead (same results, slower)", "warning")
        runner = None
        if cond.gt.is_cuda:
            torch.cuda.synchronize(cond.gt.device)
        if cache is not None:
            cache.capture_failed = True  # do not retry the capture for every batch
            cache.clear()
        return EagerSteps(model, cond)
    if cache is not None:
        cache.put(sig, runner)
    return runner


# Allocation failures that surface as library errors rather than torch.cuda.OutOfMemoryError
# (cuBLAS handles and workspaces, cuDNN workspaces, cuFFT plans, a raw cudaMalloc).
_OOM_MARKERS = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed", "cufft_alloc_failed",
                "cusolver_status_alloc_failed", "cusparse_status_alloc_failed", "cudaerrormemoryallocation")


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e).lower() for m in _OOM_MARKERS)


def fit_batch(peak_1: int, peak_2: int, free: int, n_images: int, cap: int = 512) -> int:
    """The batch that fits in 80% of ``free`` bytes, from a step's peak memory at batch 1 and 2.

    The difference is the per-image cost; the rest of batch 1's peak is fixed
    (workspaces). A 1.5x margin covers the captured graphs' pools and fragmentation.
    """
    per_image = max(peak_2 - peak_1, 1) if peak_2 > peak_1 else max(peak_1, 1)
    fixed = max(peak_1 - per_image, 0)
    return max(1, min(cap, n_images, int((0.8 * free - fixed) // (per_image * 1.5))))


def auto_batch_size(model, image_size: int, device: torch.device, n_images: int, cap: int = 512,
                    probe: Optional[Callable[[int], object]] = None) -> int:
    """The largest batch that should fit: from free CUDA memory, or a CPU default.

    On CUDA, ``probe(b)`` runs what one sampling step runs at batch ``b`` (the
    pipeline passes the prepared model, fp16 weights and autocast included, and
    the classifier's forward and backward when guidance is on); without it the
    given model is called. Its peak memory at batch 1 and 2 sizes the batch to
    80% of what is free (:func:`fit_batch`), up to ``cap`` (small models on big GPUs).
    On the CPU batching pays at small sizes (emoji32: 4.8 ms per image-call at
    batch 16 against 8.6 ms at 1, benchmarks/RESULTS.md) and little at large
    ones: 16 up to 64 px, 4 at 128, 1 at 256.
    """
    if device.type != "cuda":
        cpu_default = max(1, min(16, 4 * (128 // image_size) ** 2))
        return max(1, min(cpu_default, n_images))
    if probe is None:
        num_classes = getattr(model, "num_classes", None) or getattr(getattr(model, "inner", None), "num_classes", None)

        def probe(b: int):
            x = torch.zeros(b, 3, image_size, image_size, device=device)
            t = torch.zeros(b, dtype=torch.int64, device=device)
            kw = {"y": torch.zeros(b, dtype=torch.int64, device=device)} if num_classes else {}
            return model(x, t, **kw)

    peaks = []
    for b in (1, 2):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        try:
            with torch.no_grad():
                probe(b)
        except Exception as e:
            if not is_oom(e):
                raise
            oom = True
        else:
            oom = False
        if oom:  # outside the except block, so that the failed attempt's memory is already released
            torch.cuda.empty_cache()
            return 1
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    free, _ = torch.cuda.mem_get_info(device)
    return fit_batch(peaks[0], peaks[1], free, n_images, cap)
