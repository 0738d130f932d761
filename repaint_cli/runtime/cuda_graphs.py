"""The sampler's steps as CUDA graphs: captured once per model and batch shape, checked against an eager step,
replayed; an eager fallback with the same interface where capture is impossible or fails."""
from __future__ import annotations

import contextlib
import gc
import re
import warnings
from collections import OrderedDict
from typing import Optional
import torch
from ..core.noise import prepare_fused_noise
from ..core.sampler import Conditioning, EagerSteps, reverse_step, undo_step
from .device import EngineOptions
from .memory import is_oom


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
            cond.gt.clone(), cond.keep.clone(), cond.keys.clone(), cond.coefs.clone(),
            {k: v.clone() for k, v in cond.model_kwargs.items()}, cond.cond_fn,
            torch.arange(cond.gt[0].numel(), device=dev), cond.method, cond.noise_source,
            None if cond.nonfinite is None else cond.nonfinite.clone(),
        )
        self.x = torch.zeros_like(cond.gt)
        # t = 0 during warm-up and capture: a valid index for every schedule (with t_T 1 there is only
        # betas[0]); the undo reads betas[t + 1], which exists whenever a schedule has an undo (t_T >= 2)
        self.t = torch.zeros((), dtype=torch.int64, device=dev)
        self.step = torch.zeros((), dtype=torch.int64, device=dev)
        self.inject = torch.zeros((), dtype=torch.bool, device=dev)
        self.warnings: list[str] = []  # PyTorch's warnings during capture, for the run's log
        self.g_undo = self.out_undo = None  # no undo graph where the schedule has no undo step
        self.check_diff: Optional[float] = None  # the largest difference replay - eager, once checked

        def reverse():
            return reverse_step(model, self.x, self.cond, self.t, self.step, self.inject)

        def undo():
            return (undo_step(self.x, self.cond, self.t, self.step),)

        capture = capture or _cuda_capture
        if dev.type == "cuda":
            prepare_fused_noise(dev)  # compiles and checks the fused noise draw now, never during a capture
        # the eager step the capture is checked against, computed before it: its activations are freed
        # before the graph's pool is taken, so the device never holds both (only its outputs stay)
        self._reference = self._eager_reference(with_undo)
        if dev.type == "cuda":
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(warmup):  # lets kernels pick algorithms (and torch.compile compile) outside capture
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

    def _eager_reference(self, with_undo: bool) -> dict:
        """One eager reverse (and undo) step on a noisy x at mid-schedule, so that the model, the noise and the
        coefficients all matter: the inputs and the outputs :meth:`check_against_eager` compares a replay with."""
        c, dev = self.cond, self.x.device
        n_steps = c.coefs.betas.shape[0]
        ref = {"x": c.noise(torch.ones((), dtype=torch.int64, device=dev)),
               "t": torch.full((), (n_steps - 1) // 2, dtype=torch.int64, device=dev),
               "step": torch.ones((), dtype=torch.int64, device=dev),
               "inject": torch.ones((), dtype=torch.bool, device=dev)}
        with torch.no_grad():
            ref["want_x"], ref["want_x0"] = reverse_step(self.model, ref["x"], c, ref["t"], ref["step"], ref["inject"])
            ref["want_undo"] = undo_step(ref["x"], c, ref["t"], ref["step"]) if with_undo else None
        return ref

    def check_against_eager(self) -> Optional[str]:
        """Replay each graph once on the inputs of the eager reference step (taken before the capture) and
        compare.

        Returns None when they agree, else what differed. Replay and eager run the same kernels, so the
        tolerance is near-exact (a few last-bit differences of half-precision reductions, see :func:`_differs`).
        A graph captured on the wrong device or stream replays as a no-op and leaves its outputs as they
        were: this is what catches it before any image depends on it.
        """
        ref, self._reference = self._reference, None
        half = getattr(self.model, "dtype", torch.float32) != torch.float32
        tol = 2e-3 if half else 1e-5
        diffs: list = []
        with torch.no_grad():
            self.x.copy_(ref["x"])
            self.t.copy_(ref["t"])
            self.step.copy_(ref["step"])
            self.inject.copy_(ref["inject"])
            self.g_reverse.replay()
            problems = [_differs("reverse x", self.out_x, ref["want_x"], tol, diffs),
                        _differs("reverse x0", self.out_x0, ref["want_x0"], tol, diffs)]
            if self.g_undo is not None:
                self.g_undo.replay()
                problems.append(_differs("undo x", self.out_undo, ref["want_undo"], tol, diffs))
        self.check_diff = max(diffs) if diffs else None
        problems = [p for p in problems if p]
        return ("replay differs from the eager step (" + "; ".join(problems) + ")") if problems else None

    def load_batch(self, cond: Conditioning) -> "CudaGraphSteps":
        static = self.cond
        static.gt.copy_(cond.gt)
        static.keep.copy_(cond.keep)
        static.keys.copy_(cond.keys)
        for k, v in cond.model_kwargs.items():
            static.model_kwargs[k].copy_(v)
        static.coefs.copy_(cond.coefs)
        if static.nonfinite is not None:
            static.nonfinite.copy_(cond.nonfinite)
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


def _differs(what: str, got: torch.Tensor, want: torch.Tensor, tol: float, diffs: Optional[list] = None) -> Optional[str]:
    """None if ``got`` equals ``want`` within ``tol`` relative to want's scale (NaN where want has NaN); the
    difference is appended to ``diffs``. Near-exact: 2e-3 of 1 + max |want| in half precision (the sampler's
    state is fp32; a last-bit difference of an fp16 eps moves it by ~1e-3), where a 0.15 slack hid real faults."""
    if got.shape != want.shape:
        return f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    got, want = got.float(), want.float()
    nan_mismatch = bool((torch.isnan(got) != torch.isnan(want)).any())
    diff = float((got - want).abs().nan_to_num(0.0, posinf=float("inf")).max())
    scale = 1.0 + float(want.abs().nan_to_num(0.0, posinf=0.0).max())
    if diffs is not None:
        diffs.append(diff)
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
    # the graph's private pool cannot reuse the blocks the allocator caches (the warm-up's activations):
    # give them back first, or the first capture needs about twice a step's memory
    torch.cuda.empty_cache()
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
    # the guidance's cond_fn by identity: reconstruction guidance's reads its batch's own gt and keep (and comes
    # with a model of its own per batch), so a guided capture serves its batch only
    return (id(model), tuple(cond.gt.shape), tuple(cond.keep.shape), str(cond.gt.device), with_undo, cond.method,
            cond.noise_source, id(cond.cond_fn) if cond.cond_fn is not None else None, cond.nonfinite is not None,
            tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(cond.model_kwargs.items())),
            tuple((k, tuple(v.shape)) for k, v in cond.coefs.tensors().items()))


class GraphCache:
    """A run's captured step runners, one per model and batch shape, the least recently used dropped first.

    Each capture keeps a private memory pool as large as one step's
    activations for as long as it lives, so a run keeps ``capacity`` of them,
    one by default: a run's batches have one shape at a time (the full batch,
    then the parts that fit after an out-of-memory, then the partial last
    batch, none of them needed again once the next shape comes), and the full
    batch's pool is given back before the partial last one is captured
    (:meth:`make_room`), which the sizing counts on (``memory.fit_batch``).
    :meth:`clear` after an out-of-memory gives all of them back.
    """

    def __init__(self, capacity: int = 1):
        self.capacity = max(1, int(capacity))
        self.runners: "OrderedDict[tuple, CudaGraphSteps]" = OrderedDict()
        self.capture_failed = False  # a capture failed or did not match eager: the run stays eager

    def get(self, sig: tuple) -> Optional[CudaGraphSteps]:
        runner = self.runners.get(sig)
        if runner is not None:
            self.runners.move_to_end(sig)
        return runner

    def make_room(self) -> None:
        """Drop the oldest captures so that one more fits in the capacity (before capturing it: their pools
        go back to the allocator, and from there to the device at the capture's ``empty_cache``)."""
        dropped = False
        while len(self.runners) >= self.capacity:
            self.runners.popitem(last=False)
            dropped = True
        if dropped:
            gc.collect()  # a runner in a reference cycle (a guided model's autograd graph) would keep its pool

    def put(self, sig: tuple, runner: CudaGraphSteps) -> None:
        self.make_room()
        self.runners[sig] = runner

    def clear(self) -> None:
        self.runners.clear()

    def __len__(self) -> int:
        return len(self.runners)


def make_steps(model, cond: Conditioning, opts: EngineOptions, log=None, cache: Optional[GraphCache] = None,
               capture=None, with_undo: bool = True):
    """CUDA graphs where they can work (CUDA; guidance's autograd only with ``opts.graph_guidance``), else eager.

    ``cache`` (kept for a run) reuses a capture for every batch of the same
    shape. ``with_undo``: whether the schedule has undo steps (no undo graph
    otherwise). ``capture`` replaces the CUDA capture (tests on the CPU). Every
    new capture is replayed once against an eager step; a capture that fails or
    differs is reported through ``log`` (or ``warnings``) and the run goes on eager.
    """
    # torch.compile and capture together: compiled during the warm-up, then captured (GroupNorm, scale-shift
    # and SiLU fused, and no launch cost); a guided step is captured with its backward where asked (issue 37.7)
    # guidance on only some calls chooses on the host at each call, which a replay would skip: eager
    wants_graphs = (opts.cuda_graphs and (cond.gt.is_cuda or capture is not None)
                    and (cond.cond_fn is None or getattr(opts, "graph_guidance", False))
                    and not getattr(model, "per_call", False))
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
    return runner.load_batch(cond)  # the flags the warm-up and the check touched start clean
