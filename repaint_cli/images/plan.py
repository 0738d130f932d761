"""What a run of ``repaint inpaint`` writes, listed before the model loads (:class:`~repaint_cli.files.WritePlan`).

Every path: each image's output, its side files (``--save-mask``, ``--concat``, ``--frames`` folder, ``--animate``
file and the GIF an MP4 falls back to), the ``--sheet``, the ``--manifest`` and the run record; over all images
of the run, every shard's included, since shards share ``--out``. The plan refuses two that collide (a side file of
one image on another image's output), one onto an input, mask, model or conf file, one that is not a regular file;
and an ``--out`` that is the folder of an input file (the outputs would lie among the inputs, and a later run over
that folder would read them back as inputs).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..files import WritePlan
from .jobs import JobList
from .options import InpaintOptions
from .provenance import RUN_RECORD
from .resume import mask_output

SHEET_NAME = "sheet.png"  # --sheet's contact sheet, in --out


def inpaint_plan(joblist: JobList, opts: InpaintOptions) -> WritePlan:
    """The run's write plan; :meth:`WritePlan.problems` says what it refuses."""
    write, sample = opts.write, opts.sample
    plan = WritePlan()
    for path, what in joblist.inputs:
        plan.read(path, what)
    for path, what in ((sample.model, "the --model file"), (sample.config, "the --config file"),
                       (sample.classifier, "the --classifier file"), (opts.read.mask, "the --mask preset")):
        if isinstance(path, (str, os.PathLike)) and path and Path(path).is_file():
            plan.read(path, what)
    for job in joblist.all_jobs:
        if job.error is not None:  # twins and images without a mask: nothing is written for them
            continue
        plan.write(job.output, f"the output of {job.image}")
        if write.save_mask:
            plan.write(mask_output(job), f"--save-mask of {job.image}")
        for hook in write.extras:
            for path, option, folder in hook.planned_files(job):
                plan.write(path, f"{option} of {job.image}", folder=folder)
    out = Path(write.out_dir)
    if write.sheet:
        plan.write(out / SHEET_NAME, "--sheet's contact sheet")
    if write.manifest:
        plan.write(write.manifest, "--manifest")
    plan.write(out / RUN_RECORD, f"the run record ({RUN_RECORD})")
    return plan


def out_beside_inputs(joblist: JobList, out_dir) -> str | None:
    """One line when an image's output would lie in the image's own folder (``photos/cat.jpg --out photos``)."""
    for job in joblist.all_jobs:
        if os.path.realpath(job.output.parent) == os.path.realpath(job.image.parent):
            return (f"{job.image}: --out {out_dir} is this input's own folder: its output {job.output.name} would lie "
                    f"among the inputs, and a later run over that folder would take it for an input; choose another "
                    f"--out")
    return None


def plan_problems(joblist: JobList, opts: InpaintOptions) -> tuple[WritePlan, list[str]]:
    """(the plan, its problems and the --out one, one line each)."""
    plan = inpaint_plan(joblist, opts)
    problems = plan.problems()
    beside = out_beside_inputs(joblist, opts.write.out_dir)
    return plan, problems + ([beside] if beside else [])
