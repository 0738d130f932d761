"""One batch through the sampler on the device: tensors in, tensors out, out-of-memory splits, progress."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional
import numpy as np
import torch
from ..runtime.cuda_graphs import make_steps
from ..runtime.memory import is_oom
from ..core.noise import keys_tensor
from ..core.sampler import Conditioning, StepInfo, repaint, reverse_step
from ..core.schedule import guided_calls
from .guidance import reconstruction
from .hooks import Prepared
from .options import Reporter, SampleOptions
from ..runtime.device import EngineOptions
from .setup import Setup


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8, rounded."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def sample_batch(model, st: Setup, batch: list[Prepared], sample: SampleOptions, engine: EngineOptions,
                 reporter: Reporter, callbacks=(), model_kwargs=None, cond_fn=None,
                 graph_cache: Optional[dict] = None) -> torch.Tensor:
    """Run RePaint on one batch; returns x_0 as (B, 3, S, S) in [-1, 1]."""
    dev = st.device
    gt = torch.from_numpy(np.stack([p.rgb_S for p in batch])).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
    keep = torch.from_numpy(np.stack([p.keep_S for p in batch])).to(dev)[:, None]
    keys = keys_tensor([p.job.keys.noise for p in batch], dev)
    coefs = st.diffusion.coefficients(dev, eta=sample.eta if sample.method == "ddim" else None)
    guided = guided_calls(st.times, st.guidance_calls)
    model, cond_fn = reconstruction(model, st.diffusion, gt, keep, st.guidance, cond_fn, guided)  # unchanged at 0
    cond = Conditioning(gt, keep, keys, coefs, model_kwargs or {}, cond_fn, torch.arange(gt[0].numel(), device=dev),
                        sample.method, nonfinite=torch.zeros(len(batch), dtype=torch.bool, device=dev))
    steps = make_steps(model, cond, engine, reporter.log, graph_cache, with_undo=has_undo(st.times))
    hooks = [cb for cb in callbacks if cb is not None]
    progress = DeviceProgress(reporter.advance_steps, dev)

    def callback(info: StepInfo):
        progress.step()
        for cb in hooks:
            cb(info)

    with torch.no_grad():  # guidance takes its own gradient inside cond_fn
        x = repaint(model, cond, st.times, callback, steps)
        # an image whose raw model output held NaN/Inf at any step (its Inf eps clipped into a finite x0) is
        # made NaN: it is retried in fp32 or fails alone, never written as if nothing happened. A new tensor
        # either way: a CUDA graph returns its static output buffer, which the next batch of this shape
        # (e.g. the other half of an out-of-memory split) would overwrite
        x = torch.where(steps.cond.nonfinite.reshape(-1, *[1] * (x.dim() - 1)), float("nan"), x)
    progress.finish()
    return x


def has_undo(times: list) -> bool:
    """Whether a schedule ever steps back up (t_T 1 cannot: it has no undo, and no undo graph is captured)."""
    return any(b > a for a, b in zip(times, times[1:]))


class DeviceProgress:
    """Advances the progress bar by the steps the device has finished, not the steps queued.

    On CUDA the host queues steps far ahead of the GPU (a graph replay returns
    at once), so counting calls would run the bar to the batch's end and then
    stall there. An event is recorded every ``every`` steps and polled (never
    waited on) after each step; on the CPU a step is done when its call returns.
    """

    def __init__(self, advance: Callable[[int], None], device: torch.device, every: int = 8, new_event=None):
        self.advance = advance
        self.every = max(1, every)
        self.queued = self.reported = 0
        self.pending: deque = deque()  # (event, steps queued when it was recorded)
        self.new_event = new_event or (_recorded_cuda_event if device.type == "cuda" else None)

    def step(self) -> None:
        self.queued += 1
        if self.new_event is None:
            self._report(self.queued)
            return
        if self.queued % self.every == 0:
            self.pending.append((self.new_event(), self.queued))
        while self.pending and self.pending[0][0].query():
            self._report(self.pending.popleft()[1])

    def finish(self) -> None:
        """The batch's result is needed now anyway: wait for the device, then count the rest."""
        if self.pending:
            self.pending[-1][0].synchronize()
            self.pending.clear()
        self._report(self.queued)

    def _report(self, upto: int) -> None:
        if upto > self.reported:
            self.advance(upto - self.reported)
            self.reported = upto


def _recorded_cuda_event():
    event = torch.cuda.Event()
    event.record()
    return event


@dataclass
class SplitState:
    """What out-of-memory splitting learnt in a run: the largest batch known to fit (None: no OOM yet)."""

    limit: Optional[int] = None


def split_retry(run: Callable[[list], torch.Tensor], batch: list, reporter: Reporter,
                 state: Optional[SplitState] = None, on_oom: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Run a batch (a list of positions); on out-of-memory split it in halves and retry, down to single images.

    The retry starts only once the ``except`` block is left: inside it, the
    traceback keeps the failed attempt's activations and half-built graph runner
    alive, so freeing memory would free nothing and the halves would fail too.
    ``on_oom`` runs between the failure and the retry (drop cached graphs, free
    the allocator's cache). ``state.limit`` keeps the size that worked: parts
    larger than it are split before they are tried, here and in later batches.
    """
    state = state if state is not None else SplitState()
    if state.limit is not None and len(batch) > state.limit:
        parts = [batch[i:i + state.limit] for i in range(0, len(batch), state.limit)]
        return torch.cat([split_retry(run, part, reporter, state, on_oom) for part in parts])
    try:
        return run(batch)
    except Exception as e:
        if not is_oom(e) or len(batch) == 1:
            raise
    # out of the except block: the exception, its traceback and the failed attempt's tensors are gone
    if on_oom is not None:
        on_oom()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(batch) // 2
    state.limit = len(batch) - half  # the larger half; lowered again if it does not fit either
    reporter.log(f"out of memory at batch {len(batch)}; splitting into {half} + {len(batch) - half} and retrying "
                 f"(later batches: at most {state.limit})", "warning")
    return torch.cat([split_retry(run, batch[:half], reporter, state, on_oom),
                      split_retry(run, batch[half:], reporter, state, on_oom)])


def step_probe(model, st: "Setup", cond_fn=None) -> Callable[[int], object]:
    """One reverse step at batch b as a run makes it (the prepared model, the classifier's forward
    and backward under guidance, the UNet's backward under reconstruction guidance), for sizing
    batches by what actually runs."""
    dev, S = st.device, st.loaded.model.cfg.image_size

    def probe(b: int):
        gt = torch.zeros(b, 3, S, S, device=dev)
        keep = torch.zeros(b, 1, S, S, dtype=torch.bool, device=dev)
        keys = keys_tensor([(0, i) for i in range(b)], dev)
        kw = {"y": torch.zeros(b, dtype=torch.int64, device=dev)} if st.loaded.model.num_classes else {}
        net, fn = reconstruction(model, st.diffusion, gt, keep, st.guidance, cond_fn)
        cond = Conditioning(gt, keep, keys, st.diffusion.coefficients(dev), kw, fn,
                            torch.arange(gt[0].numel(), device=dev))
        t = torch.tensor(st.diffusion.num_steps - 1, device=dev)
        return reverse_step(net, gt, cond, t, torch.zeros_like(t), torch.ones((), dtype=torch.bool, device=dev))

    return probe


def fp32_fits_beside(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether the fp32 retry model may stay on the GPU after a retry: free memory above twice its size."""
    if device.type != "cuda":
        return True
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return torch.cuda.mem_get_info(device)[0] > 2 * size


def non_finite_rows(x: torch.Tensor) -> list[bool]:
    """Per image of a batch: whether its sample holds a NaN or an Inf."""
    return (~torch.isfinite(x.flatten(1)).all(dim=1)).tolist()
