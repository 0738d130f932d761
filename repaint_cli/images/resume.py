"""Outputs on disk: reruns that keep finished images, the files of an image, and the locks of images being made."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Callable, Optional

try:
    import fcntl
except ImportError:  # Windows: outputs are not locked
    fcntl = None

import numpy as np
from ..files import InputError
from . import image_files
from . import masks
from .jobs import Job
from .provenance import (job_settings, recorded_settings, settings_changes)
from .options import ImageResult, ReadOptions, Reporter, WriteOptions
from .prepare import prepare


def side_suffixes(write: WriteOptions) -> list[str]:
    """The files written beside each output, as suffixes of its stem."""
    return (["_mask.png"] if write.save_mask else []) + [s for h in write.extras for s in h.side_suffixes]


def mask_output(job: Job) -> Path:
    """Where --save-mask writes an image's mask (beside its output)."""
    return job.output.with_name(f"{job.output.stem}_mask.png")


def files_on_disk(job: Job, write: WriteOptions) -> list[str]:
    """The files of one image that this run asks for and that exist: output, mask, concat, animation, frames."""
    paths = [job.output] + ([mask_output(job)] if write.save_mask else []) + [p for h in write.extras
                                                                              for p in h.files_for(job)]
    return [str(p) for p in paths if p.exists()]


def extras_from_disk(job: Job, read: ReadOptions, write: WriteOptions, S: int) -> list[str]:
    """Make the missing --save-mask / --concat files of a finished image from its input, mask and output;
    returns warnings."""
    hooks = [h for h in write.extras if h.from_disk and any(not p.exists() for p in h.files_for(job))]
    need_mask = write.save_mask and not mask_output(job).exists()
    if not hooks and not need_mask:
        return []
    warnings: list[str] = []
    try:
        item = prepare(job, read, S)
        out = image_files.read_image(job.output)
        if out.rgb.shape != item.image.rgb.shape:
            raise InputError(f"{job.output}: another size than its input")
        if need_mask:
            mask_img = masks.to_convention(np.where(item.keep, 255, 0).astype(np.uint8), read.mask_convention)
            image_files.write_image_atomic(mask_output(job), mask_img, None, gray=True)
        for hook in hooks:
            hook.finish(item, None, out.rgb, lambda fn, *a, **k: warnings.extend(fn(*a, **k) or []))
    except (InputError, OSError) as e:
        return [f"{job.image}: --save-mask/--concat not made from the finished output ({e}); --overwrite redoes it"]
    return warnings


def skip_finished(jobs: list[Job], read: ReadOptions, write: WriteOptions, S: int, settings: dict, hashes: dict,
                  reporter: Reporter, record: Callable[[ImageResult], None]) -> None:
    """Outputs that exist (no --overwrite) are kept, never redone silently: say how many were made with other
    settings (and which) or with unknown ones; make the extras asked for that need no sampling from the files
    on disk, and name those that do."""
    if not jobs:
        return
    differ, unknown, not_sampled, seen = 0, 0, 0, []
    for job in jobs:
        remove_stale_lock(job)
        old = recorded_settings(job.output)
        changes = settings_changes(old, job_settings(settings, job, hashes)) if old is not None else []
        if old is None:
            unknown += 1
            warns = ["output exists, with no recorded settings; --overwrite redoes it"]
        elif changes:
            differ += 1
            seen += [c for c in changes if c not in seen]
            warns = [f"output exists, made with other settings ({'; '.join(changes)}); --overwrite redoes it"]
        else:
            warns = ["output exists; --overwrite redoes it"]
        if not changes:  # made as this run would (or unknown): the extras can come from the files on disk
            for w in extras_from_disk(job, read, write, S):
                reporter.log(w, "warning")
                warns.append(w)
        if any(not p.exists() for h in write.extras if not h.from_disk for p in h.files_for(job)):
            not_sampled += 1
        record(ImageResult(str(job.image), str(job.mask_file or job.mask_kind or ""), str(job.output), job.keys.seed,
                           "skipped", warnings=warns, files=files_on_disk(job, write)))
    reporter.log(f"skipping {len(jobs)} image(s) whose outputs exist (--overwrite redoes them)")
    if differ:
        shown = "; ".join(seen[:4]) + ("; ..." if len(seen) > 4 else "")
        extras = ", without the --save-mask/--concat files asked for" if write.save_mask or any(
            h.from_disk for h in write.extras) else ""
        reporter.log(f"{differ} existing output(s) were made with other settings ({shown}): kept as they are{extras}; "
                     f"--overwrite redoes them", "warning")
    if unknown:
        reporter.log(f"{unknown} existing output(s) have no recorded settings (made by an older repaint, or not by "
                     f"repaint): kept as they are; --overwrite redoes them", "warning")
    if not_sampled:
        reporter.log(f"--frames/--animate need the sampling again: not made for {not_sampled} finished image(s); "
                     f"--overwrite redoes them", "warning")


# ----------------------------------------------------------------------------- locks of the outputs being made

class OutputLock:
    """An exclusive lock on one output while a run makes it: ``fcntl.flock`` on a hidden
    ``.<name>.lock`` beside it.  The kernel drops the lock when its process dies, so a
    killed run leaves at most an unlocked file, which the next run takes over."""

    def __init__(self, path: Path | None, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one locks the name in between) and unlock."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def lock_path_of(path) -> Path:
    """The lock file of the output ``path``: hidden beside it."""
    final = Path(path)
    return final.with_name(f".{final.name}.lock")


def lock_output(path) -> OutputLock | None:
    """Lock the output ``path`` for this run; None when another run holds it.  Where no lock
    can be taken (no ``fcntl``, an unwritable folder) the lock is a no-op: the write then
    says what is wrong."""
    if fcntl is None:
        return OutputLock(None, None)
    lock_path = lock_path_of(path)
    for _ in range(10):  # the holder may remove the file between our open and our lock: then again
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return OutputLock(None, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None  # held by another run
            return OutputLock(None, None)  # a file system without locks (ENOLCK...): unlocked, as before
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return OutputLock(lock_path, fd)
        except FileNotFoundError:
            pass
        os.close(fd)  # we locked a file its holder has just removed
    return None


def remove_stale_lock(job: Job) -> None:
    """A finished output's lock file that no run holds (its run was killed after writing, before removing it) is
    taken and so removed; one that a run still holds stays."""
    if not lock_path_of(job.output).exists():
        return
    lock = lock_output(job.output)
    if lock is not None:
        lock.release()


class OutputLocks:
    """The locks this run holds on the outputs it is making (:func:`lock_output`), released once written."""

    def __init__(self):
        self.held: dict = {}

    def take(self, job: Job, overwrite: bool) -> Optional[str]:
        """None when this run may make the output (now locked), else why it is skipped."""
        lock = lock_output(job.output)
        if lock is None:
            return "in progress by another run"
        if not overwrite and job.output.exists():  # the other run finished it since this run listed its jobs
            lock.release()
            return "output exists (made by another run meanwhile)"
        self.held[str(job.output)] = lock
        return None

    def release(self, job: Job) -> None:
        lock = self.held.pop(str(job.output), None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for lock in self.held.values():
            lock.release()
        self.held.clear()
