"""Every option of ``repaint inpaint`` and ``repaint impute``, declared once: its type, range, choices, and the
rules that tie options together. The CLI checks its values here before PyTorch loads; the Python API's option
classes (``images/options.py``, ``runtime/device.EngineOptions``, ``tables/impute.check_options``) check theirs
here too, so both say the same one line. A test lists every option of the two commands and fails on one that is
not declared here: a new option cannot skip its check.

Standard library only (the CLI answers a bad value before PyTorch, numpy or OpenCV are imported).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from .choices import (ANIMATIONS, CONVENTIONS, CONVENTIONS_HINT, FIT_MODES, GUIDANCE_CALLS, METHODS, PRECISIONS,
                      PRESET_NAMES, TABLE_METHODS, ChoiceError, check_choice)


class OptionError(ValueError):
    """A value an option cannot take, or options that do not go together; the message is one line that names
    the option as the CLI spells it. ``name``: the option's name (the Python API's field where it has one)."""

    def __init__(self, message: str, name: str = ""):
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Option:
    """One option's constraint. ``kind``: int (a whole number), float (a finite number), choice (one of
    ``choices``), bool, text (a free string: a name, a path, a pattern), list (repeatable text).
    ``low``/``high``: the range, both ends allowed. ``optional``: None is allowed (a default settled later).
    ``check``: a format rule beyond the kind (returns the reason a value is refused, or None).
    ``fixed_by_model``: a saved model (``impute --model``) fixes it, so giving it with one is refused.
    ``api``: its name in the Python API where that differs; '' when the API has no such field."""

    flag: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple = ()
    optional: bool = True
    hint: str = ""
    check: Optional[Callable[[object], Optional[str]]] = None
    fixed_by_model: bool = False
    api: Optional[str] = None


def _range_words(o: Option) -> str:
    noun = "a whole number" if o.kind == "int" else "a number"
    if o.low is not None and o.high is not None:
        return f"{noun} from {o.low:g} to {o.high:g}"
    if o.low is not None:
        return f"{noun}, {o.low:g} or more"
    if o.high is not None:
        return f"{noun}, {o.high:g} or less"
    return noun


def _shown(value) -> str:
    return "null" if value is None else str(value)


def check_value(o: Option, value, name: str = ""):
    """``value`` when ``o`` allows it; else OptionError, one line naming ``o.flag``."""
    if value is None:
        if o.optional:
            return value
        raise OptionError(f"{o.flag}: a value is needed", name)
    hint = f" ({o.hint})" if o.hint else ""
    if o.kind in ("int", "float"):
        whole = isinstance(value, int) or (o.kind == "float" and isinstance(value, float))
        if isinstance(value, bool) or not whole or (o.kind == "float" and not math.isfinite(value)):
            raise OptionError(f"{o.flag} {_shown(value)}: must be {_range_words(o)}{hint}", name)
        if (o.low is not None and value < o.low) or (o.high is not None and value > o.high):
            raise OptionError(f"{o.flag} {_shown(value)}: must be {_range_words(o)}{hint}", name)
    elif o.kind == "choice":
        try:
            check_choice(value, o.choices, o.flag, o.hint)
        except ChoiceError as e:
            raise OptionError(str(e), name) from None
    elif o.kind == "bool":
        if not isinstance(value, bool):
            raise OptionError(f"{o.flag} {_shown(value)}: must be true or false", name)
    elif o.kind == "list":
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise OptionError(f"{o.flag} {_shown(value)}: must be a list of texts", name)
    if o.check is not None:
        why = o.check(value)
        if why:
            raise OptionError(f"{o.flag} {_shown(value)}: {why}", name)
    return value


# ----------------------------------------------------------------------------- format rules

def _shard(value) -> Optional[str]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if not m:
        return "expected I/N, e.g. 0/4"
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        return "I must be in 0..N-1 (with SLURM arrays starting at 1 use $((ID-1))/N)"
    return None


def _batch_size(value) -> Optional[str]:
    if value == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        return "expected a whole number or auto"
    if isinstance(value, bool) or isinstance(value, float) or n < 1:
        return "expected a whole number, 1 or more, or auto"
    return None


def _device(value) -> Optional[str]:
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(value)) else "use auto, cpu, cuda, cuda:N or mps"


def _sep(value) -> Optional[str]:
    value = {"tab": "\t", "\\t": "\t"}.get(value, value)
    return None if isinstance(value, str) and len(value) == 1 else "give one character (',', ';', '|') or tab"


def _animate(value) -> Optional[str]:
    """A choice, in any case (--animate GIF)."""
    try:
        check_choice(str(value).lower(), ANIMATIONS, "--animate")
    except ChoiceError as e:
        return str(e).split(": ", 1)[1]  # 'use one of gif, mp4 (did you mean 'gif'?)'
    return None


def _int(flag, low=None, high=None, **kw) -> Option:
    return Option(flag, "int", low=low, high=high, **kw)


def _text(flag, **kw) -> Option:
    return Option(flag, "text", **kw)


def _flag(flag, **kw) -> Option:
    return Option(flag, "bool", **kw)


# ----------------------------------------------------------------------------- the declared tables

# Options both commands share, spelled and bounded alike.
_SCHEDULE = {
    "t_T": _int("--t-T", 1, hint="respaced steps, at most the model's diffusion steps"),
    "jump_length": _int("--jump-length", 1),
    "jump_n_sample": _int("--jump-n-sample", 1, hint="1 = no resampling"),
    "eta": Option("--eta", "float", 0, 1, optional=False, hint="--method ddim only"),
    "guidance": Option("--guidance", "float", 0, hint="0 = no guidance"),
    "seed": _int("--seed", optional=False),
    "threads": _int("--threads", 1),
    "out": _text("--out", api="out_dir"),
    "overwrite": _flag("--overwrite", optional=False),
    "quiet": _flag("--quiet", optional=False, api=""),
}

#: ``repaint inpaint``: every parameter of the command, by its name there.
INPAINT: dict[str, Option] = {
    "inputs": Option("INPUTS", "list", optional=False, api=""),
    "recursive": _flag("--recursive", optional=False),
    "null": _flag("--null", optional=False),
    "shard": _text("--shard", check=_shard),
    "mask": _text("--mask", optional=False),
    "mask_convention": Option("--mask-convention", "choice", choices=CONVENTIONS, hint=CONVENTIONS_HINT,
                              optional=False),
    "allow_empty": _flag("--allow-empty", optional=False),
    "model": _text("--model"),
    "config": _text("--config"),
    "class_label": _text("--class"),
    "classifier": _text("--classifier"),
    "classifier_scale": Option("--classifier-scale", "float", 0, hint="0 = no classifier guidance"),
    "preset": Option("--preset", "choice", choices=PRESET_NAMES),
    "method": Option("--method", "choice", choices=METHODS, optional=False),
    **{k: _SCHEDULE[k] for k in ("eta", "t_T", "jump_length", "jump_n_sample", "seed", "threads", "out",
                                 "overwrite", "quiet")},
    "guidance": Option("--guidance", "float", 0, hint="0 = the paper's algorithm"),
    "guidance_calls": Option("--guidance-calls", "choice", choices=GUIDANCE_CALLS),
    "n_sample": _int("--n-sample", 1),
    "fit": Option("--fit", "choice", choices=FIT_MODES, optional=False),
    "context": Option("--context", "float", 0, optional=False, hint="a fraction of the hole's box"),
    "paste": _flag("--paste", optional=False),
    "save_mask": _flag("--save-mask", optional=False),
    "concat": _flag("--concat", optional=False, api=""),
    "frames": _int("--frames", 0, optional=False, api=""),
    "animate": _text("--animate", check=_animate, api=""),
    "sheet": _flag("--sheet", optional=False, api=""),
    "manifest": _text("--manifest"),
    "json_lines": _flag("--json", optional=False, api=""),
    "batch_size": _text("--batch-size", check=_batch_size, optional=False),
    "device": _text("--device", check=_device, optional=False),
    "precision": Option("--precision", "choice", choices=PRECISIONS, optional=False),
    "cuda_graphs": _flag("--cuda-graphs", optional=False),
    "channels_last": _flag("--channels-last"),
    "compile_model": _flag("--compile", optional=False, api="compile"),
    "fetch": _flag("--fetch", optional=False, api=""),
}

#: ``repaint impute``: every parameter of the command, by its name there.
IMPUTE: dict[str, Option] = {
    "table": _text("TABLE", optional=False, api=""),
    "na_values": Option("--na-values", "list", optional=False, api=""),
    "sep": _text("--sep", check=_sep, api=""),
    "categorical": Option("--categorical", "list", optional=False),
    "target": _text("--target", api=""),
    "predict": _text("--predict", api=""),
    "model": _text("--model", api=""),
    "save_model": _text("--save-model", api=""),
    "train_steps": _int("--train-steps", 1, fixed_by_model=True),
    "members": _int("--members", 1, fixed_by_model=True),
    "gaussian_base": _flag("--gaussian-base", fixed_by_model=True),
    "rounds": _int("--rounds", 1, fixed_by_model=True, hint="RePaint methods: EM rounds"),
    "fit_sample": _int("--fit-sample", 1, fixed_by_model=True, hint="rows to train on"),
    "width": _int("--width", 1, fixed_by_model=True),
    "blocks": _int("--blocks", 1, fixed_by_model=True),
    "samples": _int("--samples", 1, optional=False),
    "samples_k": _int("-k", 1, api=""),
    "combine": Option("--combine", "choice", choices=("mean", "median"), optional=False),
    "preset": Option("--preset", "choice", choices=PRESET_NAMES),
    "method": Option("--method", "choice", choices=TABLE_METHODS),
    **{k: _SCHEDULE[k] for k in ("t_T", "jump_length", "jump_n_sample", "eta", "guidance", "seed", "threads",
                                 "overwrite", "quiet")},
    "out": _text("--out", api=""),
    "draws": _text("--draws", api=""),
    "json_out": _flag("--json", optional=False, api=""),
}

COMMANDS = {"inpaint": INPAINT, "impute": IMPUTE}


def api_name(name: str, o: Option) -> str:
    return name if o.api is None else o.api


def check_values(table: Mapping[str, Option], values: Mapping[str, object]) -> None:
    """Every value of ``values`` (by CLI name) that ``table`` declares, checked; OptionError on the first bad one."""
    for name, o in table.items():
        if name in values:
            check_value(o, values[name], name)


def check_fields(table: Mapping[str, Option], obj) -> None:
    """The fields of an options dataclass ``obj`` (by their Python API name), checked against ``table``."""
    fields = getattr(obj, "__dataclass_fields__", {})
    for name, o in table.items():
        field = api_name(name, o)
        if field and field in fields:
            check_value(o, getattr(obj, field), field)


# ----------------------------------------------------------------------------- rules between options

def check_eta(eta, method: Optional[str]) -> None:
    """--eta only with --method ddim (both commands)."""
    if eta and method not in (None, "ddim"):
        raise OptionError(f"--eta {eta}: applies to --method ddim only (not {method})", "eta")


def fixed_by_model(table: Mapping[str, Option], given: Mapping[str, object], model) -> None:
    """A saved model fixes these options: giving one with ``--model`` would be ignored, so it is refused by name."""
    taken = [o.flag for name, o in table.items() if o.fixed_by_model and given.get(name) is not None]
    if taken:
        raise OptionError(f"{taken[0]}: the saved model {model} fixes it (its size, members and training); "
                          f"leave {', '.join(taken)} out with --model, or train a new model without --model",
                          taken[0])


def check_t_T_within(t_T: int, diffusion_steps: int, model: str) -> None:
    """The respaced steps cannot exceed the model's diffusion steps (both commands; ``model``: its name)."""
    if t_T > diffusion_steps:
        raise OptionError(f"--t-T {t_T}: more than the {diffusion_steps} diffusion steps of {model}; "
                          f"give --t-T {diffusion_steps} or fewer", "t_T")


def whole_number(value, where: str) -> int:
    """A whole number read from a file (a conf's schedule values): refused, never truncated (50.9 is no step
    count) nor read as null."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise OptionError(f"{where}: {_shown(value)}: must be a whole number")
    return int(value)
