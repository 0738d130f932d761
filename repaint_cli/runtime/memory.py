"""Device memory: telling an out-of-memory error from others, and sizing batches from a measured step."""
from __future__ import annotations

from typing import Callable, Optional
import torch


# Allocation failures that surface as library errors rather than torch.cuda.OutOfMemoryError
# (cuBLAS handles and workspaces, cuDNN workspaces, cuFFT plans, a raw cudaMalloc).
_OOM_MARKERS = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed", "cufft_alloc_failed",
                "cusolver_status_alloc_failed", "cusparse_status_alloc_failed", "cudaerrormemoryallocation")


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e).lower() for m in _OOM_MARKERS)


# Bytes per value of an image (C*H*W) that a run with captured graphs holds besides the reverse step's pool:
# the static buffers (gt, keep, x and the graphs' outputs, fp32) and the undo graph's pool (the noise draw's
# int64 (2, C*H*W) intermediates), ~24 values' worth of fp32
STATE_BYTES_PER_VALUE = 96
# what the allocator loses to fragmentation, over what a capture holds
FRAGMENTATION = 1.1


def fit_batch(peak_1: int, peak_2: int, free: int, n_images: int, cap: int = 512, state_per_image: int = 0) -> int:
    """The batch that fits in 80% of ``free`` bytes, from a step's peak memory at batch 1 and 2.

    The difference is the per-image cost; the rest of batch 1's peak is fixed
    (workspaces). What a run holds at batch b is what a capture holds: the
    reverse step's private pool, one eager step's peak (the capture is taken
    with the allocator's cache emptied, no eager step alive, and the previous
    shape's pool given back: ``cuda_graphs``), plus ``state_per_image`` per
    image (static buffers, the undo graph's pool), plus 10% for fragmentation
    (why a step's worth, not more: benchmarks/RESULTS.md#gpu-path-review).
    """
    per_image = max(peak_2 - peak_1, 1) if peak_2 > peak_1 else max(peak_1, 1)
    fixed = max(peak_1 - per_image, 0)
    return max(1, min(cap, n_images, int((0.8 * free - fixed * FRAGMENTATION)
                                         // ((per_image + state_per_image) * FRAGMENTATION))))


def auto_batch_size(model, image_size: int, device: torch.device, n_images: int, cap: int = 512,
                    probe: Optional[Callable[[int], object]] = None) -> int:
    """The largest batch that should fit: from free CUDA memory, or a CPU default.

    On CUDA, ``probe(b)`` runs what one sampling step runs at batch ``b`` (the
    pipeline passes the prepared model, fp16 weights and autocast included, and
    the classifier's forward and backward when guidance is on); without it the
    given model is called. Its peak memory at batch 1 and 2 sizes the batch to
    80% of what is free (:func:`fit_batch`), up to ``cap`` (small models on big GPUs).
    On the CPU batching pays at small sizes and little at large ones
    (benchmarks/RESULTS.md#cpu-choices): 16 up to 64 px, 4 at 128, 1 at 256.
    """
    if device.type not in ("cuda", "mps"):
        cpu_default = max(1, min(16, 4 * (128 // image_size) ** 2))
        return max(1, min(cpu_default, n_images))
    if probe is None:
        num_classes = getattr(model, "num_classes", None) or getattr(getattr(model, "inner", None), "num_classes", None)

        def probe(b: int):
            x = torch.zeros(b, 3, image_size, image_size, device=device)
            t = torch.zeros(b, dtype=torch.int64, device=device)
            kw = {"y": torch.zeros(b, dtype=torch.int64, device=device)} if num_classes else {}
            return model(x, t, **kw)

    if device.type == "mps":
        return _mps_batch_size(probe, n_images, cap)

    def start() -> int:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)

    peaks = _probe_peaks(probe, start, lambda: torch.cuda.synchronize(device),
                         lambda base: torch.cuda.max_memory_allocated(device) - base)
    if peaks is None:
        torch.cuda.empty_cache()
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return fit_batch(peaks[0], peaks[1], free, n_images, cap, STATE_BYTES_PER_VALUE * 3 * image_size ** 2)


def timed_batch_choice(seconds_per_image: dict, within: float = 0.05) -> int:
    """The smallest batch whose measured time per image is within ``within`` of the best one.

    For ``auto`` batch sizes on CUDA, where memory allows far more than pays: past the size that fills the
    GPU a bigger batch is no faster per image, and only makes the first image wait and the OOM split coarser.
    ``seconds_per_image``: batch size -> seconds per image of a (graph-replayed) step at that size.
    """
    if not seconds_per_image:
        raise ValueError("no timings to choose a batch size from")
    best = min(seconds_per_image.values())
    return min(b for b, s in seconds_per_image.items() if s <= best * (1 + within))


def _mps_batch_size(probe: Callable[[int], object], n_images: int, cap: int) -> int:
    """:func:`auto_batch_size` on Apple's MPS, which keeps no peak statistics: the driver's memory after a
    step at batch 1 and 2, its cache emptied first, stands for the step's peak (freed blocks stay cached);
    what is free: Metal's recommended working set less what the driver holds. Out of memory there: 1."""
    mps = torch.mps

    def start() -> int:
        mps.synchronize()
        mps.empty_cache()
        return mps.driver_allocated_memory()

    peaks = _probe_peaks(probe, start, mps.synchronize, lambda base: max(mps.driver_allocated_memory() - base, 1))
    if peaks is None:
        mps.empty_cache()
        return 1
    free = max(mps.recommended_max_memory() - mps.driver_allocated_memory(), 0)
    return fit_batch(peaks[0], peaks[1], free, n_images, cap)  # no graphs on MPS: no capture state to add


def _probe_peaks(probe: Callable[[int], object], start: Callable[[], int], finish: Callable[[], object],
                 peak: Callable[[int], int]) -> Optional[list[int]]:
    """[the memory of ``probe(1)``, of ``probe(2)``]: each run between ``start()`` (which returns the memory
    held before) and ``finish()`` (the device synchronised), its memory ``peak(held before)``. None where
    either runs out of memory (other errors raise): by the time it returns the failed attempt's memory is
    released, so the caller's emptying of the cache gives it back."""
    peaks = []
    for b in (1, 2):
        base = start()
        try:
            with torch.no_grad():
                probe(b)
            finish()
        except Exception as e:
            if not is_oom(e):
                raise
            return None
        peaks.append(peak(base))
    return peaks


def empty_device_cache(device: torch.device) -> None:
    """Give the allocator's cached blocks back after an out-of-memory (CUDA, MPS)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
