"""RePaint conf files and loading checkpoints safely (model cards: ``cards.py``).

Checkpoints load strictly and without running
code from inside them (``torch.load(weights_only=True)`` or safetensors).
"""
from __future__ import annotations

import difflib
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch
import yaml

from .cards import DEFAULT_MODEL, ModelCard, find_card, list_cards  # noqa: F401 (re-exported)
from ..core.diffusion import Diffusion, diffusion_from_hparams
from ..core.schedule import JumpParams
from .loaded import MODEL_FILE_SUFFIXES, LoadedModel, ModelError
from .unet import ClassifierConfig, EncoderUNetModel, UNetConfig, UNetModel


# Every top-level key that RePaint's own conf files (its 19 confs/*.yml) and code read: all are
# accepted in a --config, those that mean nothing here (data, name, show_progress...) ignored.
REPAINT_CONF_KEYS = frozenset("""
    attention_resolutions channel_mult class_cond classifier_attention_resolutions classifier_depth
    classifier_path classifier_pool classifier_resblock_updown classifier_scale classifier_use_fp16
    classifier_use_scale_shift_norm classifier_width clip_denoised cond_y data debug device diffusion_steps
    dropout eval_imswrite image_size inpa_inj_sched_prev inpa_inj_sched_prev_cumnoise inpa_inj_time_shift
    latex_name learn_sigma lr_kernel_n_std method_name model_path n_jobs name noise_schedule num_channels
    num_head_channels num_heads num_heads_upsample num_res_blocks num_samples predict_xstart
    print_estimated_vars resblock_updown rescale_learned_sigmas rescale_timesteps respace_interpolate
    schedule_jump_params show_progress timestep_respacing use_checkpoint use_ddim use_fp16 use_kl
    use_new_attention_order use_scale_shift_norm use_value_logger
""".split())
# Ours: UNetConfig / ClassifierConfig fields that RePaint's confs leave at guided-diffusion's defaults.
OWN_CONF_KEYS = frozenset({"in_channels", "num_classes", "classifier_channel_mult"})
CONF_KEYS = REPAINT_CONF_KEYS | OWN_CONF_KEYS
# What a diffusers model defines itself (its config.json and scheduler_config.json): in a --config
# for one they would be ignored, so they are refused; its sampling keys (schedule_jump_params,
# timestep_respacing) apply as for any model.
DIFFUSERS_OWN_CONF_KEYS = (frozenset(UNetConfig.__dataclass_fields__) & CONF_KEYS) - {"dropout", "use_checkpoint"} | frozenset(
    {"model_path", "diffusion_steps", "noise_schedule", "learn_sigma", "predict_xstart", "rescale_timesteps",
     "rescale_learned_sigmas", "use_kl", "clip_denoised", "class_cond", "use_fp16"})


def check_conf_keys(conf: dict, where) -> None:
    """Refuse a conf key that RePaint's code never reads: most likely a typo that would be silently ignored."""
    jump = conf.get("schedule_jump_params")
    for keys, known, prefix in ((conf, CONF_KEYS, ""),
                                (jump if isinstance(jump, dict) else {}, JumpParams.__dataclass_fields__,
                                 "schedule_jump_params.")):
        for key in keys:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
                hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
                raise ModelError(f"{where}: unknown key '{prefix}{key}'; {hint}(RePaint's conf keys are accepted; "
                                 f"a misspelled key would be ignored silently)")
    if jump is not None and not isinstance(jump, dict):
        raise ModelError(f"{where}: schedule_jump_params must be a mapping of its keys (t_T, jump_length, ...)")
    try:  # values too: t_T: null would fail after the model loads, t_T: 50.9 would be truncated
        JumpParams.from_dict(jump or {})
    except ValueError as e:
        raise ModelError(f"{where}: schedule_jump_params.{e}") from None


def read_conf(path_or_dict, check_keys: bool = False) -> dict:
    """A RePaint conf (YAML path or dict) as a plain dict; ``check_keys`` refuses unknown top-level keys."""
    if path_or_dict is None:
        return {}
    if isinstance(path_or_dict, dict):
        d = dict(path_or_dict)
        if check_keys:
            check_conf_keys(d, "config")
        return d
    path = Path(path_or_dict)
    if not path.is_file():
        raise ModelError(f"{path}: config file not found")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ModelError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise ModelError(f"{path}: expected a mapping of RePaint conf keys")
    if check_keys:
        check_conf_keys(d, path)
    return d


def check_supported(hp: dict, where: str) -> None:
    """Options of guided-diffusion that none of the RePaint checkpoints use and we do not implement."""
    for key in ("predict_xstart", "use_kl", "rescale_timesteps"):
        if hp.get(key):
            raise ModelError(f"{where}: {key}: true is not supported (RePaint's checkpoints use false)")


def read_state_dict(path: Path) -> dict:
    """Tensors of a checkpoint, never running code from it."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()[0] if str(e) else "unsupported content"
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ModelError(f"{path}: refused: the file holds Python objects beyond tensors, which could run "
                             f"code when loaded; convert it to a plain state dict or safetensors") from None
        raise ModelError(f"{path}: not a PyTorch checkpoint ({msg})") from None
    except Exception:  # torch.load raises many types on foreign files: all mean "not a checkpoint"
        raise ModelError(f"{path}: not a PyTorch checkpoint (.pt/.pth) or safetensors file; check the path") from None
    for wrapper in ("ema", "model", "state_dict"):  # training states of our own and common wrappers
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    return obj


def load_strict(module: torch.nn.Module, state: dict, path) -> None:
    """``load_state_dict(strict=True)`` with a message that names the keys that differ."""
    check_state_matches(module, state, path)
    module.load_state_dict(state, strict=True)


def check_state_matches(module: torch.nn.Module, state: dict, path) -> None:
    """ModelError naming the keys that differ, unless ``state`` has exactly ``module``'s keys and shapes
    (``module`` may live on the meta device: nothing is loaded)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
        raise ModelError(f"{path}: checkpoint does not match the architecture ({'; '.join(parts)}); "
                         f"check the model hyper-parameters (--config or the model card)")


def resolve(checkpoint, hparams=None) -> tuple[Path, dict, Optional[ModelCard]]:
    """(checkpoint path, merged hyper-parameters, card) from a registry name or a path."""
    conf = read_conf(hparams)
    if checkpoint is None:
        checkpoint = conf.get("model_path") or DEFAULT_MODEL
    checkpoint = str(checkpoint)
    card = find_card(checkpoint)
    if card is not None:
        path = card.find_file()
        if path is None:
            raise ModelError(card.missing_message())
        return path, {**card.hparams, **conf}, card
    path = Path(checkpoint)
    card = next((c for c in list_cards() if c.file == path.name), None)
    if not path.exists():
        # a RePaint conf's model_path (./data/pretrained/celeba256_250000.pt) names a file we know by name
        found = card.find_file() if card else None
        if found is None:
            raise ModelError(card.missing_message() if card else _not_found_message(checkpoint))
        path = found
    sidecar = path.with_suffix(".yaml")
    base = card.hparams if card else (read_conf(sidecar) if sidecar.is_file() else None)
    if base is None and not conf:
        raise ModelError(f"{path}: no model hyper-parameters known for this file; "
                         f"pass --config with RePaint's conf YAML (or put {sidecar.name} beside it)")
    return path, {**(base or {}), **conf}, card


def _not_found_message(checkpoint: str) -> str:
    """A --model that is neither a card nor a file: a path names the missing file; a bare name is a model name,
    with the closest known one (``celba256``: did you mean 'celeba256'?)."""
    names = [c.name for c in list_cards()]
    known = ", ".join(names) or "none"
    if "/" in checkpoint or "\\" in checkpoint or Path(checkpoint).suffix.lower() in MODEL_FILE_SUFFIXES:
        return f"{checkpoint}: no such file; give a checkpoint file, or a known model ({known})"
    close = difflib.get_close_matches(checkpoint, names, n=1, cutoff=0.6)
    guess = f" (did you mean '{close[0]}'?)" if close else ""
    return (f"{checkpoint}: no known model of this name{guess}; known: {known} ('repaint models list'), or give a "
            f"checkpoint file")


def load_model(checkpoint=None, hparams=None, device="cpu") -> tuple[UNetModel, Diffusion]:
    """A diffusion model and its noise schedule, loaded as ``repaint inpaint --model`` loads them.

    Parameters
    ----------
    checkpoint : str or Path, optional
        A registry name (``repaint models list``: ``"emoji32"``, ``"celeba256"``...), a checkpoint file, or
        a model in diffusers' format (a folder or a hub id); None: the conf's ``model_path``, else the
        embedded default model.
    hparams : str, Path or dict, optional
        Hyper-parameters in RePaint conf keys (a conf YAML file or a dict), over those of the model's card
        or sidecar YAML.
    device : str or torch.device, default "cpu"
        Where the weights go. Nothing is downloaded: a registry model must have been fetched
        (``repaint models fetch NAME``).

    Returns
    -------
    model : torch.nn.Module
        The UNet, in eval mode without gradients, called as guided-diffusion's ``model(x, t, y=None)``.
    diffusion : Diffusion
        Its noise schedule, ``timestep_respacing`` applied.

    Raises
    ------
    ModelError
        One line naming the problem: an unknown name, a missing or unreadable file, weights that do not
        fit the hyper-parameters.
    """
    loaded = load(checkpoint, hparams, device)
    return loaded.model, loaded.diffusion


def load(checkpoint=None, hparams=None, device="cpu") -> LoadedModel:
    diffusers_source = _diffusers_source(checkpoint)
    if diffusers_source is not None:
        from .diffusers_unet import load_diffusers

        source, card = diffusers_source
        own = sorted(set(read_conf(hparams)) & DIFFUSERS_OWN_CONF_KEYS)
        if own:
            raise ModelError(f"{source}: a diffusers model takes its hyper-parameters from its own config files; "
                             f"--config's {', '.join(own)} would be ignored: remove them (schedule_jump_params and "
                             f"timestep_respacing apply)")
        return load_diffusers(source, device=device, card=card)
    path, hp, card = resolve(checkpoint, hparams)
    check_supported(hp, str(path))
    cfg = UNetConfig.from_dict({**hp, "use_fp16": False})  # weights load in fp32; use_fp16 applied below
    try:
        model = UNetModel(cfg)
    except (ValueError, AssertionError) as e:
        raise ModelError(f"{path}: bad model hyper-parameters ({e})") from None
    state = read_state_dict(path)
    load_strict(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, path)
    model.eval().requires_grad_(False).to(device)
    if hp.get("use_fp16") and torch.device(device).type == "cuda":
        model.convert_to_fp16()  # guided-diffusion's use_fp16; on the CPU half precision is unusably slow
    diffusion = diffusion_from_hparams(hp, hp.get("timestep_respacing", ""))
    return LoadedModel(model, diffusion, hp, card, path)


def load_for_run(checkpoint=None, conf: Optional[dict] = None, weights: bool = True, classifier=None,
                 classifier_scale: Optional[float] = None) -> LoadedModel:
    """The model a run samples with, on the CPU, with its classifier for a class-conditional model (``classifier``:
    --classifier, else the conf's classifier_path, else the card's; none loads at scale 0).

    Without ``weights`` (a rerun with nothing to sample: it needs the card and the architecture only) no weights
    are read where the card or sidecar tells enough; a diffusers model, or one that does not resolve, is loaded
    all the same (loading it then says why)."""
    conf = conf or {}
    loaded = (None if weights else _without_weights(checkpoint, conf or None)) or load(checkpoint, conf or None, "cpu")
    if loaded.model.num_classes:
        card_clf = (loaded.card.classifier if loaded.card else None) or {}
        loaded.classifier_scale = float(classifier_scale if classifier_scale is not None else
                                        conf.get("classifier_scale", card_clf.get("scale", 1.0)))
        if loaded.weights and loaded.classifier_scale != 0:
            loaded.classifier = _run_classifier(loaded, classifier or conf.get("classifier_path"), conf, card_clf)
    return loaded


def _without_weights(checkpoint, hparams) -> Optional[LoadedModel]:
    try:
        path, hp, card = resolve(checkpoint, hparams)
        cfg = UNetConfig.from_dict({**hp, "use_fp16": False})
    except (ModelError, ValueError, TypeError, KeyError):
        return None
    if path.is_dir():
        return None
    config_only = SimpleNamespace(cfg=cfg, num_classes=cfg.num_classes if cfg.class_cond else None)
    return LoadedModel(config_only, diffusion_from_hparams(hp, hp.get("timestep_respacing", "")), hp, card, path,
                       weights=False)


def _run_classifier(loaded: LoadedModel, path, conf: dict, card_clf: dict) -> Optional[EncoderUNetModel]:
    if not (path or card_clf):
        return None
    hp = {**card_clf.get("hparams", {}), **{k: v for k, v in conf.items() if k.startswith("classifier_")},
          "image_size": loaded.model.cfg.image_size, "num_classes": loaded.model.num_classes}
    if path is None or (not Path(path).exists() and card_clf.get("file") == Path(path).name):
        # the card's classifier, also when a RePaint conf names it by a path of its own layout
        found = loaded.card.find_file(card_clf["file"]) if card_clf else None
        if found is None:
            raise ModelError(loaded.card.missing_message(card_clf["file"]) + "; or pass --classifier-scale 0 to "
                             "run unguided")
        path = found
    return load_classifier(path, hp)


def _diffusers_source(checkpoint) -> Optional[tuple[str, Optional[ModelCard]]]:
    """(folder or hub id, card) when ``checkpoint`` names a model in diffusers' format."""
    if checkpoint is None:
        return None
    name = str(checkpoint)
    card = find_card(name)
    if card is not None:
        if card.format != "diffusers":
            return None
        found = card.find_file()
        return (str(found) if found else card.file), card
    from .diffusers_unet import is_diffusers_model

    return (name, None) if is_diffusers_model(name) else None


def load_classifier(path, hparams=None, device="cpu") -> EncoderUNetModel:
    """guided-diffusion's noisy-image classifier from its ``classifier_*`` conf keys."""
    cfg = ClassifierConfig.from_dict({**read_conf(hparams), "classifier_use_fp16": False})
    clf = EncoderUNetModel(cfg)
    load_strict(clf, {k: v.float() for k, v in read_state_dict(Path(path)).items()}, path)
    return clf.eval().requires_grad_(False).to(device)
