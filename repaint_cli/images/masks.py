"""Mask generators for RePaint-style inpainting.

Every mask made here is a *keep mask*: ``uint8`` array of shape ``(H, W)``,
255 where the pixel is known (kept) and 0 where it must be generated (hole),
which is RePaint's convention.  :func:`to_convention` turns it into a hole
mask (white = hole) for tools that expect that.

Kinds
-----
``thick``, ``medium``, ``thin``
    Random free-form masks after the recipe of LaMa's evaluation sets
    (random_thick_256 / random_medium_256 / random_thin_256): a stroke mask
    (a few random walks of thick line segments) or, with a smaller
    probability, a few random boxes.  Geometry is given in pixels at
    ``base_size`` (256) and scaled by ``min(H, W) / base_size``.  A draw whose
    hole covers more than ``max_hole`` of the image is thrown away and drawn
    again.
``ex64``, ``genhalf``, ``nn2``, ``ev2li``
    The fixed "extreme" masks of the RePaint paper: keep only the centre
    (64x64 at 256), only the left half, only every second pixel in both
    directions (2x super-resolution) or only every second line.
``box``
    A single random rectangular hole whose sides are a random fraction of the
    image sides.

Determinism
-----------
Mask number ``index`` of a run depends only on (kind, size, seed, index,
parameters): each mask gets its own :class:`numpy.random.Generator` seeded
from ``[seed, index, crc32(kind)]``.  So the first 5 masks of a 400-mask run
equal a 5-mask run, on any machine.  :func:`mask_for_image` seeds from an image's
mask key instead (``core.keys``: one hash of the run seed and the image's name).

Presets
-------
A preset is a YAML mapping with ``kind`` plus that kind's parameters (see the
files in the repository's top-level ``masks/`` folder).  Keys a preset leaves
out take the kind's defaults; unknown keys are an error, so typos do not pass
silently.  The defaults live in this module (``DEFAULT_PARAMS``) and are read
from ``masks/<kind>.yaml`` instead when the package runs from a source
checkout that has that folder.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..choices import CONVENTIONS, CONVENTIONS_HINT, MASK_KINDS, choice_message
from ..resources import bundled_masks_dir

__all__ = [
    "MASK_KINDS",
    "DEFAULT_PARAMS",
    "MaskError",
    "UnknownKindError",
    "load_preset",
    "default_params",
    "generate_mask",
    "mask_for_image",
    "hole_fraction",
    "to_convention",
    "CONVENTIONS",
]

KEEP = 255
HOLE = 0


_LAMA_KINDS = ("thick", "medium", "thin")

# In-code defaults.  tests/images/test_masks.py checks these equal masks/<kind>.yaml.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "thick": {
        "kind": "thick",
        "base_size": 256,
        "max_hole": 0.5,
        "strokes": {
            "weight": 1.0,
            "min_times": 1,
            "max_times": 5,
            "max_width": 100,
            "max_len": 200,
            "max_angle": 4,
        },
        "boxes": {
            "weight": 0.3,
            "margin": 10,
            "bbox_min": 30,
            "bbox_max": 150,
            "min_times": 1,
            "max_times": 3,
        },
    },
    "medium": {
        "kind": "medium",
        "base_size": 256,
        "max_hole": 0.5,
        "strokes": {
            "weight": 1.0,
            "min_times": 4,
            "max_times": 5,
            "max_width": 50,
            "max_len": 100,
            "max_angle": 4,
        },
        "boxes": {
            "weight": 0.3,
            "margin": 0,
            "bbox_min": 10,
            "bbox_max": 50,
            "min_times": 1,
            "max_times": 5,
        },
    },
    "thin": {
        "kind": "thin",
        "base_size": 256,
        "max_hole": 0.5,
        "strokes": {
            "weight": 1.0,
            "min_times": 4,
            "max_times": 50,
            "max_width": 10,
            "max_len": 40,
            "max_angle": 4,
        },
        # LaMa's thin set has no boxes; weight 0 turns them off.  The sizes are
        # only used if a copied preset raises the weight.
        "boxes": {
            "weight": 0.0,
            "margin": 0,
            "bbox_min": 10,
            "bbox_max": 50,
            "min_times": 1,
            "max_times": 5,
        },
    },
    "ex64": {"kind": "ex64", "keep_frac": 0.25},
    "genhalf": {"kind": "genhalf", "keep_frac": 0.5},
    "nn2": {"kind": "nn2", "factor": 2, "offset": 1},
    "ev2li": {"kind": "ev2li", "factor": 2, "offset": 1},
    "box": {"kind": "box", "min_frac": 0.25, "max_frac": 0.5},
}

# Tries before giving up on drawing a mask under max_hole.  At the default
# parameters fewer than 1 draw in 10 is rejected, so this only trips on presets
# whose strokes/boxes are too large to ever fit.
_MAX_TRIES = 200

# Fixed parts of the stroke recipe (pixels at base_size): every segment is at
# least this wide / long, and a stroke has 1.._MAX_SEGMENTS segments.
_MIN_WIDTH = 5
_MIN_LEN = 10
_MAX_SEGMENTS = 5

# Extra word mixed into mask_for_image seeds so they never collide with
# generate_mask's [seed, index, crc] seeds.
_STEM_DOMAIN = zlib.crc32(b"repaint-mask-for-image")


class MaskError(ValueError):
    """Bad mask kind, preset or parameters (message is one line)."""


class UnknownKindError(MaskError):
    """A kind name that is not in MASK_KINDS."""


def unknown_kind_message(kind: object) -> str:
    import difflib

    close = difflib.get_close_matches(str(kind), list(MASK_KINDS), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown mask kind {kind!r}; {hint}valid kinds: {', '.join(MASK_KINDS)}"


# --------------------------------------------------------------------------- #
# Presets and parameters
# --------------------------------------------------------------------------- #


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml  # local import: only needed for presets

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MaskError(f"cannot read preset {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise MaskError(f"preset {str(path)!r} is not valid YAML: {first}") from exc
    if not isinstance(data, dict):
        raise MaskError(f"preset {str(path)!r} must be a YAML mapping with a 'kind' key")
    return data


@functools.lru_cache(maxsize=None)
def _kind_defaults(kind: str) -> dict[str, Any]:
    folder = bundled_masks_dir()  # the repository's masks/, or its copy in a wheel
    if folder is not None:
        path = folder / f"{kind}.yaml"
        if path.is_file():
            data = _read_yaml(path)
            if data.get("kind") != kind:
                raise MaskError(f"{path}: 'kind' must be {kind!r}, got {data.get('kind')!r}")
            # The repo's own file must describe the same kind and be valid.
            return _validate(_merge(DEFAULT_PARAMS[kind], data, where=str(path)), where=str(path))
    return copy.deepcopy(DEFAULT_PARAMS[kind])


def default_params(kind: str) -> dict[str, Any]:
    """A fresh copy of the default parameters of ``kind``."""
    if kind not in MASK_KINDS:
        raise UnknownKindError(unknown_kind_message(kind))
    return copy.deepcopy(_kind_defaults(kind))


def _merge(base: Mapping[str, Any], over: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        name = f"{prefix}{key}"
        if key not in base:
            valid = ", ".join(k for k in base if k != "kind")
            raise MaskError(f"{where}: unknown parameter {name!r}; valid here: {valid}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise MaskError(f"{where}: {name!r} must be a mapping")
            out[key] = _merge(base[key], value, where, prefix=f"{name}.")
        else:
            out[key] = value
    return out


def _num(params: Mapping[str, Any], key: str, where: str, *, integer: bool, lo: float | None = None,
         hi: float | None = None, prefix: str = "") -> None:
    value = params[key]
    name = f"{prefix}{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MaskError(f"{where}: {name!r} must be a number, got {value!r}")
    if integer and not float(value).is_integer():
        raise MaskError(f"{where}: {name!r} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise MaskError(f"{where}: {name!r} must be >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise MaskError(f"{where}: {name!r} must be <= {hi}, got {value!r}")


def _validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    kind = params["kind"]
    if kind in _LAMA_KINDS:
        _num(params, "base_size", where, integer=True, lo=1)
        _num(params, "max_hole", where, integer=False, lo=0.0, hi=1.0)
        if params["max_hole"] <= 0:
            raise MaskError(f"{where}: 'max_hole' must be > 0")
        s, b = params["strokes"], params["boxes"]
        _num(s, "weight", where, integer=False, lo=0, prefix="strokes.")
        _num(b, "weight", where, integer=False, lo=0, prefix="boxes.")
        if s["weight"] + b["weight"] <= 0:
            raise MaskError(f"{where}: strokes.weight + boxes.weight must be > 0")
        for key in ("min_times", "max_times"):
            _num(s, key, where, integer=True, lo=0, prefix="strokes.")
            _num(b, key, where, integer=True, lo=0, prefix="boxes.")
        for key in ("max_width", "max_len", "max_angle"):
            _num(s, key, where, integer=True, lo=1, prefix="strokes.")
        _num(b, "margin", where, integer=True, lo=0, prefix="boxes.")
        _num(b, "bbox_min", where, integer=True, lo=1, prefix="boxes.")
        _num(b, "bbox_max", where, integer=True, lo=1, prefix="boxes.")
        for sec, name in ((s, "strokes"), (b, "boxes")):
            if sec["min_times"] > sec["max_times"]:
                raise MaskError(f"{where}: {name}.min_times must be <= {name}.max_times")
        if b["bbox_min"] > b["bbox_max"]:
            raise MaskError(f"{where}: boxes.bbox_min must be <= boxes.bbox_max")
    elif kind in ("ex64", "genhalf"):
        _num(params, "keep_frac", where, integer=False, lo=0.0, hi=1.0)
    elif kind in ("nn2", "ev2li"):
        _num(params, "factor", where, integer=True, lo=1)
        _num(params, "offset", where, integer=True, lo=0)
        if params["offset"] >= params["factor"]:
            raise MaskError(f"{where}: 'offset' must be < 'factor'")
    elif kind == "box":
        _num(params, "min_frac", where, integer=False, lo=0.0, hi=1.0)
        _num(params, "max_frac", where, integer=False, lo=0.0, hi=1.0)
        if params["min_frac"] > params["max_frac"]:
            raise MaskError(f"{where}: 'min_frac' must be <= 'max_frac'")
    return params


def _resolve(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    kind = params.get("kind")
    if kind is None:
        raise MaskError(f"{where}: missing 'kind' (one of {', '.join(MASK_KINDS)})")
    if kind not in MASK_KINDS:
        raise UnknownKindError(unknown_kind_message(kind))
    return _validate(_merge(_kind_defaults(kind), params, where=where), where=where)


def load_preset(path_or_kind: str | os.PathLike[str]) -> dict[str, Any]:
    """Full parameter dict for a kind name or a YAML preset file.

    A known kind name gives that kind's defaults.  Anything else is read as a
    YAML file holding ``kind`` plus any parameters to change; the rest come
    from the kind's defaults.  Raises :class:`MaskError` (or its subclass
    :class:`UnknownKindError`) with a one-line message on any problem.
    """
    name = os.fspath(path_or_kind)
    if name in MASK_KINDS:
        return default_params(name)
    path = Path(name)
    if not path.is_file():
        looks_like_file = path.suffix.lower() in (".yaml", ".yml") or os.sep in name or "/" in name
        if looks_like_file:
            raise MaskError(f"preset file not found: {name!r}")
        raise UnknownKindError(unknown_kind_message(name))
    return _resolve(_read_yaml(path), where=str(path))


def _params_of(kind_or_params: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(kind_or_params, Mapping):
        return _resolve(kind_or_params, where="mask parameters")
    return load_preset(kind_or_params)


# --------------------------------------------------------------------------- #
# Drawing
# --------------------------------------------------------------------------- #


def _px(value: float, scale: float) -> int:
    return max(1, int(round(value * scale)))


def _draw_strokes(hole: np.ndarray, s: Mapping[str, Any], scale: float, rng: np.random.Generator) -> None:
    """Random walks of thick line segments, painted into ``hole`` (1 = hole).

    Per stroke: a uniform start pixel and 1..5 segments.  Per segment: angle
    0.01 + U{0..max_angle-1} radians; length 10 + U{0..max_len-1}; width
    5 + U{0..max_width-1} (pixels at base_size, scaled).  The end point is
    clipped to the image and is the next segment's start.  On every other
    stroke (the 1st, 3rd, ...) the angles are mirrored to 2*pi - angle, which
    is how LaMa's public generator alternates them (by stroke, not by segment).
    """
    import cv2  # here, not at the top: quick commands that only name the kinds never load OpenCV

    h, w = hole.shape
    times = int(rng.integers(int(s["min_times"]), int(s["max_times"]) + 1))
    for i in range(times):
        x = int(rng.integers(w))
        y = int(rng.integers(h))
        segments = 1 + int(rng.integers(_MAX_SEGMENTS))
        for _ in range(segments):
            angle = 0.01 + int(rng.integers(int(s["max_angle"])))
            if i % 2 == 0:
                angle = 2.0 * math.pi - angle
            length = (_MIN_LEN + int(rng.integers(int(s["max_len"])))) * scale
            width = _px(_MIN_WIDTH + int(rng.integers(int(s["max_width"]))), scale)
            x2 = min(max(int(x + length * math.sin(angle)), 0), w - 1)
            y2 = min(max(int(y + length * math.cos(angle)), 0), h - 1)
            cv2.line(hole, (x, y), (x2, y2), 1, thickness=width)
            x, y = x2, y2


def _draw_boxes(hole: np.ndarray, b: Mapping[str, Any], scale: float, rng: np.random.Generator) -> None:
    """min_times..max_times axis-aligned boxes, sides U{bbox_min..bbox_max}, inside the margin."""
    h, w = hole.shape
    margin = int(round(int(b["margin"]) * scale))
    times = int(rng.integers(int(b["min_times"]), int(b["max_times"]) + 1))
    for _ in range(times):
        bw = int(rng.integers(int(b["bbox_min"]), int(b["bbox_max"]) + 1))
        bh = int(rng.integers(int(b["bbox_min"]), int(b["bbox_max"]) + 1))
        # Keep the box inside the image even when the margin leaves no room.
        mx = min(margin, max(0, (w - 1) // 2))
        my = min(margin, max(0, (h - 1) // 2))
        bw = min(_px(bw, scale), w - 2 * mx)
        bh = min(_px(bh, scale), h - 2 * my)
        x0 = int(rng.integers(mx, w - mx - bw + 1))
        y0 = int(rng.integers(my, h - my - bh + 1))
        hole[y0:y0 + bh, x0:x0 + bw] = 1


def _draw_lama(p: Mapping[str, Any], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    scale = min(h, w) / float(p["base_size"])
    s, b = p["strokes"], p["boxes"]
    p_strokes = float(s["weight"]) / (float(s["weight"]) + float(b["weight"]))
    max_hole = float(p["max_hole"])
    for _ in range(_MAX_TRIES):
        hole = np.zeros((h, w), np.uint8)
        if rng.random() < p_strokes:
            _draw_strokes(hole, s, scale, rng)
        else:
            _draw_boxes(hole, b, scale, rng)
        frac = float(hole.mean())
        if 0.0 < frac <= max_hole:
            return np.where(hole > 0, HOLE, KEEP).astype(np.uint8)
    raise MaskError(
        f"kind {p['kind']!r}: no mask with 0 < hole <= max_hole={max_hole} in {_MAX_TRIES} tries; "
        "make the strokes/boxes smaller or raise max_hole"
    )


def _draw_fixed(p: Mapping[str, Any], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    kind = p["kind"]
    keep = np.zeros((h, w), np.uint8)
    if kind == "ex64":
        kh, kw = int(h * p["keep_frac"]), int(w * p["keep_frac"])
        top, left = (h - kh) // 2, (w - kw) // 2
        keep[top:top + kh, left:left + kw] = KEEP
    elif kind == "genhalf":
        keep[:, : int(w * p["keep_frac"])] = KEEP
    elif kind == "nn2":
        f, o = int(p["factor"]), int(p["offset"])
        keep[o::f, o::f] = KEEP
    elif kind == "ev2li":
        f, o = int(p["factor"]), int(p["offset"])
        keep[o::f, :] = KEEP
    elif kind == "box":
        keep[:] = KEEP
        lo, hi = float(p["min_frac"]), float(p["max_frac"])
        bh = min(h, max(1, int(round(h * rng.uniform(lo, hi)))))
        bw = min(w, max(1, int(round(w * rng.uniform(lo, hi)))))
        y0 = int(rng.integers(0, h - bh + 1))
        x0 = int(rng.integers(0, w - bw + 1))
        keep[y0:y0 + bh, x0:x0 + bw] = HOLE
    else:  # pragma: no cover - guarded by _resolve
        raise UnknownKindError(unknown_kind_message(kind))
    return keep


def _draw(p: Mapping[str, Any], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    if p["kind"] in _LAMA_KINDS:
        return _draw_lama(p, h, w, rng)
    return _draw_fixed(p, h, w, rng)


def _check_size(height: int, width: int) -> tuple[int, int]:
    h, w = int(height), int(width)
    if h < 1 or w < 1:
        raise MaskError(f"mask size must be positive, got {width}x{height} (WxH)")
    return h, w


def _check_seed(seed: int, what: str = "seed") -> int:
    seed = int(seed)
    if seed < 0:
        raise MaskError(f"{what} must be >= 0, got {seed}")
    return seed


def generate_mask(
    kind_or_params: str | os.PathLike[str] | Mapping[str, Any],
    height: int,
    width: int,
    seed: int = 0,
    index: int = 0,
) -> np.ndarray:
    """Keep mask number ``index`` of a run: uint8 (height, width), 255 keep / 0 hole.

    ``kind_or_params`` is a kind name, a preset file path, or a parameter
    dict with ``kind`` (missing keys take the kind's defaults).  The result
    depends only on (kind, height, width, seed, index, parameters).
    """
    p = _params_of(kind_or_params)
    h, w = _check_size(height, width)
    seed = _check_seed(seed)
    index = _check_seed(index, "index")
    rng = np.random.default_rng([seed, index, zlib.crc32(p["kind"].encode("utf-8"))])
    return _draw(p, h, w, rng)


def mask_for_image(
    kind_or_preset: str | os.PathLike[str] | Mapping[str, Any],
    height: int,
    width: int,
    key: tuple[int, int],
) -> np.ndarray:
    """Keep mask for an image whose mask key (``ImageKeys.mask``: from the run seed and the image's name) is ``key``.

    Same image name + same seed + same size -> same mask, whatever order or
    subset of images a run processes.
    """
    p = _params_of(kind_or_preset)
    h, w = _check_size(height, width)
    words = [zlib.crc32(p["kind"].encode("utf-8")), *(int(k) for k in key), _STEM_DOMAIN]
    rng = np.random.default_rng(words)
    return _draw(p, h, w, rng)


def hole_fraction(mask: np.ndarray) -> float:
    """Fraction of pixels that are hole (0) in a keep mask."""
    m = np.asarray(mask)
    if m.size == 0:
        return 0.0
    return float(np.count_nonzero(m < 128)) / m.size


def to_convention(keep_mask: np.ndarray, convention: str = "keep") -> np.ndarray:
    """Return ``keep_mask`` as ``convention``: 'keep' (white = keep, as is) or 'hole' (white = hole)."""
    m = np.asarray(keep_mask)
    binary = np.where(m >= 128, KEEP, HOLE).astype(np.uint8)
    if convention == "keep":
        return binary
    if convention == "hole":
        return (KEEP - binary).astype(np.uint8)
    raise MaskError(choice_message(convention, CONVENTIONS, "convention", CONVENTIONS_HINT))
