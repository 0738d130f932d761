"""Unconditional DDPMs in diffusers' format: a model folder or a Hugging Face hub id.

``load_diffusers(source)`` gives the same ``LoadedModel`` as our guided-diffusion
checkpoints: diffusers' own ``UNet2DModel`` behind a thin adapter that speaks the
guided-diffusion call ``model(x, t)`` and its output convention (eps, then a variance
channel), and hyper-parameters that rebuild the scheduler's noise schedule in
``diffusion.py``. So the RePaint sampler, batching, CUDA graphs, frames and shards run
unchanged on top. diffusers is an optional extra (``pip install repaint-cli[diffusers]``).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..core.diffusion import PREDICTIONS
from .loaded import MODEL_FILE_SUFFIXES, LoadedModel, ModelError
from ..resources import cached_snapshot, hf_hub_cache

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
# diffusers' DDPMScheduler defaults, for a UNet folder that comes without a scheduler config
DEFAULT_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                     "variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0,
                     "prediction_type": "epsilon"}


class DiffusersError(ModelError):
    """A one-line, user-facing problem with a diffusers model."""


# --------------------------------------------------------------------------- finding the folders


def looks_like_hub_id(name: str) -> bool:
    """'org/model' that is no path here: not on disk, its first part no local folder, no file suffix."""
    return (bool(HUB_ID.match(name)) and not Path(name).exists() and not Path(name).parent.is_dir()
            and not name.lower().endswith(MODEL_FILE_SUFFIXES))


@dataclass
class Layout:
    """Where a diffusers model's parts are."""

    unet_dir: Path
    scheduler_config: Optional[Path]


def find_layout(folder: Path) -> Optional[Layout]:
    """The UNet and scheduler of a pipeline folder (model_index.json, unet/ + scheduler/), of a
    folder with both at its top (the google/ddpm-* repositories), or of a bare UNet2DModel folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (folder / "unet" / "config.json").is_file():
        unet = folder / "unet"
    elif (folder / "config.json").is_file():
        unet = folder
    else:
        return None
    for sched in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json",
                  unet / "scheduler_config.json"):
        if sched.is_file():
            return Layout(unet, sched)
    return Layout(unet, None)


def is_diffusers_model(name: str) -> bool:
    """A diffusers model folder, or a name that looks like a hub id (org/model) and is no path."""
    return find_layout(Path(name)) is not None or looks_like_hub_id(name)


CONFIG_PATTERNS = ["*.json", "*.txt", "*.md"]
WEIGHT_PATTERNS = ["*.safetensors", "*.bin"]


def locate(name: str) -> Path:
    """A model folder on disk for a folder path or a hub id: the local cache first, then a
    download of its configs only (the weights come later, once the configs are accepted:
    :func:`download_weights`) where huggingface_hub and a network are there."""
    if Path(name).is_dir():
        if find_layout(Path(name)) is None:
            raise DiffusersError(f"{name}: not a diffusers model folder (no config.json, unet/config.json "
                                 f"or model_index.json)")
        return Path(name)
    found = cached_snapshot(name)
    if found is not None:
        return found
    return _download(name, CONFIG_PATTERNS)


def download_weights(name: str, folder: Path) -> Path:
    """The snapshot of hub model ``name`` with its weights, where ``folder`` (its configs) has none."""
    if Path(name).is_dir():
        return folder
    return _download(name, CONFIG_PATTERNS + WEIGHT_PATTERNS)


def _download(name: str, patterns: list) -> Path:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    where = f"not in the Hugging Face cache ({hf_hub_cache()}; set HF_HOME or HF_HUB_CACHE to look elsewhere)"
    if offline:
        raise DiffusersError(f"{name}: {where}; HF_HUB_OFFLINE is set, so nothing was downloaded")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise DiffusersError(f"{name}: {where}; install repaint-cli[diffusers] to download it") from None
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:  # no network, no such repository, no permission: all one line
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise DiffusersError(f"{name}: {where}, and downloading it failed ({first}); "
                             f"download it where a network exists: huggingface-cli download {name}") from None


# --------------------------------------------------------------------------- configuration as data


# Scheduler keys that hparams_from_configs reads (or refuses when they ask for what it lacks)
SCHEDULER_KEYS_USED = frozenset({"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                                 "variance_type", "clip_sample", "clip_sample_range", "prediction_type", "thresholding",
                                 "predict_epsilon"})
# Keys that do not change the trained noise schedule or our step: how that scheduler spaces its own
# inference steps (RePaint brings its own schedule), thresholding's settings (thresholding is refused),
# and bookkeeping.
SCHEDULER_KEYS_INERT = frozenset({"timestep_spacing", "steps_offset", "set_alpha_to_one", "skip_prk_steps",
                                  "dynamic_thresholding_ratio", "sample_max_value", "tensor_format",
                                  "_class_name", "_diffusers_version", "_use_default_values"})


def check_scheduler_keys(sched_cfg: dict, where: str) -> None:
    """Refuse scheduler keys that would change the math and that we do not implement, by name: set to
    anything but off, a key such as rescale_betas_zero_snr would give another schedule than ours."""
    unknown = sorted(k for k, v in sched_cfg.items()
                     if k not in SCHEDULER_KEYS_USED | SCHEDULER_KEYS_INERT and v not in (None, False, 0, "", [], {}))
    if unknown:
        raise DiffusersError(f"{where}: scheduler setting(s) {', '.join(f'{k}={sched_cfg[k]!r}' for k in unknown)} "
                             f"would change the noise schedule or the step and repaint does not implement them; "
                             f"use a model trained without them")


def hparams_from_configs(unet_cfg: dict, sched_cfg: dict, where: str) -> dict:
    """Our hyper-parameters (RePaint's conf keys where they exist) from diffusers' two configs."""
    cls = sched_cfg.get("_class_name", "DDPMScheduler")
    check_scheduler_keys(sched_cfg, where)
    if sched_cfg.get("thresholding"):
        raise DiffusersError(f"{where}: the scheduler uses dynamic thresholding, which RePaint's step does not have")
    variance = sched_cfg.get("variance_type") or "fixed_small"
    if variance not in VARIANCE_TYPES:
        raise DiffusersError(f"{where}: variance_type {variance!r} is not supported; use one of {', '.join(VARIANCE_TYPES)}")
    # diffusers' old predict_epsilon: False meant a model that predicts the clean sample
    prediction = sched_cfg.get("prediction_type") or ("sample" if sched_cfg.get("predict_epsilon") is False else "epsilon")
    if prediction not in PREDICTIONS:
        raise DiffusersError(f"{where}: prediction_type {prediction!r} is not supported; use one of "
                             f"{', '.join(PREDICTIONS)}")
    schedule = sched_cfg.get("beta_schedule", "linear")
    if schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"):
        raise DiffusersError(f"{where}: beta_schedule {schedule!r} is not supported ({cls})")
    if sched_cfg.get("trained_betas") is not None:
        raise DiffusersError(f"{where}: explicit trained_betas are not supported")
    size = unet_cfg.get("sample_size")
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise DiffusersError(f"{where}: the UNet is not square ({size[1]}x{size[0]}); repaint needs a square model")
        size = size[0]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DiffusersError(f"{where}: the UNet's config.json gives sample_size {size!r}; repaint needs the model's "
                             f"image size there (an integer, e.g. 256)")
    if unet_cfg.get("in_channels", 3) != 3:
        raise DiffusersError(f"{where}: the UNet takes {unet_cfg.get('in_channels')} channels; repaint needs RGB (3)")
    if unet_cfg.get("num_class_embeds") or unet_cfg.get("class_embed_type"):
        raise DiffusersError(f"{where}: class-conditional diffusers UNets are not supported")
    learned = variance == "learned_range"
    out = unet_cfg.get("out_channels", 3)
    if out != (6 if learned else 3):
        raise DiffusersError(f"{where}: the UNet gives {out} channels but variance_type {variance} needs {6 if learned else 3}")
    return {
        "format": "diffusers", "image_size": int(size), "diffusion_steps": int(sched_cfg.get("num_train_timesteps", 1000)),
        "noise_schedule": schedule, "beta_start": float(sched_cfg.get("beta_start", 0.0001)),
        "beta_end": float(sched_cfg.get("beta_end", 0.02)), "learn_sigma": True,  # the adapter always gives 6 channels
        "variance_type": variance, "prediction_type": prediction,
        "clip_denoised": bool(sched_cfg.get("clip_sample", True)),
        "clip_range": float(sched_cfg.get("clip_sample_range", 1.0)),
    }


# --------------------------------------------------------------------------- the adapter


@dataclass
class AdapterConfig:
    image_size: int


class DiffusersUNet(torch.nn.Module):
    """A diffusers UNet2DModel called as guided-diffusion's UNet: ``model(x, t) -> (B, 6, H, W)``,
    the prediction (eps, x0 or v, which the diffusion's coefficients turn into x0) in the first
    three channels and the learned-range variance value in the last three.

    Fixed variances become constant values that the sampler's interpolation turns into
    exactly the scheduler's: -1 gives the posterior variance (fixed_small), +1 the step's
    beta (fixed_large).
    """

    num_classes = None

    def __init__(self, unet, hparams: dict):
        super().__init__()
        self.unet = unet
        self.cfg = AdapterConfig(hparams["image_size"])
        self.variance_type = hparams["variance_type"]

    def forward(self, x, t, y=None):
        out = self.unet(x, t, return_dict=False)[0]
        if self.variance_type == "learned_range":
            return out
        var = torch.full_like(out, -1.0 if self.variance_type == "fixed_small" else 1.0)
        return torch.cat([out, var], dim=1)


def read_configs(folder: Path) -> tuple[Layout, dict]:
    """The layout of a model folder and our hyper-parameters from its configs; DiffusersError if refused."""
    layout = find_layout(folder)
    if layout is None:
        raise DiffusersError(f"{folder}: not a diffusers model folder (no config.json or unet/config.json)")
    try:
        unet_cfg = json.loads((layout.unet_dir / "config.json").read_text())
        sched_cfg = json.loads(layout.scheduler_config.read_text()) if layout.scheduler_config else dict(DEFAULT_SCHEDULER)
    except (OSError, json.JSONDecodeError) as e:
        raise DiffusersError(f"{folder}: unreadable config ({e})") from None
    if unet_cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise DiffusersError(f"{layout.unet_dir}: a {unet_cfg.get('_class_name')}, not an unconditional UNet2DModel")
    return layout, hparams_from_configs(unet_cfg, sched_cfg, str(folder))


def load_diffusers(name: str, device="cpu", card=None):
    """``LoadedModel`` for a diffusers folder or hub id; raises DiffusersError with one line."""
    from ..core.diffusion import diffusion_from_hparams

    folder = locate(name)
    layout, hp = read_configs(folder)  # every check that needs no weights, before any weights download
    if not any((layout.unet_dir / f).is_file() for f in WEIGHT_FILES):
        folder = download_weights(name, folder)
        layout = find_layout(folder) or layout
    if not any((layout.unet_dir / f).is_file() for f in WEIGHT_FILES):
        raise DiffusersError(f"{layout.unet_dir}: no weights ({' or '.join(WEIGHT_FILES)})")
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise DiffusersError(f"{name}: a diffusers model needs the diffusers package: "
                             f"pip install 'repaint-cli[diffusers]'") from None
    try:
        unet, info = UNet2DModel.from_pretrained(str(layout.unet_dir), output_loading_info=True,
                                                 low_cpu_mem_usage=False)
    except (RuntimeError, ValueError, OSError, TypeError) as e:  # shape mismatches, bad configs, unreadable files
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3] if len(lines) > 1 else lines[:1])[:300]
        raise DiffusersError(f"{layout.unet_dir}: weights do not match the UNet's config or cannot be read ({detail})") from None
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        parts = [f"{len(v)} {k.split('_')[0]}: {', '.join(str(x) for x in list(v)[:3])}" for k, v in problems.items()]
        raise DiffusersError(f"{layout.unet_dir}: weights do not match the UNet's config ({'; '.join(parts)})")
    model = DiffusersUNet(unet, hp)
    model.eval().requires_grad_(False).to(device)
    return LoadedModel(model, diffusion_from_hparams(hp), hp, card, folder)
