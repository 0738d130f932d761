"""Inputs to jobs: files, folders, globs or stdin; masks paired by stem; skips and shards.

Knows nothing of models or tensors. A job is one image with where its mask
comes from, its noise key and its output path.
"""
from __future__ import annotations

import glob as globlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class Job:
    image: Path
    stem: str
    output: Path
    mask_file: Optional[Path] = None  # a mask file on disk
    mask_kind: Optional[str] = None  # or a generated mask: a kind name or a preset path
    error: Optional[str] = None  # a problem found while pairing (reported, job not run)


@dataclass
class JobList:
    jobs: list[Job] = field(default_factory=list)
    skipped_done: list[Job] = field(default_factory=list)  # outputs already present
    ignored: list[str] = field(default_factory=list)  # one-line notes on inputs that are not images
    errors: list[str] = field(default_factory=list)  # one-line problems (the run exits non-zero)


def _has_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def expand_inputs(inputs: Iterable[str], stdin=None, recursive: bool = False) -> tuple[list[Path], list[str], list[str]]:
    """(image paths sorted and unique, ignored notes, errors) from files, folders, globs and '-'."""
    paths, ignored, errors = [], [], []
    for item in inputs:
        if item == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                if line.strip():
                    paths.append(Path(line.strip()))
            continue
        p = Path(item)
        if _has_glob(item) and not p.exists():
            matches = sorted(globlib.glob(item, recursive=True))
            if not matches:
                errors.append(f"{item}: the pattern matches no file; check the glob (quote it so the shell does not expand it)")
            for m in matches:
                mp = Path(m)
                if mp.is_file() and mp.suffix.lower() in IMAGE_EXTS:
                    paths.append(mp)
            continue
        if p.is_dir():
            found = sorted(p.rglob("*") if recursive else p.iterdir())
            images = [f for f in found if f.is_file() and f.suffix.lower() in IMAGE_EXTS and not f.name.startswith(".")]
            others = [f for f in found if f.is_file() and f not in images and not f.name.startswith(".")]
            for f in others:
                ignored.append(f"{f}: not an image file (extension {f.suffix or 'none'}); ignored")
            if not recursive:
                for f in found:
                    if f.is_dir() and f.suffix.lower() in IMAGE_EXTS:
                        ignored.append(f"{f}: a folder, not an image; ignored (-r looks inside folders)")
            if not images:
                errors.append(f"{p}: no images in this folder (looked for {', '.join(sorted(IMAGE_EXTS))})")
            paths += images
        elif p.is_file():
            paths.append(p)
        else:
            errors.append(f"{item}: no such file or folder")
    unique = sorted(set(paths), key=lambda q: str(q))
    return unique, ignored, errors


def index_masks(mask: str) -> Optional[dict[str, Path]]:
    """Mask files by stem for a folder or glob ``--mask``; None for a single file."""
    p = Path(mask)
    if p.is_dir():
        files = [f for f in sorted(p.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
    elif _has_glob(mask) and not p.exists():
        files = [Path(m) for m in sorted(globlib.glob(mask, recursive=True)) if Path(m).is_file()]
    else:
        return None
    return {f.stem: f for f in files}


def mask_for_stem(stem: str, by_stem: dict[str, Path]) -> Optional[Path]:
    """The mask named like the image (``cat.png``), or LaMa/IOPaint-style ``cat_mask*.png``."""
    if stem in by_stem:
        return by_stem[stem]
    for suffix in ("_mask", ".mask", "-mask"):
        hits = sorted(k for k in by_stem if k.startswith(stem + suffix))
        if hits:
            return by_stem[hits[0]]
    return None


def parse_shard(shard: Optional[str]) -> Optional[tuple[int, int]]:
    if not shard:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard {shard}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {shard}: I must be in 0..N-1 (with SLURM arrays starting at 1 use $((ID-1))/N)")
    return i, n


def take_shard(items: list, shard: Optional[tuple[int, int]]) -> list:
    """Round-robin part I of N of a sorted list: disjoint, covering, balanced."""
    if shard is None:
        return items
    i, n = shard
    return items[i::n]


def make_jobs(inputs: Iterable[str], mask: str, out_dir: Path, *, mask_is_kind: bool, overwrite: bool = False,
              shard: Optional[tuple[int, int]] = None, stdin=None, recursive: bool = False,
              out_ext: str = ".png") -> JobList:
    images, ignored, errors = expand_inputs(inputs, stdin=stdin, recursive=recursive)
    result = JobList(ignored=ignored, errors=errors)
    by_stem_images: dict[str, list[Path]] = {}
    for img in images:  # over all inputs, before sharding: twins in two shards would overwrite each other
        by_stem_images.setdefault(img.stem, []).append(img)
    images = take_shard(images, shard)
    masks_by_stem = None if mask_is_kind else index_masks(mask)
    single_mask = None
    if not mask_is_kind and masks_by_stem is None:
        single_mask = Path(mask)
        if not single_mask.is_file():
            result.errors.append(f"{mask}: mask not found; give a mask file, a folder of masks named like the images, "
                                 f"a glob, or a mask kind (see 'repaint masks list')")
            return result
    for img in images:
        stem = img.stem
        job = Job(image=img, stem=stem, output=Path(out_dir) / f"{stem}{out_ext}")
        twins = by_stem_images[stem]
        if len(twins) > 1:
            others = ", ".join(str(t) for t in twins if t != img)
            job.error = f"{img}: another input has the same name stem ({others}) and would write the same output; rename one or run them separately"
        elif mask_is_kind:
            job.mask_kind = mask
        elif single_mask is not None:
            job.mask_file = single_mask
        else:
            job.mask_file = mask_for_stem(stem, masks_by_stem)
            if job.mask_file is None:
                job.error = f"{img}: no mask named {stem}.* (or {stem}_mask*) in {mask}; add one or pass --mask KIND to generate masks"
        if job.error is None and job.output.exists() and not overwrite:
            result.skipped_done.append(job)
            continue
        result.jobs.append(job)
    return result


def check_out_dir(out_dir: Path) -> Optional[str]:
    """A one-line problem with the output folder, or None (creates it when missing)."""
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"{out_dir}: cannot create the output folder ({e.strerror}); choose another --out"
    if not os.access(out_dir, os.W_OK | os.X_OK):
        return f"{out_dir}: output folder is not writable; fix its permissions or choose another --out"
    return None
