"""Everything a run settles before its first batch: the jobs, the model, the schedule, the guidance and the settings
every output records. Mistakes that concern the whole run stop it here, before the model loads where possible."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional
import torch
from . import masks
from ..core.diffusion import Diffusion, diffusion_from_hparams
from ..runtime.device import EngineOptions, pick_device
from .guidance import Guidance
from .jobs import JobList, _has_glob, make_jobs, parse_shard, unknown_mask_message
from ..models.cards import DEFAULT_MODEL
from ..models.checkpoints import load, load_classifier, read_conf, resolve
from ..models.loaded import LoadedModel, ModelError
from ..files import sha256_model
from ..core.sampler import METHODS
from ..core.schedule import JumpParams, jump_schedule, preset_guidance, resolve_jump_params
from ..models.unet import UNetConfig
from .options import InpaintOptions, ReadOptions, Reporter, RunError, SampleOptions
from .resume import side_suffixes
from ..choices import CONVENTIONS, CONVENTIONS_HINT, check_choice


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


def setup(sample: SampleOptions, engine: EngineOptions, conf: Optional[dict] = None) -> Setup:
    """Model, diffusion and jump schedule for a run (shared by inpaint and bench); ``conf``: the
    --config already read (by :func:`resolve_jobs`), else it is read here."""
    if conf is None:
        try:
            conf = read_conf(sample.config, check_keys=True)
        except ModelError as e:
            raise RunError(str(e)) from None
    device = _device(engine)
    try:
        loaded = load(sample.model, conf or None, "cpu")
    except ModelError as e:
        raise RunError(str(e)) from None
    jump, times, diffusion, preset = _schedule(sample, conf, loaded.card, loaded.hparams)
    return Setup(loaded, diffusion, jump, times, device, conf, preset, _guidance(sample, preset))


def setup_without_weights(sample: SampleOptions, engine: EngineOptions, conf: dict) -> Optional[Setup]:
    """The run's Setup from the model's card or sidecar alone, its weights not loaded (``loaded.model`` holds only
    the architecture's config and classes), for a rerun with nothing to sample. None where only loading the
    model tells (a diffusers folder or hub id, a model that does not resolve: loading it then says why)."""
    try:
        path, hp, card = resolve(sample.model, conf or None)
        cfg = UNetConfig.from_dict({**hp, "use_fp16": False})
    except (ModelError, ValueError, TypeError, KeyError):
        return None
    if path.is_dir():
        return None
    jump, times, diffusion, preset = _schedule(sample, conf, card, hp)
    config_only = SimpleNamespace(cfg=cfg, num_classes=cfg.num_classes if cfg.class_cond else None)
    return Setup(LoadedModel(config_only, diffusion, hp, card, path), diffusion, jump, times, _device(engine), conf,
                 preset, _guidance(sample, preset))


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
    except ValueError as e:
        raise RunError(str(e)) from None
    respacing = str(jump.t_T) if sample.t_T is not None or not conf.get("timestep_respacing") else conf["timestep_respacing"]
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


def check_method(method: str, eta: float) -> None:
    """ValueError (one line) for a method or eta that cannot run."""
    if method not in METHODS:
        raise ValueError(f"--method {method}: use one of {', '.join(METHODS)}")
    if not 0 <= eta <= 1:
        raise ValueError(f"--eta {eta}: must be between 0 and 1")
    if eta and method != "ddim":
        raise ValueError(f"--eta applies to --method ddim only (not {method})")


def make_guidance(st: Setup, sample: SampleOptions, with_classifier: bool = True) -> Optional[Guidance]:
    """Labels (and classifier guidance) for class-conditional models; None for the others. Without
    ``with_classifier`` (a run with nothing to sample) the scale is worked out but no classifier loads."""
    conf = st.conf
    card_clf = (st.loaded.card.classifier if st.loaded.card else None) or {}
    clf_path = sample.classifier or conf.get("classifier_path")
    scale = sample.classifier_scale
    if scale is None:
        scale = float(conf.get("classifier_scale", card_clf.get("scale", 1.0)))
    if not st.loaded.model.num_classes:
        if sample.classifier or sample.class_label is not None:
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
        return Guidance(st.loaded.model.num_classes, sample.class_label, classifier, scale)
    except ValueError as e:
        raise RunError(str(e)) from None


def resolve_jobs(inputs, opts: InpaintOptions, stdin=None, reporter: Optional[Reporter] = None) -> tuple[dict, JobList]:
    """(the --config read, the jobs): every check that needs no model, done before it loads and before
    --out is created. Raises RunError (one line) for run-wide problems."""
    read, sample, write = opts.read, opts.sample, opts.write
    try:
        parse_shard(read.shard)
        check_choice(read.mask_convention, CONVENTIONS, "--mask-convention", CONVENTIONS_HINT)
        check_method(sample.method, sample.eta)
        if sample.guidance is not None and not sample.guidance >= 0:
            raise ValueError(f"--guidance {sample.guidance}: must be 0 (the paper's algorithm) or more")
        conf = read_conf(sample.config, check_keys=True)
    except (ValueError, ModelError) as e:
        raise RunError(str(e)) from None
    is_kind = _mask_is_kind(read.mask)
    if is_kind:
        try:
            masks.load_preset(read.mask)
        except (masks.MaskError, OSError, ValueError) as e:
            raise RunError(f"--mask {read.mask}: {e}") from None
        if int(sample.seed) < 0:
            raise RunError(f"--seed {sample.seed}: generated masks need a seed of 0 or more")
    elif not Path(read.mask).exists() and not _has_glob(read.mask):
        raise RunError(unknown_mask_message(read.mask, list(masks.MASK_KINDS)))
    joblist = make_jobs(inputs, read.mask, Path(write.out_dir), mask_is_kind=is_kind, overwrite=write.overwrite,
                        shard=parse_shard(read.shard), stdin=stdin, recursive=read.recursive,
                        side_suffixes=side_suffixes(write), seed=sample.seed)
    if joblist.errors:
        for message in joblist.errors[1:]:
            (reporter or Reporter()).log(message, "error")
        more = f" (and {len(joblist.errors) - 1} more problem(s), above)" if len(joblist.errors) > 1 else ""
        raise RunError(joblist.errors[0] + more)
    return conf, joblist


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
