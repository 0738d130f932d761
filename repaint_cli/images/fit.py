"""Fitting an image and its keep mask to the model's square resolution S, and back.

numpy and OpenCV only; nothing about files (but :class:`InputError` for an image that
``--fit pad`` cannot take) or diffusion.

Fitting to the model resolution S (see :func:`plan_fit`)
  * Resampling never touches a known pixel of the final output: ``unfit`` returns
    ``where(keep_orig, rgb_orig, resampled_sample)``.
  * Padding is reflection (``numpy.pad(mode='reflect')``) of both the image and the keep
    mask: a padded pixel is known iff the pixel it mirrors is known.  Padding is thus
    treated as context, but the content under a hole (often the object to remove) is
    never mirrored into "known" padding.
  * Hole mapping is conservative: an S-resolution pixel is a hole if any hole pixel of
    the original contributes to it under the resampling kernel (INTER_AREA footprint
    when shrinking, a 2-pixel cubic support when enlarging).  When shrinking the hole is
    then dilated by one more pixel at S, so the way back (cubic) mostly reads generated
    pixels.  Therefore every original hole pixel maps to a hole at S (a 1-pixel hole in
    a 1000x700 image survives), and no known pixel at S carries hole content.
  * crop (default): if the image fits in SxS it is padded (like ``pad``).  Otherwise a
    window of side ``max(ceil(max(box_h, box_w) * (1 + 2*context)), S)`` centred on the
    hole's bounding box, clipped to the image per axis (so it may be a rectangle), is
    reflect-padded to a square and shrunk to S.  The window never is smaller than S
    where the image allows, so crops are never enlarged (model sees native-scale
    pixels), and it always contains the whole hole box; when the window covers the whole
    image this is the same as ``resize``.
  * resize: the whole image is letterboxed to a square (reflect padding, see above) and
    resized to S (INTER_AREA when shrinking, INTER_CUBIC when enlarging); aspect ratio is
    kept.  Small images are enlarged (useful for models trained on full-frame content).
  * pad: images at most SxS are reflect-padded to SxS with no resampling at all; larger
    images raise InputError suggesting ``--fit crop`` or ``--fit resize``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..choices import FIT_MODES, check_choice
from ..files import InputError, display_path

__all__ = ["FIT_MODES", "FitPlan", "plan_fit", "apply_fit", "unfit", "as_keep"]


def as_keep(keep_mask) -> np.ndarray:
    """A keep mask as bool (H, W); uint8 masks count > 127 as keep."""
    k = np.asarray(keep_mask)
    if k.ndim != 2:
        raise ValueError(f"keep mask must be 2-D (H, W), got shape {k.shape}")
    return k if k.dtype == bool else k > 127 if k.dtype == np.uint8 else k.astype(bool)


@dataclass(frozen=True)
class FitPlan:
    """How one image maps to the model's SxS input and back.

    The image region ``[y0:y1, x0:x1]`` is reflect-padded by ``pad`` (top, bottom, left,
    right) to a ``padded`` x ``padded`` square, which is resized to S x S (identity when
    ``padded == S``).

    mode:      the mode actually used ('crop', 'resize' or 'pad'); ``requested`` is the
               one asked for (crop becomes pad for images that fit in SxS).
    image_size (H, W) of the original.
    region:    (y0, y1, x0, x1) in the original; contains every hole pixel.
    note:      a one-line explanation when the plan differs from the request, else None.
    """

    mode: str
    requested: str
    S: int
    image_size: tuple[int, int]
    region: tuple[int, int, int, int]
    pad: tuple[int, int, int, int]
    padded: int
    context: float
    note: str | None = None

    @property
    def scale(self) -> float:
        """S / padded: < 1 shrinks, > 1 enlarges, 1 is pixel-exact."""
        return self.S / self.padded


def _hole_bbox(hole: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(hole.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(hole.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _window(b0: int, b1: int, length: int, limit: int) -> tuple[int, int]:
    """A window of ``length`` (<= limit) containing [b0, b1), centred on it, inside [0, limit)."""
    start = b0 - (length - (b1 - b0)) // 2
    start = min(max(start, 0), limit - length)
    return start, start + length


def _square_pad(h: int, w: int, side: int) -> tuple[int, int, int, int]:
    dh, dw = side - h, side - w
    return dh // 2, dh - dh // 2, dw // 2, dw - dw // 2


def plan_fit(keep_mask, S: int, mode: str = "crop", context: float = 0.5, *, path=None) -> FitPlan:
    """Plan how to fit an image with this keep mask into S x S (see the module notes).

    ``path`` only names the file in InputError messages (pad mode on a large image).
    """
    check_choice(mode, FIT_MODES, "fit mode")
    S = int(S)
    if S < 1:
        raise ValueError(f"S must be positive, got {S}")
    if not (context >= 0 and math.isfinite(context)):
        raise ValueError(f"context must be a finite number >= 0, got {context}")
    keep = as_keep(keep_mask)
    H, W = keep.shape
    if H < 1 or W < 1:
        raise ValueError("empty mask")
    whole = (0, H, 0, W)
    fits = H <= S and W <= S
    name = display_path(path) if path is not None else "image"

    if mode == "pad" or (mode == "crop" and fits):
        if not fits:
            raise InputError(
                f"{name}: image is {W}x{H} but --fit pad needs at most {S}x{S}; use --fit crop or --fit resize",
                path,
            )
        note = None if mode == "pad" else f"image is at most {S}x{S}: padded instead of cropped"
        return FitPlan("pad", mode, S, (H, W), whole, _square_pad(H, W, S), S, context, note)

    if mode == "resize":
        side = max(H, W)
        return FitPlan("resize", mode, S, (H, W), whole, _square_pad(H, W, side), side, context)

    # crop
    box = _hole_bbox(~keep)
    if box is None:  # nothing to inpaint: centre window (check_mask normally stops this)
        box = (H // 2, H // 2 + 1, W // 2, W // 2 + 1)
    by0, by1, bx0, bx1 = box
    side = max(math.ceil(max(by1 - by0, bx1 - bx0) * (1 + 2 * context)), S)
    rh, rw = min(side, H), min(side, W)
    y0, y1 = _window(by0, by1, rh, H)
    x0, x1 = _window(bx0, bx1, rw, W)
    padded = max(rh, rw)  # >= S because the image does not fit in S x S
    note = None
    if (rh, rw) == (H, W):
        note = "the crop window covers the whole image (same as --fit resize)"
    return FitPlan("crop", mode, S, (H, W), (y0, y1, x0, x1), _square_pad(rh, rw, padded), padded, context, note)


def _pad_reflect(a: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    t, b, l, r = pad
    if not any(pad):
        return a
    widths = ((t, b), (l, r)) + ((0, 0),) * (a.ndim - 2)
    return np.pad(a, widths, mode="reflect")


def _hole_at_S(hole_p: np.ndarray, S: int) -> np.ndarray:
    """Conservative hole mask at S for a square hole mask at its padded size."""
    P = hole_p.shape[0]
    if P == S:
        return hole_p.copy()
    if P > S:  # shrinking with INTER_AREA: any overlap -> hole, then one more pixel
        frac = cv2.resize(hole_p.astype(np.float32), (S, S), interpolation=cv2.INTER_AREA)
        hole = frac > 0
        return cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    # enlarging with INTER_CUBIC (support: 2 source pixels each side)
    grown = cv2.dilate(hole_p.astype(np.uint8), np.ones((5, 5), np.uint8))
    return cv2.resize(grown.astype(np.float32), (S, S), interpolation=cv2.INTER_LINEAR) > 0


def _check_image(plan: FitPlan, rgb, keep_mask) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    keep = as_keep(keep_mask)
    if rgb.shape[:2] != tuple(plan.image_size) or keep.shape != tuple(plan.image_size):
        raise ValueError(f"plan is for {plan.image_size}, got image {rgb.shape[:2]} and mask {keep.shape}")
    return rgb, keep


def apply_fit(plan: FitPlan, rgb, keep_mask) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rgb_S uint8 (S, S, 3), keep_S bool (S, S))`` for the model."""
    rgb, keep = _check_image(plan, rgb, keep_mask)
    y0, y1, x0, x1 = plan.region
    S, P = plan.S, plan.padded
    rgb_p = _pad_reflect(rgb[y0:y1, x0:x1], plan.pad)
    hole_p = _pad_reflect(~keep[y0:y1, x0:x1], plan.pad)
    if P == S:
        rgb_S = np.ascontiguousarray(rgb_p)
    else:
        interp = cv2.INTER_AREA if P > S else cv2.INTER_CUBIC
        rgb_S = cv2.resize(np.ascontiguousarray(rgb_p), (S, S), interpolation=interp)
    keep_S = ~_hole_at_S(hole_p, S)
    return rgb_S, keep_S


def unfit(plan: FitPlan, sample_S, rgb_orig, keep_orig, paste: bool = True) -> np.ndarray:
    """Map the model's S x S output back: ``where(keep_orig, rgb_orig, resampled_sample)``.

    The result has the original size; every known pixel is byte-identical to ``rgb_orig``.
    ``paste=False`` keeps the raw sample over the whole fitted region instead (the paper's
    code never pastes the known pixels back); pixels outside the region stay original.
    """
    rgb, keep = _check_image(plan, rgb_orig, keep_orig)
    sample = np.asarray(sample_S)
    S, P = plan.S, plan.padded
    if sample.dtype != np.uint8 or sample.shape != (S, S, 3):
        raise ValueError(f"sample must be uint8 ({S}, {S}, 3), got {sample.dtype} {sample.shape}")
    if P != S:
        interp = cv2.INTER_CUBIC if P > S else cv2.INTER_AREA
        sample = cv2.resize(np.ascontiguousarray(sample), (P, P), interpolation=interp)
    t, _, l, _ = plan.pad
    y0, y1, x0, x1 = plan.region
    back = sample[t : t + (y1 - y0), l : l + (x1 - x0)]
    full = rgb.copy()
    if not paste:
        full[y0:y1, x0:x1] = back
        return full
    region_hole = ~keep[y0:y1, x0:x1]
    if np.count_nonzero(region_hole) != np.count_nonzero(~keep):
        raise ValueError("keep_orig has holes outside the plan's region; plan with the same mask")
    full[y0:y1, x0:x1][region_hole] = back[region_hole]
    return np.where(keep[..., None], rgb, full)
