"""``inpaint()``: the orchestration behind ``repaint inpaint``.

jobs -> load + fit -> batches -> sampler -> unfit + paste -> atomic writes.
Bad input costs only its own image: each problem is one line naming the file
and the fix, the rest of the run goes on, and the summary says what failed.
Mistakes that concern the whole run (a missing input, a mask taken for an image,
an output onto an input, an unknown conf key) stop it before the model loads
(:func:`resolve_jobs`). Each output records what made it (``records.py``).
"""
from __future__ import annotations

import gc
import json
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from . import image_files
from . import masks
from ..core.diffusion import Diffusion, diffusion_from_hparams
from ..runtime.device import EngineOptions, GraphCache, auto_batch_size, is_oom, make_steps, pick_device, prepare_model
from .guidance import Guidance
from .jobs import Job, JobList, _has_glob, check_out_dir, make_jobs, parse_shard, unknown_mask_message
from ..models.cards import DEFAULT_MODEL
from ..models.checkpoints import LoadedModel, ModelError, load, load_classifier, read_conf, resolve
from ..core.noise import image_key, keys_tensor
from .provenance import (SETTINGS_KEY, append_run_record, job_settings, recorded_settings, settings_changes,
                      sha256_model)
from ..core.sampler import METHODS, Conditioning, StepInfo, repaint, reverse_step
from ..core.schedule import JumpParams, jump_schedule, resolve_jump_params, schedule_summary
from ..models.unet import UNetConfig


class RunError(Exception):
    """A problem that stops the whole run before any image (one line)."""


@dataclass
class InpaintOptions:
    mask: str = "thick"  # a file, a folder or glob of masks (paired by stem), or a mask kind / preset YAML
    mask_convention: str = "keep"  # keep: 255 = known (RePaint); hole: white = hole (LaMa, IOPaint)
    out_dir: Path = Path("out")
    model: Optional[str] = None  # registry name or checkpoint path; None = the embedded default
    config: object = None  # RePaint conf YAML path or dict
    preset: Optional[str] = None
    method: str = "repaint"  # the reverse step: repaint (the paper's), ddnm or ddim (sampler.METHODS)
    eta: float = 0.0  # ddim only: 0 deterministic between resamplings, 1 the ancestral variance
    t_T: Optional[int] = None
    jump_length: Optional[int] = None
    jump_n_sample: Optional[int] = None
    n_sample: Optional[int] = None
    seed: int = 0
    batch_size: object = "auto"
    fit: str = "crop"
    context: float = 0.5
    paste: bool = True
    overwrite: bool = False
    save_mask: bool = False
    allow_empty: bool = False
    recursive: bool = False
    shard: Optional[str] = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    class_label: Optional[str] = None  # class-conditional models: index, ImageNet name, or random (default)
    classifier: Optional[str] = None  # classifier checkpoint (default: the model card's, or conf classifier_path)
    classifier_scale: Optional[float] = None  # default: conf classifier_scale, the card's, else 1.0
    manifest: Optional[str] = None  # JSON lines file, one record per image (appended)
    extras: list = field(default_factory=list)  # per-batch hooks (frames, concat): see BatchHook


@dataclass
class ImageResult:
    input: str
    mask: Optional[str]
    output: Optional[str]
    seed: int
    status: str  # done | failed | skipped
    seconds: float = 0.0
    error: Optional[str] = None
    warnings: list = field(default_factory=list)
    label: Optional[int] = None  # the class of a class-conditional model
    files: list = field(default_factory=list)  # every file of this image on disk: output, mask, concat, animation...

    def json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, [])})


@dataclass
class RunSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    results: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted


class Reporter:
    """How a run talks: the CLI renders these with Rich; the default collects lines."""

    def __init__(self):
        self.lines: list[str] = []

    def log(self, msg: str, level: str = "info") -> None:
        """level: info (progress talk), warning or error (always shown)."""
        self.lines.append(msg)

    def start(self, n_images: int, total_steps: int) -> None:
        pass

    def advance_steps(self, n: int = 1) -> None:
        pass

    def image_done(self, result: ImageResult) -> None:
        pass


class StopFlag:
    """Set by the first Ctrl-C: the run stops after the current batch."""

    def __init__(self):
        self.requested = False


@dataclass
class Prepared:
    job: Job
    image: image_files.LoadedImage
    keep: np.ndarray  # bool (H, W) at the original size
    plan: image_files.FitPlan
    rgb_S: np.ndarray
    keep_S: np.ndarray
    mask_label: str
    warnings: list


@dataclass
class Setup:
    loaded: LoadedModel
    diffusion: Diffusion
    jump: JumpParams
    times: list
    device: torch.device
    conf: dict  # the RePaint conf given with --config (empty without one), read once
    preset: Optional[str] = None  # the preset the schedule starts from (--preset, else the card's, else paper)


def setup(opts: InpaintOptions, conf: Optional[dict] = None) -> Setup:
    """Model, diffusion and jump schedule for a run (shared by inpaint and bench); ``conf``: the
    --config already read (by :func:`resolve_jobs`), else it is read here."""
    if conf is None:
        try:
            conf = read_conf(opts.config, check_keys=True)
        except ModelError as e:
            raise RunError(str(e)) from None
    device = _device(opts)
    try:
        loaded = load(opts.model, conf or None, "cpu")
    except ModelError as e:
        raise RunError(str(e)) from None
    jump, times, diffusion, preset = _schedule(opts, conf, loaded.card, loaded.hparams)
    return Setup(loaded, diffusion, jump, times, device, conf, preset)


def setup_without_weights(opts: InpaintOptions, conf: dict) -> Optional[Setup]:
    """The run's Setup from the model's card or sidecar alone, its weights not loaded (``loaded.model`` holds only
    the architecture's config and classes), for a rerun with nothing to sample. None where only loading the
    model tells (a diffusers folder or hub id, a model that does not resolve: loading it then says why)."""
    try:
        path, hp, card = resolve(opts.model, conf or None)
        cfg = UNetConfig.from_dict({**hp, "use_fp16": False})
    except (ModelError, ValueError, TypeError, KeyError):
        return None
    if path.is_dir():
        return None
    jump, times, diffusion, preset = _schedule(opts, conf, card, hp)
    config_only = SimpleNamespace(cfg=cfg, num_classes=cfg.num_classes if cfg.class_cond else None)
    return Setup(LoadedModel(config_only, diffusion, hp, card, path), diffusion, jump, times, _device(opts), conf,
                 preset)


def _device(opts: InpaintOptions) -> torch.device:
    try:
        return pick_device(opts.engine.device)
    except RuntimeError as e:
        raise RunError(str(e)) from None


def _schedule(opts: InpaintOptions, conf: dict, card, hp: dict) -> tuple[JumpParams, list, Diffusion, Optional[str]]:
    """(jump parameters, times, diffusion, the preset they start from) for a model's card and hyper-parameters."""
    # schedule: a preset (--preset, else the card's), then a conf's schedule_jump_params or the
    # card's explicit ones, then the command-line overrides
    card_sampling = dict((card.sampling or {}) if card else {})
    card_preset = card_sampling.pop("preset", None)
    if conf.get("schedule_jump_params"):
        schedule_conf = conf
    elif card_sampling and not opts.preset:
        schedule_conf = {"schedule_jump_params": card_sampling}
    else:
        schedule_conf = None
    # recorded as used: the named preset, else 'paper' (resolve_jump_params' base) unless explicit params replace it
    preset = opts.preset or card_preset or (None if schedule_conf else "paper")
    try:
        jump = resolve_jump_params(opts.preset or card_preset, schedule_conf, t_T=opts.t_T,
                                   jump_length=opts.jump_length, jump_n_sample=opts.jump_n_sample,
                                   n_sample=opts.n_sample)
        times = jump_schedule(jump)
    except ValueError as e:
        raise RunError(str(e)) from None
    respacing = str(jump.t_T) if opts.t_T is not None or not conf.get("timestep_respacing") else conf["timestep_respacing"]
    diffusion = diffusion_from_hparams(hp, respacing)
    if diffusion.num_steps != jump.t_T:
        raise RunError(f"timestep_respacing {respacing!r} keeps {diffusion.num_steps} steps but t_T is {jump.t_T}; "
                       f"make them equal (or drop timestep_respacing)")
    return jump, times, diffusion, preset


def _mask_is_kind(mask: str) -> bool:
    if mask in masks.MASK_KINDS:
        return True
    p = Path(mask)
    return p.suffix.lower() in (".yaml", ".yml") and p.is_file()


def prepare(job: Job, opts: InpaintOptions, S: int) -> Prepared:
    """Read, check and fit one image and its mask; raises image_files.InputError."""
    img = image_files.read_image(job.image)
    warnings = list(img.warnings)
    h, w = img.size
    if img.bit_depth > 8:
        warnings.append(f"{img.bit_depth}-bit input: the output is 8-bit (known pixels exact at 8 bits)")
    if job.mask_kind is not None:
        label = job.mask_kind
        try:
            keep = masks.mask_for_image(job.mask_kind, h, w, opts.seed, job.stem) > 127
        except masks.MaskError as e:
            raise image_files.InputError(f"{job.image}: cannot draw a '{label}' mask for a {w}x{h} image ({e}); "
                                     f"use a mask file or another --mask kind") from None
        if keep.all() or not keep.any():
            what = "no hole" if keep.all() else "no known pixel"
            raise image_files.InputError(f"{job.image}: the generated '{label}' mask has {what} at {w}x{h}; "
                                     f"use a mask file or another --mask kind")
    else:
        keep, mask_warnings = image_files.read_mask(job.mask_file, opts.mask_convention, size=(h, w))
        warnings += mask_warnings
        label = str(job.mask_file)
        warnings += image_files.check_mask(keep, job.mask_file, allow_empty=opts.allow_empty)
    plan = image_files.plan_fit(keep, S, opts.fit, opts.context, path=job.image)
    rgb_S, keep_S = image_files.apply_fit(plan, img.rgb, keep)
    return Prepared(job, img, keep, plan, rgb_S, keep_S, label, warnings)


class BatchHook:
    """Extra work per batch (frames, concat sheets): a step callback and a finish call."""

    side_suffixes: tuple = ()  # files written per image: the output's stem + each suffix (e.g. '_concat.png')
    from_disk: bool = False  # finish() needs only the input, mask and output: it can run for finished images

    def files_for(self, job: Job) -> list[Path]:
        """The files (or folders) this hook writes for one image."""
        return [job.output.with_name(job.output.stem + s) for s in self.side_suffixes]

    def step_callback(self, batch: list[Prepared]) -> Optional[Callable[[StepInfo], None]]:
        return None

    def finish(self, item: Prepared, sample_S: np.ndarray, output_rgb: np.ndarray, submit) -> None:
        pass


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8, rounded."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def sample_batch(model, st: Setup, batch: list[Prepared], opts: InpaintOptions, reporter: Reporter,
                 callbacks=(), model_kwargs=None, cond_fn=None, graph_cache: Optional[dict] = None) -> torch.Tensor:
    """Run RePaint on one batch; returns x_0 as (B, 3, S, S) in [-1, 1]."""
    dev = st.device
    gt = torch.from_numpy(np.stack([p.rgb_S for p in batch])).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
    keep = torch.from_numpy(np.stack([p.keep_S for p in batch])).to(dev)[:, None]
    keys = keys_tensor([image_key(opts.seed, p.job.stem) for p in batch], dev)
    coefs = st.diffusion.coefficients(dev, eta=opts.eta if opts.method == "ddim" else None)
    cond = Conditioning(gt, keep, keys, coefs, model_kwargs or {}, cond_fn, torch.arange(gt[0].numel(), device=dev),
                        opts.method)
    steps = make_steps(model, cond, opts.engine, reporter.log, graph_cache, with_undo=has_undo(st.times))
    hooks = [cb for cb in callbacks if cb is not None]
    progress = DeviceProgress(reporter.advance_steps, dev)

    def callback(info: StepInfo):
        progress.step()
        for cb in hooks:
            cb(info)

    with torch.no_grad():  # guidance takes its own gradient inside cond_fn
        x = repaint(model, cond, st.times, callback, steps)
    # a CUDA graph returns its static output buffer, which the next batch of this shape
    # (e.g. the other half of an out-of-memory split) would overwrite
    x = x.clone() if x.is_cuda else x
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


def _split_retry(run: Callable[[list], torch.Tensor], batch: list, reporter: Reporter,
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
        return torch.cat([_split_retry(run, part, reporter, state, on_oom) for part in parts])
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
    return torch.cat([_split_retry(run, batch[:half], reporter, state, on_oom),
                      _split_retry(run, batch[half:], reporter, state, on_oom)])


def _prepare_or_error(job: Job, opts: "InpaintOptions", S: int) -> tuple[Optional[Prepared], Optional[str]]:
    """prepare() for the prefetch thread: the result, or the one-line error for the main thread to report."""
    if job.error:
        return None, job.error
    try:
        return prepare(job, opts, S), None
    except image_files.InputError as e:
        return None, str(e)


def prefetched(jobs: list, opts: "InpaintOptions", S: int, ahead: int) -> Iterator[tuple[Job, Optional[Prepared], Optional[str]]]:
    """(job, prepared or None, error or None) in input order, read and fitted up to ``ahead`` images in advance.

    The reading and fitting (decode, masks, crops: NumPy and Pillow, no torch)
    run on a worker thread, so the device is not idle while the main thread
    prepares the next batch; everything else (reporting, the device) stays on
    the main thread.
    """
    pending: deque = deque()
    todo = iter(jobs)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="repaint-prefetch") as pool:

        def submit_next():
            job = next(todo, None)
            if job is not None:
                pending.append((job, pool.submit(_prepare_or_error, job, opts, S)))

        for _ in range(max(1, ahead)):
            submit_next()
        try:
            while pending:
                job, future = pending.popleft()
                submit_next()
                yield (job, *future.result())
        finally:
            for _, future in pending:  # stopped early (Ctrl-C, an error): do not read the rest
                future.cancel()


def step_probe(model, st: "Setup", cond_fn=None) -> Callable[[int], object]:
    """One reverse step at batch b as a run makes it (the prepared model, the classifier's forward
    and backward under guidance), for sizing batches by what actually runs."""
    dev, S = st.device, st.loaded.model.cfg.image_size

    def probe(b: int):
        gt = torch.zeros(b, 3, S, S, device=dev)
        keep = torch.zeros(b, 1, S, S, dtype=torch.bool, device=dev)
        keys = keys_tensor([(0, i) for i in range(b)], dev)
        kw = {"y": torch.zeros(b, dtype=torch.int64, device=dev)} if st.loaded.model.num_classes else {}
        cond = Conditioning(gt, keep, keys, st.diffusion.coefficients(dev), kw, cond_fn,
                            torch.arange(gt[0].numel(), device=dev))
        t = torch.tensor(st.diffusion.num_steps - 1, device=dev)
        return reverse_step(model, gt, cond, t, torch.zeros_like(t), torch.ones((), dtype=torch.bool, device=dev))

    return probe


def _fp32_fits_beside(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether the fp32 retry model may stay on the GPU after a retry: free memory above twice its size."""
    if device.type != "cuda":
        return True
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return torch.cuda.mem_get_info(device)[0] > 2 * size


def check_method(method: str, eta: float) -> None:
    """ValueError (one line) for a method or eta that cannot run."""
    if method not in METHODS:
        raise ValueError(f"--method {method}: use one of {', '.join(METHODS)}")
    if not 0 <= eta <= 1:
        raise ValueError(f"--eta {eta}: must be between 0 and 1")
    if eta and method != "ddim":
        raise ValueError(f"--eta applies to --method ddim only (not {method})")


def make_guidance(st: Setup, opts: InpaintOptions, with_classifier: bool = True) -> Optional[Guidance]:
    """Labels (and classifier guidance) for class-conditional models; None for the others. Without
    ``with_classifier`` (a run with nothing to sample) the scale is worked out but no classifier loads."""
    conf = st.conf
    card_clf = (st.loaded.card.classifier if st.loaded.card else None) or {}
    clf_path = opts.classifier or conf.get("classifier_path")
    scale = opts.classifier_scale
    if scale is None:
        scale = float(conf.get("classifier_scale", card_clf.get("scale", 1.0)))
    if not st.loaded.model.num_classes:
        if opts.classifier or opts.class_label is not None:
            raise RunError("--classifier/--class need a class-conditional model (e.g. --model imagenet256)")
        return None
    classifier = None
    if with_classifier and scale != 0 and (clf_path or card_clf):
        hp = {**card_clf.get("hparams", {}), **{k: v for k, v in conf.items() if k.startswith("classifier_")},
              "image_size": st.loaded.model.cfg.image_size, "num_classes": st.loaded.model.num_classes}
        if clf_path is None or (not Path(clf_path).exists() and card_clf.get("file") == Path(clf_path).name):
            # the card's classifier, also when a RePaint conf names it by a path of its own layout
            found = st.loaded.card.find_file(card_clf["file"]) if card_clf else None
            if found is None:
                raise RunError(st.loaded.card.missing_message(card_clf["file"]) + "; or pass --classifier-scale 0 to run unguided")
            clf_path = found
        try:
            classifier = load_classifier(clf_path, hp, st.device)
        except ModelError as e:
            raise RunError(str(e)) from None
    try:
        return Guidance(st.loaded.model.num_classes, opts.class_label, opts.seed, classifier, scale)
    except ValueError as e:
        raise RunError(str(e)) from None


# ----------------------------------------------------------------------------- before the model loads

def side_suffixes(opts: InpaintOptions) -> list[str]:
    """The files written beside each output, as suffixes of its stem."""
    return (["_mask.png"] if opts.save_mask else []) + [s for h in opts.extras for s in h.side_suffixes]


def mask_output(job: Job) -> Path:
    """Where --save-mask writes an image's mask (beside its output)."""
    return job.output.with_name(f"{job.output.stem}_mask.png")


def resolve_jobs(inputs, opts: InpaintOptions, stdin=None, reporter: Optional[Reporter] = None) -> tuple[dict, JobList]:
    """(the --config read, the jobs): every check that needs no model, done before it loads and before
    --out is created. Raises RunError (one line) for run-wide problems."""
    try:
        parse_shard(opts.shard)
        if opts.mask_convention not in ("keep", "hole"):
            raise ValueError(f"--mask-convention {opts.mask_convention}: use keep (white = keep) or hole (white = hole)")
        check_method(opts.method, opts.eta)
        conf = read_conf(opts.config, check_keys=True)
    except (ValueError, ModelError) as e:
        raise RunError(str(e)) from None
    is_kind = _mask_is_kind(opts.mask)
    if is_kind:
        try:
            masks.load_preset(opts.mask)
        except (masks.MaskError, OSError, ValueError) as e:
            raise RunError(f"--mask {opts.mask}: {e}") from None
        if int(opts.seed) < 0:
            raise RunError(f"--seed {opts.seed}: generated masks need a seed of 0 or more")
    elif not Path(opts.mask).exists() and not _has_glob(opts.mask):
        raise RunError(unknown_mask_message(opts.mask, list(masks.MASK_KINDS)))
    joblist = make_jobs(inputs, opts.mask, Path(opts.out_dir), mask_is_kind=is_kind, overwrite=opts.overwrite,
                        shard=parse_shard(opts.shard), stdin=stdin, recursive=opts.recursive,
                        side_suffixes=side_suffixes(opts))
    if joblist.errors:
        for message in joblist.errors[1:]:
            (reporter or Reporter()).log(message, "error")
        more = f" (and {len(joblist.errors) - 1} more problem(s), above)" if len(joblist.errors) > 1 else ""
        raise RunError(joblist.errors[0] + more)
    return conf, joblist


def describe_masks(opts: InpaintOptions) -> str:
    """The run's first log line: where masks come from and how they are read."""
    conv = {"keep": "white = keep, black = hole", "hole": "white = hole, black = keep"}[opts.mask_convention]
    m = opts.mask
    if _mask_is_kind(m):
        return (f"masks: generated '{m}' per image (from --seed {opts.seed} and the file name); "
                f"--save-mask writes them with --mask-convention {opts.mask_convention} ({conv})")
    p = Path(m)
    what = ("a folder, paired by file stem (or <stem>_mask*)" if p.is_dir() else
            "one mask for every image" if p.is_file() else "a glob, paired by file stem (or <stem>_mask*)")
    return f"masks: {m} ({what}), read with --mask-convention {opts.mask_convention} ({conv})"


# ----------------------------------------------------------------------------- what made an output

def run_settings(st: Setup, opts: InpaintOptions, guidance: Optional[Guidance],
                 reporter: Optional[Reporter] = None) -> dict:
    """What every output of this run is made with: the model by the sha256 of the file actually loaded (a card's
    own sha256 only names the file it expects), the preset the schedule starts from, the device type (the CPU
    and CUDA draw different noise from one seed)."""
    from .. import __version__

    card = st.loaded.card
    digest = sha256_model(st.loaded.path)
    if card and card.sha256 and card.sha256 != digest and reporter is not None:
        reporter.log(f"{st.loaded.path}: sha256 {digest[:12]}.. differs from model card {card.name}'s "
                     f"({card.sha256[:12]}..): another or a damaged file; outputs record the file's", "warning")
    settings = {
        "model": card.name if card else st.loaded.path.name,
        "model_sha256": digest,
        "schedule": st.jump.as_dict(), "preset": st.preset, "seed": int(opts.seed), "method": opts.method,
        **({"eta": float(opts.eta)} if opts.method == "ddim" else {}),
        "mask_convention": opts.mask_convention, "fit": opts.fit, "context": float(opts.context),
        "paste": bool(opts.paste), "device": st.device.type, "version": __version__,
    }
    if guidance is not None:
        settings.update(class_label=opts.class_label, classifier_scale=guidance.scale)
    return settings


def upscale_warning(item: "Prepared") -> Optional[str]:
    """One line when the region generated at the model's size is enlarged to fit the image."""
    plan = item.plan
    if plan.padded <= plan.S:
        return None
    hole = ~item.keep
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    h, w = (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) if rows.size else item.keep.shape
    return (f"hole region {w}x{h} generated at {plan.S} px, upscaled {plan.padded / plan.S:.1f}x "
            f"(first: {item.job.image}): use a model trained at a larger size")


def files_on_disk(job: Job, opts: InpaintOptions) -> list[str]:
    """The files of one image that this run asks for and that exist: output, mask, concat, animation, frames."""
    paths = [job.output] + ([mask_output(job)] if opts.save_mask else []) + [p for h in opts.extras for p in h.files_for(job)]
    return [str(p) for p in paths if p.exists()]


def extras_from_disk(job: Job, opts: InpaintOptions, S: int) -> list[str]:
    """Make the missing --save-mask / --concat files of a finished image from its input, mask and output;
    returns warnings."""
    hooks = [h for h in opts.extras if h.from_disk and any(not p.exists() for p in h.files_for(job))]
    need_mask = opts.save_mask and not mask_output(job).exists()
    if not hooks and not need_mask:
        return []
    warnings: list[str] = []
    try:
        item = prepare(job, opts, S)
        out = image_files.read_image(job.output)
        if out.rgb.shape != item.image.rgb.shape:
            raise image_files.InputError(f"{job.output}: another size than its input")
        if need_mask:
            mask_img = masks.to_convention(np.where(item.keep, 255, 0).astype(np.uint8), opts.mask_convention)
            image_files.write_image_atomic(mask_output(job), mask_img, None, gray=True)
        for hook in hooks:
            hook.finish(item, None, out.rgb, lambda fn, *a, **k: warnings.extend(fn(*a, **k) or []))
    except (image_files.InputError, OSError) as e:
        return [f"{job.image}: --save-mask/--concat not made from the finished output ({e}); --overwrite redoes it"]
    return warnings


def skip_finished(jobs: list[Job], opts: InpaintOptions, S: int, settings: dict, hashes: dict,
                  reporter: Reporter, record: Callable[[ImageResult], None]) -> None:
    """Outputs that exist (no --overwrite) are kept, never redone silently: say how many were made with other
    settings (and which) or with unknown ones; make the extras asked for that need no sampling from the files
    on disk, and name those that do."""
    if not jobs:
        return
    differ, unknown, not_sampled, seen = 0, 0, 0, []
    for job in jobs:
        old = recorded_settings(job.output)
        changes = settings_changes(old, job_settings(settings, job, hashes)) if old is not None else []
        if old is None:
            unknown += 1
            warns = ["output exists, with no recorded settings; --overwrite redoes it"]
        elif changes:
            differ += 1
            seen += [c for c in changes if c not in seen]
            warns = [f"output exists, made with other settings ({'; '.join(changes)}); --overwrite redoes it"]
        else:
            warns = ["output exists; --overwrite redoes it"]
        if not changes:  # made as this run would (or unknown): the extras can come from the files on disk
            for w in extras_from_disk(job, opts, S):
                reporter.log(w, "warning")
                warns.append(w)
        if any(not p.exists() for h in opts.extras if not h.from_disk for p in h.files_for(job)):
            not_sampled += 1
        record(ImageResult(str(job.image), str(job.mask_file or job.mask_kind or ""), str(job.output), opts.seed,
                           "skipped", warnings=warns, files=files_on_disk(job, opts)))
    reporter.log(f"skipping {len(jobs)} image(s) whose outputs exist (--overwrite redoes them)")
    if differ:
        shown = "; ".join(seen[:4]) + ("; ..." if len(seen) > 4 else "")
        extras = ", without the --save-mask/--concat files asked for" if opts.save_mask or any(
            h.from_disk for h in opts.extras) else ""
        reporter.log(f"{differ} existing output(s) were made with other settings ({shown}): kept as they are{extras}; "
                     f"--overwrite redoes them", "warning")
    if unknown:
        reporter.log(f"{unknown} existing output(s) have no recorded settings (made by an older repaint, or not by "
                     f"repaint): kept as they are; --overwrite redoes them", "warning")
    if not_sampled:
        reporter.log(f"--frames/--animate need the sampling again: not made for {not_sampled} finished image(s); "
                     f"--overwrite redoes them", "warning")


# The default model is a demo: on everyday images it fills holes with dark blobs, so a run that did not choose
# a model says so once, at its start, and points to the real ones.
DEFAULT_MODEL_NOTE = (f"model: {DEFAULT_MODEL} (the default) is trained on 32x32 emoji only; for photos pass a real "
                      f"model, e.g. --model celeba256 (faces) or --model places256 (scenes): see README, Models")
# How far (Euclidean, RGB 0..255) the mean colour of a fill may be from the known pixels around its hole before
# a run says the model may not suit the images (the default model on a lavender square: about 290; on our
# example emoji, its own domain, at most 97 over the thick, box and thin masks).
FILL_COLOUR_GAP = 100.0


def fill_colour_note(item: Prepared, out_rgb: np.ndarray) -> Optional[str]:
    """A note when an output's fill is far in colour from the hole's border, else None."""
    colours = image_files.fill_and_border_colours(out_rgb, item.keep)
    if colours is None:
        return None
    fill, border = colours
    if float(np.linalg.norm(fill - border)) <= FILL_COLOUR_GAP:
        return None
    show = lambda c: "(" + ",".join(str(int(round(v))) for v in c) + ")"  # noqa: E731
    return f"fill colour {show(fill)} far from the hole border's {show(border)}"


class OutputLocks:
    """The locks this run holds on the outputs it is making (image_files.lock_output), released once written."""

    def __init__(self):
        self.held: dict = {}

    def take(self, job: Job, overwrite: bool) -> Optional[str]:
        """None when this run may make the output (now locked), else why it is skipped."""
        lock = image_files.lock_output(job.output)
        if lock is None:
            return "in progress by another run"
        if not overwrite and job.output.exists():  # the other run finished it since this run listed its jobs
            lock.release()
            return "output exists (made by another run meanwhile)"
        self.held[str(job.output)] = lock
        return None

    def release(self, job: Job) -> None:
        lock = self.held.pop(str(job.output), None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for lock in self.held.values():
            lock.release()
        self.held.clear()


def non_finite_rows(x: torch.Tensor) -> list[bool]:
    """Per image of a batch: whether its sample holds a NaN or an Inf."""
    return (~torch.isfinite(x.flatten(1)).all(dim=1)).tolist()


def inpaint(inputs, opts: InpaintOptions, reporter: Optional[Reporter] = None, stdin=None,
            stop: Optional[StopFlag] = None) -> RunSummary:
    """Inpaint every input; returns a summary. Raises RunError only for run-wide problems."""
    t_start = time.time()
    reporter = reporter or Reporter()
    stop = stop or StopFlag()
    # everything that can be checked without the model first: a mistake costs no model load and no --out folder
    conf, joblist = resolve_jobs(inputs, opts, stdin, reporter)
    reporter.log(describe_masks(opts))
    if opts.model is None and not conf.get("model_path"):
        reporter.log(DEFAULT_MODEL_NOTE)
    problem = check_out_dir(Path(opts.out_dir), create=False)
    if problem:
        raise RunError(problem)
    # a rerun whose outputs all exist compares their settings, which needs the model's card, not its weights
    light = setup_without_weights(opts, conf) if joblist.skipped_done and not joblist.jobs else None
    st = light or setup(opts, conf)
    guidance = make_guidance(st, opts, with_classifier=light is None)
    if opts.method == "ddim" and guidance is not None and guidance.cond_fn is not None:
        raise RunError("--method ddim takes no classifier guidance: pass --classifier-scale 0, or use --method repaint or ddnm")
    S = st.loaded.model.cfg.image_size
    problem = check_out_dir(Path(opts.out_dir))
    if problem:
        raise RunError(problem)
    settings = run_settings(st, opts, guidance, reporter)
    mask_hashes: dict = {}
    summary = RunSummary()
    manifest = open(opts.manifest, "a", encoding="utf-8") if opts.manifest else None

    def record(res: ImageResult):
        if res.status == "done":
            summary.done += 1
        elif res.status == "failed":
            summary.failed += 1
        else:
            summary.skipped += 1
        summary.results.append(res)
        reporter.image_done(res)
        if manifest is not None:
            manifest.write(res.json() + "\n")
            manifest.flush()

    for note in joblist.ignored:
        reporter.log(note, "warning")
    for note in joblist.notes:
        reporter.log(note)
    skip_finished(joblist.skipped_done, opts, S, settings, mask_hashes, reporter, record)
    if light is not None:
        reporter.log(f"all {len(joblist.skipped_done)} outputs exist: nothing to do, the model was not loaded "
                     f"(--overwrite redoes them)")
        if manifest is not None:
            manifest.close()
        summary.seconds = time.time() - t_start
        return summary
    _sample_all(st, opts, guidance, joblist, S, settings, mask_hashes, reporter, record, summary, stop, manifest)
    summary.seconds = time.time() - t_start
    return summary


def _sample_all(st: Setup, opts: InpaintOptions, guidance: Optional[Guidance], joblist: JobList, S: int,
                settings: dict, mask_hashes: dict, reporter: Reporter, record: Callable[[ImageResult], None],
                summary: RunSummary, stop: StopFlag, manifest) -> None:
    """Sample the jobs batch by batch and write their files; closes ``manifest`` and adds the run record."""
    summ = schedule_summary(st.times)
    model = prepare_model(st.loaded.model, st.device, opts.engine)
    n = len(joblist.jobs)
    if opts.batch_size == "auto":
        bs = auto_batch_size(model, S, st.device, max(n, 1),
                             probe=step_probe(model, st, guidance.cond_fn if guidance else None))
    else:
        bs = max(1, int(opts.batch_size))
    reporter.log(f"model {st.loaded.card.name if st.loaded.card else st.loaded.path.name} ({S}x{S}) on {st.device}; "
                 f"schedule t_T={st.jump.t_T} jump_length={st.jump.jump_length} jump_n_sample={st.jump.jump_n_sample}: "
                 f"{summ['unet_calls']} UNet calls per image; batch {bs}")
    reporter.start(n, -(-n // bs) * (len(st.times) - 1))  # schedule steps over all batches
    locks = OutputLocks()

    def fail(job: Job, message: str):
        locks.release(job)
        reporter.log(message, "error")
        record(ImageResult(str(job.image), str(job.mask_file or job.mask_kind or ""), None, opts.seed, "failed",
                           error=message))

    upscale_warned: list = []
    busy: list = []  # images another run on this --out is making

    def prepared_items() -> Iterator[Prepared]:
        for job, item, error in prefetched(joblist.jobs, opts, S, ahead=bs):
            if error is not None:
                fail(job, error)
                continue
            why = locks.take(job, opts.overwrite)
            if why is not None:
                busy.append(job.image)
                record(ImageResult(str(job.image), item.mask_label, str(job.output), opts.seed, "skipped",
                                   warnings=[why], files=files_on_disk(job, opts)))
                continue
            note = None if upscale_warned else upscale_warning(item)
            if note:
                upscale_warned.append(note)  # once per run
                reporter.log(note, "warning")
            yield item

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repaint-writer")
    pending: list[tuple[Prepared, float, list[Future]]] = []
    fill_notes: dict = {}  # output -> a note on its fill's colour (fill_colour_note)
    far_fills: list = []

    def collect(block: bool):
        """Report images whose files are written (in order); a writer's error fails its image only."""
        while pending and (block or all(f.done() for f in pending[0][2])):
            item, secs, futs = pending.pop(0)
            errors, warns = [], list(item.warnings)
            for f in futs:
                try:
                    warns += f.result() or []
                except image_files.InputError as e:
                    errors.append(str(e))
                except OSError as e:
                    errors.append(f"{item.job.output}: cannot write ({e.strerror or e}); free space or choose another --out")
                except Exception as e:  # a bug in a writer: named, and the other images go on
                    errors.append(f"{item.job.output}: cannot write ({type(e).__name__}: {e})")
            note = fill_notes.pop(str(item.job.output), None)
            if errors:
                fail(item.job, errors[0])
                continue
            locks.release(item.job)
            for w in warns:
                reporter.log(f"{item.job.image}: {w}" if not str(w).startswith(str(item.job.image)) else w, "warning")
            if note:
                far_fills.append(item.job.image)
            record(ImageResult(str(item.job.image), item.mask_label, str(item.job.output), opts.seed, "done",
                               round(secs, 3), warnings=warns + ([note] if note else []),
                               label=guidance.label_for(item.job.stem) if guidance else None,
                               files=files_on_disk(item.job, opts)))

    model_fp32 = None
    graph_cache = GraphCache()  # CUDA graph captures per model and batch shape, reused across batches
    split = SplitState()  # after an out-of-memory, later batches start at the size that worked

    def free_after_oom():
        graph_cache.clear()  # their private pools hold a step's activations each
        gc.collect()
        if st.device.type == "cuda":
            torch.cuda.empty_cache()

    batch: list[Prepared] = []
    items = prepared_items()
    try:
        while True:
            batch = []
            size = bs if split.limit is None else min(bs, split.limit)
            for item in items:
                batch.append(item)
                if len(batch) == size:
                    break
            if not batch:
                break
            t0 = time.time()
            kwargs = guidance.model_kwargs(batch, st.device) if guidance else None
            cond_fn = guidance.cond_fn if guidance else None
            callbacks = [h.step_callback(batch) for h in opts.extras]

            def run(idx: list[int], m=model):  # idx: positions in the batch (all, or a split part)
                sub_kw = {k: v[idx] for k, v in (kwargs or {}).items()}
                sub_cbs = callbacks if len(idx) == len(batch) else []  # frames only for whole batches
                return sample_batch(m, st, [batch[i] for i in idx], opts, reporter, sub_cbs, sub_kw, cond_fn,
                                    graph_cache)

            x = _split_retry(run, list(range(len(batch))), reporter, split, free_after_oom)
            if not torch.isfinite(x).all() and getattr(model, "dtype", torch.float32) != torch.float32:
                reporter.log(f"NaN/Inf under {model.dtype} in the batch starting {batch[0].job.image}; retrying it in fp32",
                             "warning")
                if model_fp32 is None:  # the fp32 master, kept on the host until a batch needs it
                    model_fp32 = prepare_model(st.loaded.model, st.device,
                                               EngineOptions(**{**asdict(opts.engine), "precision": "fp32"}))
                x = _split_retry(lambda idx: run(idx, model_fp32), list(range(len(batch))), reporter, split,
                                 free_after_oom)
                if not _fp32_fits_beside(model_fp32, st.device):  # memory is short: back to the host
                    graph_cache.clear()  # its graphs read the weights about to move
                    model_fp32.inner.to("cpu")
                    model_fp32 = None
                    free_after_oom()
            # a sample still not finite (also in fp32) would be written as black pixels: its image fails alone
            bad = non_finite_rows(x)
            samples = to_uint8(x)
            secs = (time.time() - t0) / len(batch)
            for item, sample, is_bad in zip(batch, samples, bad):
                if is_bad:
                    fail(item.job, f"{item.job.image}: the model's sample holds NaN/Inf (in fp32); nothing written; "
                                   f"try another --seed, or check the model's weights")
                    continue
                out_rgb = image_files.unfit(item.plan, sample, item.image.rgb, item.keep, paste=opts.paste)
                note = fill_colour_note(item, out_rgb)
                if note:
                    fill_notes[str(item.job.output)] = note
                text = {SETTINGS_KEY: json.dumps(job_settings(settings, item.job, mask_hashes), separators=(",", ":"))}
                futs = [writer.submit(image_files.write_image_atomic, item.job.output, out_rgb, item.image.alpha,
                                      gray=item.image.gray, text=text, icc_profile=item.image.icc_profile,
                                      dpi=item.image.dpi)]
                if opts.save_mask:
                    mask_out = mask_output(item.job)
                    mask_img = masks.to_convention(np.where(item.keep, 255, 0).astype(np.uint8), opts.mask_convention)
                    futs.append(writer.submit(image_files.write_image_atomic, mask_out,
                                              np.repeat(mask_img[..., None], 3, axis=2), None, gray=True))
                for hook in opts.extras:
                    hook.finish(item, sample, out_rgb, lambda fn, *a, **k: futs.append(writer.submit(fn, *a, **k)))
                pending.append((item, secs, futs))
            collect(block=False)
            if stop.requested:
                summary.interrupted = True
                reporter.log("stopped after the current batch (Ctrl-C); rerun the same command to finish the rest", "warning")
                break
    finally:
        _finish_run(items, collect, writer, locks, manifest, summary, settings, opts)
    _report_run_notes(busy, far_fills, reporter)


def _finish_run(items, collect, writer, locks: OutputLocks, manifest, summary: RunSummary, settings: dict,
                opts: InpaintOptions) -> None:
    """The cleanup of a run, whatever stopped it: report what was written, stop the writer, release the locks, close
    the manifest, add the run record. Runs inside ``finally``: an error of its own must not hide the one on its
    way (if any), nor skip the rest of the cleanup; it is raised at the end when nothing else is."""
    late = None
    try:
        items.close()  # stops the prefetch thread (it reads no further than the next batch)
        collect(block=True)
    except Exception as e:
        late = e
    writer.shutdown(wait=True)
    locks.release_all()
    if manifest is not None:
        manifest.close()
    if summary.done:  # a run that wrote nothing leaves nothing
        append_run_record(Path(opts.out_dir), {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, "mask": opts.mask,
            "shard": opts.shard, "done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
            "interrupted": summary.interrupted})
    if late is not None and sys.exc_info()[1] is None:
        raise late


def _report_run_notes(busy: list, far_fills: list, reporter: Reporter) -> None:
    """One line each, per run: images left to another run, fills far in colour from their holes' borders."""
    if busy:
        reporter.log(f"{len(busy)} image(s) skipped, in progress by another run on this --out (first: {busy[0]}); "
                     f"that run writes them", "warning")
    if far_fills:
        reporter.log(f"{len(far_fills)} image(s) filled far from their hole border's colour (first: {far_fills[0]}; "
                     f"each image's --json or --manifest line has both colours): this model may not suit these images; "
                    f"see README, Models",
                     "warning")
