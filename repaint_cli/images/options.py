"""What a run of ``repaint inpaint`` is asked to do, and what it reports: options, results, the reporter."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional
from ..constraints import INPAINT, OptionError, check_eta, check_fields
from ..runtime.device import EngineOptions


class RunError(Exception):
    """A problem that stops the whole run before any image (one line)."""


def _check(part) -> None:
    """Each value of an options part checked once, against the declared table (``constraints.INPAINT``, which the
    CLI checks too, in the same words): RunError, one line naming the option."""
    try:
        check_fields(INPAINT, part)
    except OptionError as e:
        raise RunError(str(e)) from None


@dataclass
class ReadOptions:
    """What to read: the masks and how they are read, which inputs, and how an image meets the model's size."""

    mask: str = "thick"  # a file, a folder or glob of masks (paired by stem), or a mask kind / preset YAML
    mask_convention: str = "keep"  # keep: 255 = known (RePaint); hole: white = hole (LaMa, IOPaint)
    recursive: bool = False
    shard: Optional[str] = None  # "i/n": this process's part of the sorted inputs
    fit: str = "crop"
    context: float = 0.5
    allow_empty: bool = False  # a mask with no hole (or no known pixel) warns instead of failing
    null: bool = False  # paths on stdin ('-') are separated by NUL (find -print0), not by lines

    def __post_init__(self):
        """Each value is checked once, here (RunError, one line): the code that reads the options trusts them."""
        _check(self)
        self.shard_part  # noqa: B018 (parsed once here, so a bad --shard stops the run before anything)

    @property
    def shard_part(self) -> Optional[tuple[int, int]]:
        """--shard as (i, n), or None."""
        from .jobs import parse_shard

        try:
            return parse_shard(self.shard)
        except ValueError as e:
            raise RunError(str(e)) from None


@dataclass
class SampleOptions:
    """How to sample: the model, its schedule, the reverse step, the seed, the reconstruction and class guidance."""

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
    class_label: Optional[str] = None  # class-conditional models: index, ImageNet name, or random (default)
    classifier: Optional[str] = None  # classifier checkpoint (default: the model card's, or conf classifier_path)
    classifier_scale: Optional[float] = None  # default: conf classifier_scale, the card's, else 1.0
    guidance: Optional[float] = None  # reconstruction guidance scale; None: the preset's (schedule.PRESET_GUIDANCE), 0 for paper

    def __post_init__(self):
        """Each value is checked once, here (RunError, one line): the code that reads the options trusts them."""
        _check(self)
        try:
            check_eta(self.eta, self.method)
        except OptionError as e:
            raise RunError(str(e)) from None


@dataclass
class WriteOptions:
    """What to write, and where."""

    out_dir: Path = Path("out")
    paste: bool = True  # known pixels pasted back exactly
    overwrite: bool = False
    save_mask: bool = False
    manifest: Optional[str] = None  # JSON lines file, one record per image (appended)
    sheet: bool = False  # a contact sheet OUT/sheet.png of the run's outputs (planned with the rest; written by the CLI)
    extras: list = field(default_factory=list)  # per-batch hooks (frames, concat): see hooks.BatchHook

    def __post_init__(self):
        _check(self)


_PARTS = {"read": ReadOptions, "sample": SampleOptions, "engine": EngineOptions, "write": WriteOptions}


class InpaintOptions:
    """A run's options in four parts, each handed to the code that uses it: ``read`` (what to read), ``sample``
    (how to sample), ``engine`` (where it runs: device, precision, batch size) and ``write`` (what to write).

    Built from the parts, or from their fields by name (``InpaintOptions(mask="thick", out_dir="filled")``), which
    each go to the one part that has them.
    """

    __slots__ = tuple(_PARTS)

    def __init__(self, read: Optional[ReadOptions] = None, sample: Optional[SampleOptions] = None,
                 engine: Optional[EngineOptions] = None, write: Optional[WriteOptions] = None, **fields):
        given = {"read": read, "sample": sample, "engine": engine, "write": write}
        by_part: dict = {name: {} for name in _PARTS}
        for key, value in fields.items():
            part = next((name for name, cls in _PARTS.items() if key in cls.__dataclass_fields__), None)
            if part is None:
                raise TypeError(f"InpaintOptions: unknown option {key!r}")
            by_part[part][key] = value
        for name, cls in _PARTS.items():
            base = given[name] if given[name] is not None else cls()
            setattr(self, name, replace(base, **by_part[name]) if by_part[name] else base)

    def __repr__(self) -> str:
        return f"InpaintOptions({', '.join(f'{n}={getattr(self, n)!r}' for n in _PARTS)})"


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
    warnings: list = field(default_factory=list)  # every warning the run said (an image's are in its result too)
    outputs: list = field(default_factory=list)  # every image's output over all shards, in input order (--sheet)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted


log = logging.getLogger("repaint_cli")


class Reporter:
    """How a run talks: the CLI renders these with Rich; the default collects lines and passes warnings and errors
    to the ``repaint_cli`` logger (so a Python caller sees them without a reporter of its own)."""

    def __init__(self):
        self.lines: list[str] = []

    def log(self, msg: str, level: str = "info") -> None:
        """level: info (progress talk), warning or error (always shown)."""
        self.lines.append(msg)
        log.log({"warning": logging.WARNING, "error": logging.ERROR}.get(level, logging.INFO), msg)

    def start(self, n_images: int, total_steps: int) -> None:
        pass

    def advance_steps(self, n: int = 1) -> None:
        pass

    def image_done(self, result: ImageResult) -> None:
        pass


class Heard(Reporter):
    """A run's reporter as ``inpaint()`` sees it: everything goes on to ``inner``, and the warnings are kept for the
    summary (``RunSummary.warnings``), whichever reporter the caller gave."""

    def __init__(self, inner: Reporter):
        self.inner, self.warnings = inner, []

    def log(self, msg: str, level: str = "info") -> None:
        if level == "warning":
            self.warnings.append(msg)
        self.inner.log(msg, level)

    def start(self, n_images: int, total_steps: int) -> None:
        self.inner.start(n_images, total_steps)

    def advance_steps(self, n: int = 1) -> None:
        self.inner.advance_steps(n)

    def image_done(self, result: ImageResult) -> None:
        self.inner.image_done(result)


class StopFlag:
    """Set by the first Ctrl-C: the run stops after the current batch."""

    def __init__(self):
        self.requested = False
