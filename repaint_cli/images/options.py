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
    """What to read: the masks and how they are read, which inputs, and how an image meets the model's size.

    Parameters
    ----------
    mask : str, default "thick"
        A mask file, a folder or glob of masks (paired with the images by stem), or a mask kind
        (``repaint masks list``) or preset YAML drawn per image.
    mask_convention : {"keep", "hole"}, default "keep"
        keep: 255 = known, 0 = generate (RePaint's); hole: white = fill (LaMa's, IOPaint's).
    recursive : bool, default False
        Search input folders below their top level too.
    shard : str, optional
        ``"i/n"``: this process's part of the sorted inputs.
    fit : {"crop", "resize", "pad"}, default "crop"
        How an image meets the model's size: a square around the hole, the whole image resized, or small
        images padded.
    context : float, default 0.5
        Context around the hole for ``fit="crop"``, as a fraction of the hole's box.
    allow_empty : bool, default False
        A mask with no hole (or no known pixel) warns instead of failing its image.
    null : bool, default False
        Paths read from stdin (the input ``"-"``) are separated by NUL (``find -print0``), not by lines.

    Raises
    ------
    RunError
        A value out of its range (one line naming the option).
    """

    mask: str = "thick"
    mask_convention: str = "keep"
    recursive: bool = False
    shard: Optional[str] = None
    fit: str = "crop"
    context: float = 0.5
    allow_empty: bool = False
    null: bool = False

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
    """How to sample: the model, its schedule, the reverse step, the seed, the reconstruction and class guidance.

    Parameters
    ----------
    model : str, optional
        A registry name, a checkpoint file or a diffusers model (as :func:`load_model` takes); None: the
        embedded default.
    config : str, Path or dict, optional
        A RePaint conf (YAML file or dict): the model's hyper-parameters and schedule.
    preset : str, optional
        A sampling preset (``repaint schedule --list``); None: the model card's, else the conf's schedule, else paper.
    method : {"repaint", "ddnm", "ddim"}, default "repaint"
        The reverse step: the paper's, DDNM's or DDIM's (``core.sampler.METHODS``).
    eta : float, default 0.0
        ddim only: 0 deterministic between resamplings, 1 the ancestral variance.
    t_T, jump_length, jump_n_sample : int, optional
        The jump schedule's steps, jump length and resamplings, over the preset's.
    n_sample : int, optional
        The conf's ``n_sample`` (samples per image), over the conf's.
    seed : int, default 0
        The run's seed; an image's noise comes from (seed, its file stem).
    class_label : str, optional
        Class-conditional models: a class index, an ImageNet name, or None for a random class.
    classifier : str, optional
        Classifier checkpoint; None: the model card's, or the conf's ``classifier_path``.
    classifier_scale : float, optional
        None: the conf's ``classifier_scale``, the card's, else 1.0.
    guidance : float, optional
        Reconstruction guidance scale; None: the preset's (``core.schedule.PRESET_GUIDANCE``), 0 for paper.
    guidance_calls : {"all", "last"}, optional
        Which UNet calls take the guidance: all, or only the last call at each time of the schedule (the others
        skip its backward pass); None: the preset's (``core.schedule.PRESET_GUIDANCE_CALLS``), else all.

    Raises
    ------
    RunError
        A value out of its range, or ``eta`` with another method than ddim (one line naming the option).
    """

    model: Optional[str] = None
    config: object = None
    preset: Optional[str] = None
    method: str = "repaint"
    eta: float = 0.0
    t_T: Optional[int] = None
    jump_length: Optional[int] = None
    jump_n_sample: Optional[int] = None
    n_sample: Optional[int] = None
    seed: int = 0
    class_label: Optional[str] = None
    classifier: Optional[str] = None
    classifier_scale: Optional[float] = None
    guidance: Optional[float] = None
    guidance_calls: Optional[str] = None

    def __post_init__(self):
        """Each value is checked once, here (RunError, one line): the code that reads the options trusts them."""
        _check(self)
        try:
            check_eta(self.eta, self.method)
        except OptionError as e:
            raise RunError(str(e)) from None


@dataclass
class WriteOptions:
    """What to write, and where.

    Parameters
    ----------
    out_dir : Path, default Path("out")
        The output folder.
    paste : bool, default True
        Known pixels pasted back exactly.
    overwrite : bool, default False
        Sample again and replace outputs that exist (else a rerun skips them).
    save_mask : bool, default False
        Write the mask used beside each output (``<stem>_mask.png``).
    manifest : str, optional
        A JSON lines file, one record per image, appended.
    sheet : bool, default False
        A contact sheet ``OUT/sheet.png`` of the run's outputs (planned with the rest; written by the CLI).
    extras : list, optional
        Per-batch hooks (frames, concat): see ``hooks.BatchHook``.

    Raises
    ------
    RunError
        A value out of its range (one line naming the option).
    """

    out_dir: Path = Path("out")
    paste: bool = True
    overwrite: bool = False
    save_mask: bool = False
    manifest: Optional[str] = None
    sheet: bool = False
    extras: list = field(default_factory=list)

    def __post_init__(self):
        _check(self)


_PARTS = {"read": ReadOptions, "sample": SampleOptions, "engine": EngineOptions, "write": WriteOptions}


class InpaintOptions:
    """A run's options in four parts, each handed to the code that uses it: ``read`` (what to read), ``sample``
    (how to sample), ``engine`` (where it runs: device, precision, batch size) and ``write`` (what to write).

    Built from the parts, or from their fields by name (``InpaintOptions(mask="thick", out_dir="filled")``), which
    each go to the one part that has them.

    Parameters
    ----------
    read : ReadOptions, optional
        What to read; default ``ReadOptions()``.
    sample : SampleOptions, optional
        How to sample; default ``SampleOptions()``.
    engine : EngineOptions, optional
        Where it runs; default ``EngineOptions()``.
    write : WriteOptions, optional
        What to write; default ``WriteOptions()``.
    **fields
        Any field of the four parts by name, set over the part given (or its default).

    Raises
    ------
    TypeError
        A name that no part has.
    RunError
        A value out of its range (``EngineOptions``' values: ``constraints.OptionError``, a ValueError).
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
    """What :func:`inpaint` did.

    Parameters
    ----------
    done, failed, skipped : int
        Images written, images that failed (each says why in its result), outputs a rerun found done.
    interrupted : bool
        The run was stopped (``StopFlag``) before every image was made.
    seconds : float
        The run's wall time.
    results : list of ImageResult
        One per image: its input, mask, output, seed, status, error and warnings.
    warnings : list of str
        Every warning the run said (an image's are in its result too).
    outputs : list
        Every image's output over all shards, in input order (``--sheet``).
    """

    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    results: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No image failed and the run was not interrupted."""
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
