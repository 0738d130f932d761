"""Everything a run settles before its first batch: the jobs, the model, the schedule, the guidance and the settings
every output records. Mistakes that concern the whole run stop it here, before the model loads where possible."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional
import torch
from . import masks
from ..core.diffusion import Diffusion, diffusion_from_hparams
from ..runtime.device import EngineOptions, pick_device
from .guidance import Guidance
from .jobs import JobList, has_glob, check_out_dir, make_jobs, unknown_mask_message
from ..models.cards import DEFAULT_MODEL
from ..models.checkpoints import load_for_run, read_conf, resolve
from ..models.loaded import LoadedModel, ModelError
from ..files import InputError, WritePlan, sha256_model
from ..core.schedule import (JumpParams, jump_schedule, preset_guidance, preset_guidance_calls,
                             resolve_jump_params)
from .options import InpaintOptions, ReadOptions, Reporter, RunError, SampleOptions
from ..constraints import check_t_T_within
from .plan import plan_problems
from .resume import side_suffixes


@dataclass
class Setup:
    loaded: LoadedModel
    diffusion: Diffusion
    jump: JumpParams
    times: list
    device: torch.device
    conf: dict  # the RePaint conf given with --config (empty without one), read once
    preset: Optional[str] = None  # the preset the schedule starts from (--preset, else the card's, else paper)
    guidance: float = 0.0  # reconstruction guidance scale: --guidance, else the preset's (core/guidance.py)
    guidance_calls: str = "all"  # which UNet calls take it: --guidance-calls, else the preset's (core/schedule.py)


def setup(sample: SampleOptions, engine: EngineOptions, conf: dict, weights: bool = True) -> Setup:
    """Device, model (with its classifier, for a class-conditional one) and schedule for a run; ``conf``: the
    --config read (:func:`resolve_jobs`). Without ``weights`` (a rerun with nothing to sample) the model's card is
    read but, where it tells enough, not its weights (``st.loaded.weights`` says which)."""
    device = _device(engine)
    try:
        loaded = load_for_run(sample.model, conf, weights, sample.classifier, sample.classifier_scale)
    except ModelError as e:
        raise RunError(str(e)) from None
    jump, times, diffusion, preset = _schedule(sample, conf, loaded.card, loaded.hparams)
    calls = sample.guidance_calls or preset_guidance_calls(preset)
    return Setup(loaded, diffusion, jump, times, device, conf, preset, _guidance(sample, preset), calls)


def _guidance(sample: SampleOptions, preset: Optional[str]) -> float:
    """--guidance, else the preset's scale (0 for paper, and for a schedule given without a preset)."""
    return float(sample.guidance) if sample.guidance is not None else (preset_guidance(preset) if preset else 0.0)


def _device(engine: EngineOptions) -> torch.device:
    try:
        return pick_device(engine.device)
    except RuntimeError as e:
        raise RunError(str(e)) from None


def _schedule(sample: SampleOptions, conf: dict, card, hp: dict) -> tuple[JumpParams, list, Diffusion, Optional[str]]:
    """(jump parameters, times, diffusion, the preset they start from) for a model's card and hyper-parameters."""
    # schedule: a preset (--preset, else the card's), then a conf's schedule_jump_params or the
    # card's explicit ones, then the command-line overrides
    card_sampling = dict((card.sampling or {}) if card else {})
    card_preset = card_sampling.pop("preset", None)
    if conf.get("schedule_jump_params"):
        schedule_conf = conf
    elif card_sampling and not sample.preset:
        schedule_conf = {"schedule_jump_params": card_sampling}
    else:
        schedule_conf = None
    # recorded as used: the named preset, else 'paper' (resolve_jump_params' base) unless explicit params replace it
    preset = sample.preset or card_preset or (None if schedule_conf else "paper")
    try:
        jump = resolve_jump_params(sample.preset or card_preset, schedule_conf, t_T=sample.t_T,
                                   jump_length=sample.jump_length, jump_n_sample=sample.jump_n_sample,
                                   n_sample=sample.n_sample)
        times = jump_schedule(jump)
        # more respaced steps than the model has would fail deep in the respacing, with a traceback
        check_t_T_within(jump.t_T, int(hp.get("diffusion_steps", 1000)), f"the model {card.name}" if card else
                         "this model")
        respacing = (str(jump.t_T) if sample.t_T is not None or not conf.get("timestep_respacing")
                     else conf["timestep_respacing"])
        diffusion = diffusion_from_hparams(hp, respacing)
    except ValueError as e:  # constraints.OptionError too
        raise RunError(str(e)) from None
    if diffusion.num_steps != jump.t_T:
        raise RunError(f"timestep_respacing {respacing!r} keeps {diffusion.num_steps} steps but t_T is {jump.t_T}; "
                       f"make them equal (or drop timestep_respacing)")
    return jump, times, diffusion, preset


def _mask_is_kind(mask: str) -> bool:
    if mask in masks.MASK_KINDS:
        return True
    p = Path(mask)
    return p.suffix.lower() in (".yaml", ".yml") and p.is_file()


def make_guidance(st: Setup, sample: SampleOptions) -> Optional[Guidance]:
    """Labels (and classifier guidance) for class-conditional models; None for the others."""
    loaded = st.loaded
    if not loaded.model.num_classes:
        if sample.classifier or sample.class_label is not None:
            raise RunError("--classifier/--class need a class-conditional model (e.g. --model imagenet256)")
        return None
    classifier = loaded.classifier.to(st.device) if loaded.classifier is not None else None
    try:
        return Guidance(loaded.model.num_classes, sample.class_label, classifier, loaded.classifier_scale)
    except ValueError as e:
        raise RunError(str(e)) from None


@dataclass
class RunPlan:
    """A run settled before its first batch: the sampling loop works from this, not from the options."""
    opts: InpaintOptions
    joblist: JobList
    st: Setup
    guidance: Optional[Guidance]
    settings: dict  # what every output records (:func:`run_settings`)
    light: bool  # nothing to sample: the model's card was read, its weights were not loaded
    writes: WritePlan  # every path the run writes, checked before the model loaded (plan.py)


def plan_run(inputs, opts: InpaintOptions, stdin=None, reporter: Optional[Reporter] = None) -> RunPlan:
    """Settle a run: the checks that need no model first (a mistake costs no model load and no --out folder), then
    the device, model, schedule and guidance. Raises RunError (one line) for run-wide problems."""
    reporter = reporter or Reporter()
    conf, joblist, writes = resolve_jobs(inputs, opts, stdin, reporter)
    reporter.log(describe_masks(opts.read, opts.sample.seed))
    if opts.sample.model is None and not conf.get("model_path"):
        reporter.log(DEFAULT_MODEL_NOTE)
    _check_some_image_fits(joblist, opts.read, opts.sample, conf)
    # a rerun whose outputs all exist compares their settings, which needs the model's card, not its weights
    st = setup(opts.sample, opts.engine, conf, weights=bool(joblist.jobs or not joblist.skipped_done))
    guidance = make_guidance(st, opts.sample)
    for note in joblist.ignored:
        reporter.log(note, "warning")
    for note in joblist.notes:
        reporter.log(note)
    return RunPlan(opts, joblist, st, guidance, run_settings(st, opts, guidance, reporter), not st.loaded.weights,
                   writes)


def _check_some_image_fits(joblist: JobList, read: ReadOptions, sample: SampleOptions, conf: dict) -> None:
    """--fit pad where no image is small enough for the model: one line now, before the model loads, rather than
    every image failing after. The model's size comes from its card or hyper-parameters (no weights read)."""
    if read.fit != "pad" or not joblist.jobs:
        return
    from PIL import Image

    try:
        _, hp, _ = resolve(sample.model, conf or None)
        S = int(hp["image_size"])
    except Exception:  # a model that does not resolve says why when it loads; a diffusers model: checked per image
        return
    sizes = []
    for job in joblist.jobs:
        try:
            with Image.open(job.image) as im:
                sizes.append((job.image, im.size))
        except Exception:  # an unreadable image fails on its own, with its own line
            return
    if sizes and all(w > S or h > S for _, (w, h) in sizes):
        first, (w, h) = sizes[0]
        raise RunError(f"--fit pad: no image is at most {S}x{S}, the model's size (first: {first} is {w}x{h}); "
                       f"use --fit crop or --fit resize")


def check_out(out_dir, create: bool = True) -> None:
    problem = check_out_dir(Path(out_dir), create=create)
    if problem:
        raise RunError(problem)


def resolve_jobs(inputs, opts: InpaintOptions, stdin=None,
                 reporter: Optional[Reporter] = None) -> tuple[dict, JobList, WritePlan]:
    """(the --config read, the jobs, every path the run writes): every check that needs no model, done before it
    loads and before --out is created. Raises RunError (one line) for run-wide problems."""
    read, sample, write = opts.read, opts.sample, opts.write  # their values are checked (options.py)
    try:
        conf = read_conf(sample.config, check_keys=True)
    except ModelError as e:
        raise RunError(str(e)) from None
    is_kind = _mask_is_kind(read.mask)
    if is_kind:
        try:
            masks.load_preset(read.mask)
        except (masks.MaskError, OSError, ValueError) as e:
            raise RunError(f"--mask {read.mask}: {e}") from None
        if int(sample.seed) < 0:
            raise RunError(f"--seed {sample.seed}: generated masks need a seed of 0 or more")
    elif not Path(read.mask).exists() and not has_glob(read.mask):
        raise RunError(unknown_mask_message(read.mask, list(masks.MASK_KINDS)))
    joblist = make_jobs(inputs, read.mask, Path(write.out_dir), mask_is_kind=is_kind, overwrite=write.overwrite,
                        shard=read.shard_part, stdin=stdin, recursive=read.recursive,
                        side_suffixes=side_suffixes(write), seed=sample.seed, null=read.null)
    writes, problems = (None, []) if joblist.errors else plan_problems(joblist, opts)
    errors = joblist.errors or problems
    if errors:
        for message in errors[1:]:
            (reporter or Reporter()).log(message, "error")
        more = f" (and {len(errors) - 1} more problem(s), above)" if len(errors) > 1 else ""
        raise RunError(errors[0] + more)
    if not is_kind and Path(read.mask).is_file():
        _check_single_mask(Path(read.mask), read.mask_convention, reporter or Reporter())
    check_out(write.out_dir, create=False)  # created once the model is loaded (inpaint._Run)
    folder_problem = check_out_dir(Path(write.manifest).parent, create=False) if write.manifest else None
    if folder_problem:  # its folder is made with --out's (inpaint._Run.go)
        raise RunError(f"--manifest {write.manifest}: {folder_problem.replace('--out', '--manifest')}")
    return conf, joblist, writes


def _check_single_mask(path: Path, convention: str, reporter: Reporter) -> None:
    """One --mask file for every image: read once now, so that an unreadable one stops the run before the model
    loads (not once per image after), and its convention is questioned once."""
    from .image_files import read_mask
    from .prepare import inverted_mask_note

    try:
        keep, _ = read_mask(path, convention)
    except InputError as e:
        raise RunError(str(e)) from None
    note = inverted_mask_note(keep, path, convention)
    if note:
        reporter.log(note, "warning")


def describe_masks(read: ReadOptions, seed: int) -> str:
    """The run's first log line: where masks come from and how they are read."""
    conv = {"keep": "white = keep, black = hole", "hole": "white = hole, black = keep"}[read.mask_convention]
    m = read.mask
    if _mask_is_kind(m):
        return (f"masks: generated '{m}' per image (from --seed {seed} and the file name); "
                f"--save-mask writes them with --mask-convention {read.mask_convention} ({conv})")
    p = Path(m)
    what = ("a folder, paired by file stem (or <stem>_mask*)" if p.is_dir() else
            "one mask for every image" if p.is_file() else "a glob, paired by file stem (or <stem>_mask*)")
    return f"masks: {m} ({what}), read with --mask-convention {read.mask_convention} ({conv})"


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
    read, sample = opts.read, opts.sample
    settings = {
        "model": card.name if card else st.loaded.path.name,
        "model_sha256": digest,
        "schedule": st.jump.as_dict(), "preset": st.preset, "seed": int(sample.seed), "method": sample.method,
        **({"eta": float(sample.eta)} if sample.method == "ddim" else {}),
        **({"guidance": float(st.guidance)} if st.guidance else {}),  # absent at 0: outputs made before it compare
        # absent for "all" (and without guidance), as outputs made before the choice existed were
        **({"guidance_calls": st.guidance_calls} if st.guidance and st.guidance_calls != "all" else {}),
        "mask_convention": read.mask_convention, "fit": read.fit, "context": float(read.context),
        "paste": bool(opts.write.paste), "device": st.device.type, "version": __version__,
    }
    if guidance is not None:
        settings.update(class_label=sample.class_label, classifier_scale=guidance.scale)
    return settings


# The default model is a demo: on everyday images it fills holes with dark blobs, so a run that did not choose
# a model says so once, at its start, and points to the real ones.
DEFAULT_MODEL_NOTE = (f"model: {DEFAULT_MODEL} (the default) is trained on 32x32 emoji only; for photos pass a real "
                      f"model, e.g. --model celeba256 (faces) or --model places256 (scenes): see README, Models")
