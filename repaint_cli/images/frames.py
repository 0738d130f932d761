"""Intermediate-step frames, animations, concat images and contact sheets.

No diffusion math here: :class:`FrameHook` and :class:`ConcatHook` plug into
``inpaint()`` as :class:`~repaint_cli.images.hooks.BatchHook` s (``InpaintOptions.extras``);
everything that draws takes and returns numpy arrays, so it can be called directly.

Naming
------
* Frames: ``<out>/frames/<stem>/<index>_t<t>_xt.png`` and ``..._x0.png``, where
  ``index`` is the 0-based schedule step (zero-padded to 4 digits) and ``t`` is the
  time of the pictured x_t in the paper's notation, ``t_next + 1`` of the sampler's
  :class:`~repaint_cli.sampler.StepInfo`: ``t_T`` is pure noise, ``0`` the final
  sample. ``_x0`` is the latest predicted x0 (absent before the first prediction).
  Frames are at the model's resolution S (the fitted crop), not the original size.
* Animations: ``<out>/<stem>.gif`` or ``<out>/<stem>.mp4``, one frame per captured
  step: x_t and predicted x0 side by side, the unknown region tinted blue, and a
  time line at the bottom whose marker sits at ``t / t_T`` (it jumps back up at
  each resampling jump).
* Concat: ``<out>/<stem>_concat.png``: input with the hole as a checkerboard | mask
  | output, at the original size, 4 px of white between them.  The mask is drawn in the
  run's ``--mask-convention`` (as ``--save-mask`` writes it): white = keep under ``keep``,
  white = hole under ``hole``, so it looks like the mask the user gave.
* Contact sheet: ``<out>/sheet.png`` by default.

Every file is written atomically (``repaint_cli.files.atomic_path``).
"""
from __future__ import annotations

import functools
import io
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from . import image_files
from ..choices import ANIMATIONS, CONVENTIONS, check_choice
from ..files import atomic_path, write_bytes_atomic
from .hooks import BatchHook, Prepared
from .mp4_probe import first_working

DEFAULT_ANIMATION_FRAMES = 24
TINT_COLOR = (40, 110, 255)  # RGB of the overlay on the unknown region
TINT_STRENGTH = 0.35
SEPARATION = 4  # px of white between panels
_FRAME_RE = re.compile(r"^\d{4,}_t\d+_(xt|x0)\.png$")


# ----------------------------------------------------------------------------- which steps


def frame_indices(total_steps: int, n: int) -> list[int]:
    """``n`` schedule indices spread evenly over ``0 .. total_steps - 1`` (jumps included).

    The first and last steps are always included (the last alone for ``n == 1``);
    ``n >= total_steps`` gives every index, ``n <= 0`` none. Sorted and unique.
    """
    total_steps, n = int(total_steps), int(n)
    if total_steps <= 0 or n <= 0:
        return []
    if n >= total_steps:
        return list(range(total_steps))
    if n == 1:
        return [total_steps - 1]
    last = total_steps - 1
    # round(k * last / (n - 1)) in integers; distinct because the spacing is >= 1
    return [(2 * k * last + (n - 1)) // (2 * (n - 1)) for k in range(n)]


def frame_name(index: int, t: int, kind: str) -> str:
    """``0123_t045_xt.png`` (kind ``xt`` or ``x0``)."""
    return f"{index:04d}_t{max(int(t), 0):03d}_{kind}.png"


# ----------------------------------------------------------------------------- drawing (numpy)


def to_uint8_hwc(x: np.ndarray) -> np.ndarray:
    """(3, S, S) or (S, S, 3) float in [-1, 1] -> (S, S, 3) uint8, rounded (as ``inpaint.to_uint8``)."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[2] != 3:
        a = a.transpose(1, 2, 0)
    return np.clip(np.round((a + 1) * np.float32(127.5)), 0, 255).astype(np.uint8)


def tint_unknown(rgb: np.ndarray, keep: np.ndarray, color=TINT_COLOR, strength: float = TINT_STRENGTH) -> np.ndarray:
    """A translucent ``color`` overlay where ``keep`` is False (the unknown region)."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    hole = ~np.asarray(keep, dtype=bool)
    if hole.any():
        mixed = out[hole].astype(np.float32) * (1 - strength) + np.asarray(color, np.float32) * strength
        out[hole] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return out


def outline_unknown(rgb: np.ndarray, keep: np.ndarray, color=(120, 200, 255)) -> np.ndarray:
    """Draw a 1 px line along the border of the unknown region (in place; returns ``rgb``)."""
    hole = (~np.asarray(keep, bool)).astype(np.uint8)
    if hole.any() and not hole.all():
        contours, _ = cv2.findContours(hole, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        rgb = np.ascontiguousarray(rgb)
        cv2.drawContours(rgb, contours, -1, color, 1)
    return rgb


def upscale_nearest(img: np.ndarray, min_height: int = 256) -> np.ndarray:
    """Enlarge by the smallest whole factor that makes it at least ``min_height`` tall."""
    h = img.shape[0]
    k = max(1, math.ceil(min_height / max(h, 1)))
    if k == 1:
        return np.ascontiguousarray(img)
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def draw_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4, color=(230, 230, 230)) -> None:
    """One line of ``text`` drawn on ``img`` (in place, anti-aliased) with its baseline starting at ``org``."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def timeline_bar(width: int, t: int, t_T: int, index: Optional[int] = None, total: Optional[int] = None,
                 height: int = 28) -> np.ndarray:
    """A (height, width, 3) strip: a label line and a track whose marker sits at ``t / t_T``.

    The track is filled from the left up to the marker, so the bar shrinks as the
    sample is denoised and grows back at each resampling jump.
    """
    bar = np.full((height, width, 3), 24, np.uint8)
    label = f"t {t}/{t_T}" + (f"   step {index + 1}/{total}" if index is not None and total else "")
    draw_text(bar, label, (6, 12), 0.38)
    margin, track_h = 6, 7
    y1 = height - 4
    y0 = y1 - track_h
    x0, x1 = margin, width - margin - 1
    bar[y0:y1, x0:x1 + 1] = (70, 70, 70)
    frac = min(max(t / t_T, 0.0), 1.0) if t_T > 0 else 0.0
    pos = x0 + int(round(frac * (x1 - x0)))
    bar[y0:y1, x0:pos + 1] = (255, 190, 60)
    bar[y0 - 3:y1 + 2, max(pos - 1, 0):pos + 2] = 255
    return bar


def compose_frame(xt: np.ndarray, x0: Optional[np.ndarray], keep: np.ndarray, t: int, t_T: int,
                  index: Optional[int] = None, total: Optional[int] = None, min_height: int = 256) -> np.ndarray:
    """One animation frame: tinted x_t | tinted x0 (grey before the first prediction), scaled
    up with nearest-neighbour to at least ``min_height`` px, time line below. Even sizes."""
    if x0 is None:
        x0 = np.full_like(xt, 128)
    keep = np.asarray(keep, bool)
    panels = [outline_unknown(upscale_nearest(tint_unknown(a, keep), min_height), upscale_nearest(keep, min_height))
              for a in (xt, x0)]
    ph, pw = panels[0].shape[:2]
    gap = SEPARATION
    width = 2 * pw + gap
    width += width % 2
    top = np.full((ph, width, 3), 255, np.uint8)
    top[:, :pw] = panels[0]
    top[:, pw + gap:2 * pw + gap] = panels[1]
    draw_text(top, "x_t", (5, 14), 0.45, (255, 255, 255))
    draw_text(top, "pred x0", (pw + gap + 5, 14), 0.45, (255, 255, 255))
    bar_h = 28 + (ph + 28) % 2
    return np.concatenate([top, timeline_bar(width, t, t_T, index, total, bar_h)], axis=0)


def hole_checkerboard(rgb: np.ndarray, keep: np.ndarray, square: int = 8) -> np.ndarray:
    """The image with its hole (``keep`` False) filled by a grey checkerboard."""
    h, w = keep.shape
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // square + xx // square) % 2 == 0)[..., None], 200, 150).astype(np.uint8)
    return np.where(np.asarray(keep, bool)[..., None], np.asarray(rgb, np.uint8), board)


def concat_image(rgb: np.ndarray, keep: np.ndarray, output: np.ndarray, sep: int = SEPARATION,
                 convention: str = "keep") -> np.ndarray:
    """input with the hole shown | mask in ``convention`` (keep: white = keep; hole: white = hole) |
    output, ``sep`` px white between.

    Width ``3 * W + 2 * sep``, height H (the original size)."""
    check_choice(convention, CONVENTIONS, "mask convention")
    keep = np.asarray(keep, bool)
    h, w = keep.shape
    white = keep if convention == "keep" else ~keep
    mask = np.repeat(np.where(white, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    out = np.full((h, 3 * w + 2 * sep, 3), 255, np.uint8)
    for i, panel in enumerate((hole_checkerboard(rgb, keep), mask, np.asarray(output, np.uint8))):
        out[:, i * (w + sep):i * (w + sep) + w] = panel
    return out


# ----------------------------------------------------------------------------- animation files


def write_gif(path, frames: Sequence[np.ndarray], fps: float = 12) -> None:
    """An endlessly looping GIF (Pillow), written atomically."""
    if not frames:
        raise ValueError("no frames")
    ims = [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], loop=0,
                duration=max(int(round(1000 / fps)), 20), disposal=1)
    write_bytes_atomic(path, buf.getvalue())


class _WriterUnavailable(Exception):
    pass


# H.264 plays everywhere (browsers, phones); MPEG-4 Part 2 is what every OpenCV build can write.
MP4_CODECS = (("avc1", "H.264"), ("mp4v", "MPEG-4 Part 2"))


# The probe (mp4_probe.py) runs in a child process: the encoder
# libraries (FFmpeg, OpenCV) complain about a missing codec on file descriptor 2 directly, and only the child's
# descriptor 2 can be pointed at the null device without hiding other threads' messages of this process.
@functools.lru_cache(maxsize=None)
def mp4_codec() -> Optional[tuple[str, str]]:
    """(fourcc, name) of the best MP4 codec this OpenCV can write, or None. Probed once, in a
    child process whose complaints about a missing codec go to the null device (this process's
    stderr is left alone); where no child can run, here, with OpenCV's own logging silenced."""
    names = dict(MP4_CODECS)
    env = {**os.environ, "OPENCV_LOG_LEVEL": "SILENT", "OPENCV_FFMPEG_LOGLEVEL": "-8"}  # -8: FFmpeg's quiet
    with tempfile.TemporaryDirectory() as d:
        try:
            done = subprocess.run([sys.executable, "-m", "repaint_cli.images.mp4_probe", d, *names], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                  timeout=120, text=True)
        except (OSError, subprocess.SubprocessError):
            return _probe_here(d)
        if done.returncode != 0:
            return _probe_here(d)
    fourcc = done.stdout.strip()
    return (fourcc, names[fourcc]) if fourcc in names else None


def _probe_here(d: str) -> Optional[tuple[str, str]]:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    fourcc = first_working(d, [f for f, _ in MP4_CODECS])
    return (fourcc, dict(MP4_CODECS)[fourcc]) if fourcc else None


def write_mp4(path, frames: Sequence[np.ndarray], fps: float = 12) -> None:
    """An MP4 in the best codec OpenCV has (``mp4_codec``), written atomically; raises
    ``_WriterUnavailable`` if OpenCV cannot write any (nothing is left behind then)."""
    if not frames:
        raise ValueError("no frames")
    codec = mp4_codec()
    if codec is None:
        raise _WriterUnavailable(f"OpenCV cannot write MP4 video (neither H.264 nor MPEG-4) to {path}")
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec[0]), float(fps), (w, h))
        try:
            if not vw.isOpened():
                raise _WriterUnavailable(f"OpenCV cannot write {codec[1]} video to {path}")
            for f in frames:
                vw.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
        finally:
            vw.release()


def write_animation(out_base: Path, frames: Sequence[np.ndarray], kind: str = "gif", fps: float = 12) -> tuple[Path, list[str]]:
    """Write ``<out_base>.gif`` or ``.mp4``; an mp4 that cannot be opened falls back to gif
    with a warning. Returns (path written, warnings)."""
    out_base = Path(out_base)
    warnings: list[str] = []
    if kind == "mp4":
        path = out_base.with_name(out_base.name + ".mp4")
        try:
            write_mp4(path, frames, fps)
            return path, warnings
        except _WriterUnavailable as e:
            warnings.append(f"{e}; wrote a GIF instead")
    path = out_base.with_name(out_base.name + ".gif")
    write_gif(path, frames, fps)
    return path, warnings


# ----------------------------------------------------------------------------- hooks


class _Capture:
    """Host copies of x_t / x0 at the chosen steps of one batch (uint8 (B, 3, S, S) each)."""

    def __init__(self, batch: list[Prepared], n_frames: int):
        self.batch = batch
        self.pos = {id(p): i for i, p in enumerate(batch)}
        self.n_frames = n_frames
        self.chosen: Optional[frozenset] = None
        self.slot_of: dict[int, int] = {}
        self.indices: list[int] = []
        self.total = 0
        self.t_T = 0
        self.meta: list = []  # per slot: (index, t) or None
        self.xt = self.x0 = None  # torch uint8 (n, B, 3, S, S), pinned on CUDA
        self.has_x0: list[bool] = []
        self.event = None  # CUDA event after the last copy

    def setup(self, info) -> frozenset:
        self.total = info.total
        self.t_T = info.t + 1  # the schedule starts at its highest time, t_T - 1
        self.indices = frame_indices(info.total, self.n_frames)
        self.slot_of = {idx: k for k, idx in enumerate(self.indices)}
        self.meta = [None] * len(self.indices)
        self.has_x0 = [False] * len(self.indices)
        self.chosen = frozenset(self.indices)
        return self.chosen

    def capture(self, info) -> None:
        import torch

        x = info.x
        k = self.slot_of[info.index]
        if self.xt is None:
            shape = (len(self.indices),) + tuple(x.shape)
            pin = x.device.type == "cuda"
            self.xt = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
            self.x0 = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
        cuda = x.device.type == "cuda"
        for src, dst in ((x, self.xt), (info.x0, self.x0)):
            if src is None:
                continue
            # the same rounding as inpaint.to_uint8, on the device (4x less to transfer)
            u8 = ((src.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            dst[k].copy_(u8, non_blocking=cuda)
        self.has_x0[k] = info.x0 is not None
        self.meta[k] = (info.index, info.t_next + 1)
        if cuda:
            self.event = torch.cuda.Event()
            self.event.record()

    def resolve(self) -> None:
        if self.event is not None:
            self.event.synchronize()
            self.event = None


class FrameHook(BatchHook):
    """Saves x_t and predicted-x0 frames at ``n_frames`` schedule steps, and optionally an animation.

    The step callback does a set lookup at every step and, at chosen steps only,
    an asynchronous copy to host memory; files are written on the writer thread.
    """

    def __init__(self, out_dir, n_frames: int, animate: Optional[str] = None, fps: float = 12,
                 save_pngs: bool = True):
        if animate is not None:
            check_choice(animate, ANIMATIONS, "animate")
        self.out_dir = Path(out_dir)
        self.n_frames = int(n_frames)
        self.animate = animate
        self.fps = fps
        self.save_pngs = save_pngs  # False: frames only feed the animation (--animate without --frames)
        self._cap: Optional[_Capture] = None
        self.side_suffixes = (f".{animate}",) if animate else ()

    def files_for(self, job) -> list[Path]:
        return ([self.frames_folder(job)] if self.save_pngs else []) + super().files_for(job)

    def frames_folder(self, job) -> Path:
        return self.out_dir / "frames" / job.stem

    def planned_files(self, job) -> list[tuple[Path, str, bool]]:
        planned = [(self.frames_folder(job), "--frames", True)] if self.save_pngs else []
        if self.animate:  # an MP4 that OpenCV cannot write becomes a GIF (write_animation)
            for ext in dict.fromkeys([self.animate, "gif"]):
                planned.append((job.output.with_name(f"{job.output.stem}.{ext}"), "--animate", False))
        return planned

    def step_callback(self, batch: list[Prepared]) -> Optional[Callable]:
        self._cap = None
        if self.n_frames <= 0:
            return None
        cap = self._cap = _Capture(batch, self.n_frames)

        def callback(info) -> None:
            chosen = cap.chosen
            if chosen is None:
                chosen = cap.setup(info)
            if info.index not in chosen:
                return
            cap.capture(info)

        return callback

    def frames_for(self, item: Prepared, sample_S: np.ndarray) -> Optional[list]:
        """[(index, t, xt (S,S,3) uint8, x0 or None)] for one image, or None if the
        frames do not belong to the final sample (batch split or retried)."""
        cap = self._cap
        if cap is None or cap.xt is None or id(item) not in cap.pos:
            return None
        cap.resolve()
        if cap.meta[-1] is None or cap.meta[-1][0] != cap.total - 1:
            return None
        b = cap.pos[id(item)]
        # plain copies, not views: the writer thread must never hold (and so never free) the pinned
        # buffers, since freeing pinned memory is a CUDA call that a graph capture on the main thread forbids
        xt_all = cap.xt[:, b].permute(0, 2, 3, 1).numpy().copy()
        x0_all = cap.x0[:, b].permute(0, 2, 3, 1).numpy().copy()
        if not np.array_equal(xt_all[-1], sample_S):
            return None
        return [(m[0], m[1], xt_all[k], x0_all[k] if cap.has_x0[k] else None)
                for k, m in enumerate(cap.meta) if m is not None]

    def finish(self, item: Prepared, sample_S: np.ndarray, output_rgb: np.ndarray, submit) -> None:
        if self.n_frames <= 0 or self._cap is None:
            return
        frames = self.frames_for(item, sample_S)
        if frames is None:
            msg = (f"{item.job.image}: intermediate frames not written (the batch was split or retried after running "
                   f"out of memory or NaN); rerun it with a smaller --batch-size to get them")
            submit(lambda: [msg])
            return
        submit(write_frames, self.out_dir, item.job.stem, frames, item.keep_S.copy(), self._cap.t_T,
               self._cap.total, self.animate, self.fps, self.save_pngs)


def write_frames(out_dir, stem: str, frames: list, keep_S: np.ndarray, t_T: int, total: int,
                 animate: Optional[str] = None, fps: float = 12, save_pngs: bool = True) -> list[str]:
    """Write the PNG frames of one image (unless ``save_pngs`` is False) and its animation;
    returns warnings.

    ``frames``: [(index, t, xt uint8 (S,S,3), x0 uint8 or None)]. Frames from an
    earlier run in the same folder that this run did not write are removed.
    """
    if save_pngs:
        folder = Path(out_dir) / "frames" / stem
        written = set()
        for index, t, xt, x0 in frames:
            for kind, img in (("xt", xt), ("x0", x0)):
                if img is None:
                    continue
                name = frame_name(index, t, kind)
                image_files.write_image_atomic(folder / name, np.ascontiguousarray(img))
                written.add(name)
        for old in folder.iterdir():
            if _FRAME_RE.match(old.name) and old.name not in written:
                old.unlink(missing_ok=True)
    warnings: list[str] = []
    if animate:
        anim = [compose_frame(xt, x0, keep_S, t, t_T, index, total) for index, t, xt, x0 in frames]
        _, warnings = write_animation(Path(out_dir) / stem, anim, animate, fps)
    return warnings


class ConcatHook(BatchHook):
    """Writes ``<out_dir>/<stem>_concat.png``: input with hole | mask (in ``convention``) | output."""

    side_suffixes = ("_concat.png",)
    from_disk = True  # needs no sample: made for finished images on a rerun too
    option = "--concat"

    def __init__(self, out_dir, convention: str = "keep"):
        check_choice(convention, CONVENTIONS, "--mask-convention")
        self.out_dir, self.convention = Path(out_dir), convention

    def finish(self, item: Prepared, sample_S: np.ndarray, output_rgb: np.ndarray, submit) -> None:
        img = concat_image(item.image.rgb, item.keep, output_rgb, convention=self.convention)
        submit(image_files.write_image_atomic, self.out_dir / f"{item.job.stem}_concat.png", img)


def hooks_from_options(out_dir, frames: Optional[int] = None, animate: Optional[str] = None, concat: bool = False,
                       fps: float = 12, mask_convention: str = "keep") -> list[BatchHook]:
    """Hooks for ``repaint inpaint --frames N --animate gif|mp4 --concat``; ``mask_convention`` is
    the run's (``--concat`` draws the mask in it).

    ``--animate`` without ``--frames`` (or with 0) captures 24 frames. Raises ValueError
    with a one-line message for bad values.
    """
    if animate is not None:
        animate = str(animate).lower()
        check_choice(animate, ANIMATIONS, "--animate")
    if frames is not None and int(frames) < 0:
        raise ValueError(f"--frames {frames}: must be 0 or more")
    if fps <= 0:
        raise ValueError(f"--fps {fps}: must be positive")
    n = int(frames or 0)
    save_pngs = n > 0  # frame PNGs only when --frames asks for them
    if animate and n == 0:
        n = DEFAULT_ANIMATION_FRAMES
    hooks: list[BatchHook] = []
    if n > 0:
        hooks.append(FrameHook(out_dir, n, animate, fps, save_pngs))
    if concat:
        hooks.append(ConcatHook(out_dir, mask_convention))
    return hooks


# ----------------------------------------------------------------------------- contact sheets


