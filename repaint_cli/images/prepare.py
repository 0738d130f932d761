"""Reading and fitting images and masks ahead of the device (a worker thread), and the notes on what came out."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional
import numpy as np
from ..files import InputError
from . import fit, image_files
from . import masks
from .jobs import Job
from .hooks import Prepared
from .options import ReadOptions


def prepare(job: Job, read: ReadOptions, S: int) -> Prepared:
    """Read, check and fit one image and its mask; raises InputError."""
    img = image_files.read_image(job.image)
    warnings = list(img.warnings)
    h, w = img.size
    if img.depth_warning:
        warnings.append(img.depth_warning)
    if job.mask_kind is not None:
        label = job.mask_kind
        try:
            keep = masks.mask_for_image(job.mask_kind, h, w, job.keys.mask) > 127
        except masks.MaskError as e:
            raise InputError(f"{job.image}: cannot draw a '{label}' mask for a {w}x{h} image ({e}); "
                                     f"use a mask file or another --mask kind") from None
        if keep.all() or not keep.any():
            what = "no hole" if keep.all() else "no known pixel"
            raise InputError(f"{job.image}: the generated '{label}' mask has {what} at {w}x{h}; "
                                     f"use a mask file or another --mask kind")
    else:
        keep, mask_warnings = image_files.read_mask(job.mask_file, read.mask_convention, size=(h, w))
        warnings += mask_warnings
        label = str(job.mask_file)
        note = None if _one_mask_for_all(read) else inverted_mask_note(keep, job.mask_file, read.mask_convention)
        warnings += [note] if note else []
        warnings += image_files.check_mask(keep, job.mask_file, allow_empty=read.allow_empty)
    plan = fit.plan_fit(keep, S, read.fit, read.context, path=job.image)
    rgb_S, keep_S = fit.apply_fit(plan, img.rgb, keep)
    return Prepared(job, img, keep, plan, rgb_S, keep_S, label, warnings)


# Above this share of hole, a mask file is most likely read in the other convention (a LaMa / IOPaint mask, white =
# hole, read as RePaint's white = keep regenerates almost the whole image): said, never guessed.
LIKELY_INVERTED = 0.9


def inverted_mask_note(keep: np.ndarray, path, convention: str) -> Optional[str]:
    """A warning when a mask file read with ``convention`` leaves more than LIKELY_INVERTED of the image as hole."""
    hole = 1.0 - float(np.count_nonzero(keep)) / max(keep.size, 1)
    if hole <= LIKELY_INVERTED or hole >= 1.0:  # (no known pixel at all: check_mask says so)
        return None
    other, white = ("hole", "white = hole, as LaMa and IOPaint write masks") if convention == "keep" else \
        ("keep", "white = keep, RePaint's")
    return (f"{path}: {hole:.0%} of the image is hole under --mask-convention {convention}: did you mean "
            f"--mask-convention {other} ({white})?")


def _one_mask_for_all(read: ReadOptions) -> bool:
    """One --mask file for every image: its convention note is given once, before the run (setup.resolve_jobs)."""
    from pathlib import Path

    return Path(read.mask).is_file()


def _prepare_or_error(job: Job, read: ReadOptions, S: int) -> tuple[Optional[Prepared], Optional[str]]:
    """prepare() for the prefetch thread: the result, or the one-line error for the main thread to report."""
    if job.error:
        return None, job.error
    try:
        return prepare(job, read, S), None
    except InputError as e:
        return None, str(e)


def prefetched(jobs: list, read: ReadOptions, S: int, ahead: int) -> Iterator[tuple[Job, Optional[Prepared], Optional[str]]]:
    """(job, prepared or None, error or None) in input order, read and fitted up to ``ahead`` images in advance.

    The reading and fitting (decode, masks, crops: NumPy and Pillow, no torch)
    run on a worker thread, so the device is not idle while the main thread
    prepares the next batch; everything else (reporting, the device) stays on
    the main thread.
    """
    pending: deque = deque()
    todo = iter(jobs)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="repaint-prefetch") as pool:

        def submit_next():
            job = next(todo, None)
            if job is not None:
                pending.append((job, pool.submit(_prepare_or_error, job, read, S)))

        for _ in range(max(1, ahead)):
            submit_next()
        try:
            while pending:
                job, future = pending.popleft()
                submit_next()
                yield (job, *future.result())
        finally:
            for _, future in pending:  # stopped early (Ctrl-C, an error): do not read the rest
                future.cancel()


def upscale_warning(item: "Prepared") -> Optional[str]:
    """One line when the region generated at the model's size is enlarged to fit the image."""
    plan = item.plan
    if plan.padded <= plan.S:
        return None
    hole = ~item.keep
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    h, w = (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) if rows.size else item.keep.shape
    return (f"hole region {w}x{h} generated at {plan.S} px, upscaled {plan.padded / plan.S:.1f}x "
            f"(first: {item.job.image}): use a model trained at a larger size")


# How far (Euclidean, RGB 0..255) the mean colour of a fill may be from the known pixels around its hole before
# a run says the model may not suit the images (the default model on a lavender square: about 290; on our
# example emoji, its own domain, at most 97 over the thick, box and thin masks).
FILL_COLOUR_GAP = 100.0


def fill_colour_note(item: Prepared, out_rgb: np.ndarray) -> Optional[str]:
    """A note when an output's fill is far in colour from the hole's border, else None."""
    colours = image_files.fill_and_border_colours(out_rgb, item.keep)
    if colours is None:
        return None
    fill, border = colours
    if float(np.linalg.norm(fill - border)) <= FILL_COLOUR_GAP:
        return None
    show = lambda c: "(" + ",".join(str(int(round(v))) for v in c) + ")"  # noqa: E731
    return f"fill colour {show(fill)} far from the hole border's {show(border)}"
