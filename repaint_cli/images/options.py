"""What a run of ``repaint inpaint`` is asked to do, and what it reports: options, results, the reporter."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional
from ..runtime.device import EngineOptions


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
