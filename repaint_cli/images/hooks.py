"""One prepared image, and the per-batch hooks (frames, concat) that see it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
import numpy as np
from . import fit, image_files
from .jobs import Job
from ..core.sampler import StepInfo


@dataclass
class Prepared:
    job: Job
    image: image_files.LoadedImage
    keep: np.ndarray  # bool (H, W) at the original size
    plan: fit.FitPlan
    rgb_S: np.ndarray
    keep_S: np.ndarray
    mask_label: str
    warnings: list


class BatchHook:
    """Extra work per batch (frames, concat sheets): a step callback and a finish call."""

    side_suffixes: tuple = ()  # files written per image: the output's stem + each suffix (e.g. '_concat.png')
    from_disk: bool = False  # finish() needs only the input, mask and output: it can run for finished images
    option: str = ""  # the command-line option that asks for these files, named in the run's write plan

    def files_for(self, job: Job) -> list[Path]:
        """The files (or folders) this hook writes for one image."""
        return [job.output.with_name(job.output.stem + s) for s in self.side_suffixes]

    def planned_files(self, job: Job) -> list[tuple[Path, str, bool]]:
        """Every path this hook may write for one image, for the run's write plan (files.WritePlan): (path, the
        option asking for it, whether it is a folder). More than :meth:`files_for` where a fallback may write
        another file (an MP4 that becomes a GIF)."""
        return [(p, self.option, False) for p in self.files_for(job)]

    def step_callback(self, batch: list[Prepared]) -> Optional[Callable[[StepInfo], None]]:
        return None

    def finish(self, item: Prepared, sample_S: np.ndarray, output_rgb: np.ndarray, submit) -> None:
        pass
