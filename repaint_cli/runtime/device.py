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
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..models.batch_invariant import self_check as invariant_self_check
from ..models.batch_invariant import set_batch_invariant

from ..choices import PRECISIONS  # defined once, in repaint_cli/choices.py
from ..constraints import INPAINT, check_fields
from .threads import set_threads, threads_in_use
from .memory import is_oom


@dataclass
class EngineOptions:
    """Where and how the UNet runs: device, precision, threads, batch size.

    Parameters
    ----------
    device : str, default "auto"
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (:func:`pick_device`).
    precision : {"auto", "fp32", "fp16", "bf16"}, default "auto"
        auto: fp16 on CUDA, fp32 elsewhere (:func:`resolve_precision`).
    cuda_graphs : bool, default True
        On CUDA, the sampler's steps captured once per batch shape and replayed.
    channels_last : bool, optional
        None: on on the CPU (faster there: benchmarks/RESULTS.md#cpu-choices), off on CUDA, where GroupNorm
        converts channels_last to NCHW and back at every norm and no GPU benchmark has shown a gain yet.
    compile : bool, default False
        On CUDA with ``cuda_graphs``: the UNet compiled, warmed up, then captured.
    graph_guidance : bool, default False
        Capture guided steps (their backward included) too; off until measured on a GPU.
    threads : int, optional
        CPU threads; None: the usable cores not busy now (``runtime.threads.default_threads``).
    batch_invariant : bool, default True
        CPU only: an image's UNet output the same bits in any batch (``models/batch_invariant.py``).
    batch_size : int or "auto", default "auto"
        Images per batch; auto: sized from free memory and the resolution.

    Raises
    ------
    constraints.OptionError
        A value out of its range (a ValueError, one line naming the option).
    """

    device: str = "auto"
    precision: str = "auto"
    cuda_graphs: bool = True
    channels_last: Optional[bool] = None
    compile: bool = False
    graph_guidance: bool = False
    threads: Optional[int] = None
    batch_invariant: bool = True
    batch_size: object = "auto"

    def __post_init__(self):
        """Each value checked once, against the declared table (constraints.OptionError, one line)."""
        check_fields(INPAINT, self)


def pick_device(name: str = "auto") -> torch.device:
    """The run's device: ``auto`` is CUDA (also AMD's ROCm builds, which PyTorch names cuda), else Apple's MPS,
    else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RuntimeError(f"--device {name}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise RuntimeError(f"--device {name}: use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if dev.type == "mps" and not mps_available():
        raise RuntimeError("--device mps: Apple's Metal (MPS) is not available here (it needs Apple silicon and a "
                           "PyTorch built with it); use --device cpu or auto")
    if dev.type == "cuda":
        return use_cuda_device(dev)
    return torch.device("mps") if dev.type == "mps" else dev


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


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
    """The UNet's compute dtype. auto: fp16 on CUDA, fp32 elsewhere (on MPS no fp16 run has been measured
    for quality; on the CPU bf16 only where it was measured faster and as good, :func:`cpu_auto_precision`).
    fp16 on the CPU is refused: it is orders of magnitude slower there (benchmarks/RESULTS.md#cpu-choices);
    bf16 there needs the CPU's bf16 instructions."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return cpu_auto_precision() if device.type == "cpu" else torch.float32
    if device.type == "cpu" and precision == "bf16":
        if cpu_has_bf16():
            return torch.bfloat16
        warnings.warn("--precision bf16: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16), where bf16 "
                      "is slower than fp32; running fp32")
        return torch.float32
    if device.type == "mps" and precision == "bf16":
        warnings.warn("--precision bf16 is not offered on MPS; running fp32")
        return torch.float32
    if device.type == "cpu" and precision != "fp32":
        warnings.warn(f"--precision {precision} is for CUDA (on the CPU: bf16 or fp32); running fp32 on the CPU")
        return torch.float32
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        warnings.warn("this GPU has no bf16 support; using fp16")
        return torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere PyTorch emulates it, slowly."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_auto_precision() -> torch.dtype:
    """--precision auto on the CPU: fp32, bf16 being offered, not chosen. bf16 was within 0.1 dB hole PSNR on
    all six frontier masks (32 px) and faster at batch 16, but not at batch 1; a choice by batch would make an
    output depend on --batch-size, and at 256 px its quality is unmeasured (benchmarks/RESULTS.md#bf16-on-the-cpu)."""
    return torch.float32


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
            with ieee_fp32() if self.device_type == "cuda" else contextlib.nullcontext():
                return self.inner(x, t, **kw).float()
        # cache off: required under CUDA graph capture; the weights need no cast (see the class docstring)
        with torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=False):
            return self.inner(x, t, **kw).float()


@contextlib.contextmanager
def ieee_fp32():
    """fp32 that is fp32 on CUDA: TF32 off for cuDNN's convolutions (on by PyTorch's default) and for matmuls
    while the model runs, the process's own settings restored after (kernels are chosen at launch, so a
    captured graph keeps the fp32 ones)."""
    flags = (torch.backends.cudnn, torch.backends.cuda.matmul)
    setting = (flags, "allow_tf32", False)
    try:
        [f.allow_tf32 for f in flags]  # raises where the flags were set with PyTorch's newer per-operator API
    except RuntimeError:  # then use that one
        setting = ((torch.backends.cudnn.conv, torch.backends.cuda.matmul), "fp32_precision", "ieee")
    with _set_during(*setting):
        yield


@contextlib.contextmanager
def _set_during(objects, name: str, value):
    """Attribute ``name`` of each of ``objects`` set to ``value`` inside the block, each one's own back after."""
    before = [getattr(o, name) for o in objects]
    for o in objects:
        setattr(o, name, value)
    try:
        yield
    finally:
        for o, v in zip(objects, before):
            setattr(o, name, v)


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
    # the layers the model keeps in fp32 (guided-diffusion's UNet: embeddings, emb_layers, the final out)
    keep = {id(k) for f in getattr(low, "fp32_modules", lambda: [])() for k in f.modules()}
    for m in low.modules():
        if isinstance(m, LOW_PRECISION_LAYERS) and id(m) not in keep:
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




def engine_facts(model: PrecisionModel, device: torch.device) -> dict:
    """How a run computes, for its info line and run record: the precision that ran, and on the CPU the thread
    count and why it is that (``--threads``, OMP_NUM_THREADS, or the cores free when it started)."""
    facts = {"precision": PRECISION_NAMES.get(model.dtype, str(model.dtype))}
    if device.type == "cpu":
        facts["threads"], facts["threads_why"] = threads_in_use()
    return facts


def describe_engine(facts: dict) -> str:
    """'bf16; 2 threads (why)' for the info line."""
    if "threads" not in facts:
        return facts["precision"]
    n = facts["threads"]
    return f"{facts['precision']}; {n} thread{'' if n == 1 else 's'} ({facts['threads_why']})"


PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
