"""Reading and writing images and masks.

This module knows nothing about diffusion or models: it depends on numpy, Pillow and
OpenCV only.

Conventions
-----------
* Images in memory are ``uint8`` RGB arrays of shape (H, W, 3).  Grayscale inputs are
  expanded to three equal channels; :attr:`LoadedImage.gray` records that they were grey
  so that the writer can store them as single-channel images again.
* Masks in memory are *keep masks* (as in RePaint): ``bool`` (H, W) where True means
  "known pixel, keep it" and False means "hole, generate it".  A ``uint8`` mask with
  255 = keep is accepted wherever a keep mask is taken.
* On disk a mask uses either ``convention='keep'`` (white = keep; RePaint) or
  ``convention='hole'`` (white = hole; LaMa / IOPaint).  The caller always says which.
* Every problem caused by an input file (or an unwritable output folder) raises
  :class:`InputError`, whose message is a single line naming the file and the fix, so a
  batch driver can log it and go on with the next image.

Decisions (documented here once)
--------------------------------
Reading images
  * The whole file is decoded (``img.load()``) before anything else, so truncated files
    fail here, not later.  Multi-frame files (GIF, APNG, TIFF) use their first frame and
    say so in ``LoadedImage.warnings``.
  * EXIF orientation is applied (``ImageOps.exif_transpose``), so arrays are in display
    orientation.  EXIF is not copied to the output (orientation would be wrong, and it
    may hold private data).  The ICC profile is kept in ``LoadedImage.icc_profile`` when
    it still describes the returned pixels; pass it to the writer as ``icc_profile=`` (a
    colour-managed photo must not change colour because it was inpainted).  The DPI is
    kept in ``LoadedImage.dpi``; pass it as ``dpi=``.  Only a resolution the file records
    counts (Pillow's defaults, 1 dpi for a TIFF without one and 72 for a JPEG with EXIF,
    do not); a PNG's pixels per metre are read as the whole dpi they encode when there is
    one (11811 as 300, not 299.9994).  A PNG's text chunks (``LoadedImage.text``) and its
    ``gAMA`` / ``cHRM`` / ``sRGB`` chunks are kept too.  :func:`write_like` writes all of
    it back.
  * Colour modes (RGB, RGBA, P, PA, CMYK, YCbCr, LAB, HSV, RGBX, RGBa) give colour output;
    grey modes (1, L, LA, La, I;16*, I, F and 16-bit grey PNGs) give ``gray=True``.
    Write-back rule: RGB(A) for colour inputs, L(A) for grayscale inputs; 16-bit inputs
    are written as 16-bit PNGs (below).  1-, 2- and 4-bit grey give 8-bit grey (values
    exact: 0/255, times 85, times 17); palettes give RGB(A).
  * Alpha (RGBA, LA, PA, P with transparency, 16-bit grey+alpha and RGBA PNG) is returned
    separately in ``LoadedImage.alpha`` and is put back by the writer; it is never
    fitted or inpainted.  A ``tRNS`` colour key on a grey or RGB PNG (what optipng and
    oxipng write) is read as alpha: 0 where a pixel has the key's value (in the file's own
    bit depth), opaque elsewhere; it is written back as an alpha channel (RGBA / LA), so a
    generated pixel can never turn transparent by matching the key.
  * 16-bit data is scaled with ``round(v / 257)`` for the model; the 16-bit samples are
    kept in ``LoadedImage.deep``.  Pillow truncates 16-bit colour and grey+alpha PNGs to
    their high byte, so every 16-bit PNG is decoded with OpenCV (given only the pixel
    chunks, so libpng prints no warnings; grey or colour comes from the PNG header).
    Mode ``I`` (32-bit int) is clipped to 0..65535 and scaled like 16-bit; mode ``F`` is
    taken as 0..1 when its maximum is <= 1, else as 0..255 (clipped).
  * CMYK is converted by Pillow's plain formula (no colour management).

Reading masks
  * Any mode is reduced to one 8-bit grey channel and thresholded: value > 127 is white.
    RGB uses luminance (ITU-R 601, Pillow's ``L``).  RGBA / LA: if alpha is fully opaque
    the colour luminance is used; otherwise colour is composited over black
    (``lum * alpha / 255``), which turns "white strokes on a transparent layer" into
    white-on-black; if that composite is uniform while alpha is not (for instance black
    strokes on a transparent layer) the alpha channel itself is the mask.
  * EXIF orientation is applied to masks too (an editor shows and saves them that way).
  * A mask of another size is resized with nearest-neighbour, with a warning.
  * Values other than 0/255 warn only above 1 % of the pixels (soft edges are normal).

Writing
  * Every file is written atomically by :func:`repaint_cli.files.atomic_path` (a hidden
    temp file beside it, fsynced, renamed; removed on any error; unwritable folders raise
    :class:`InputError`).
  * Default encoder settings: JPEG ``quality=95, subsampling=0``; WebP ``lossless=True``
    (unless the caller passes ``quality`` or ``lossless``).  Known pixels are only
    byte-identical on disk for lossless formats (PNG, TIFF, BMP, lossless WebP).
  * Alpha is dropped with a warning for formats that cannot store it (JPEG, ...).
  * 16-bit (uint16) pixels are written as a 16-bit PNG by :mod:`.png_chunks` (Pillow
    cannot), with the ICC profile, dpi and text chunks.  :func:`write_like` gives an
    output made from a 16-bit input the input's 16-bit value at every pixel whose 8-bit
    value is the input's own (so known pixels are exact at 16 bits) and ``v * 257`` at
    generated ones.

Fitting images to the model's square resolution lives in :mod:`.fit`; atomic writing
in :mod:`repaint_cli.files`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from ..choices import CONVENTIONS, check_choice
from ..files import InputError, atomic_path
from ..files import display_path as _disp, input_error as _err
from . import png_chunks
from .fit import as_keep as _as_keep

__all__ = [
    "InputError",
    "LoadedImage",
    "read_image",
    "read_mask",
    "check_mask",
    "write_image_atomic",
    "write_like",
    "read_png_text",
    "fill_and_border_colours",
]

#: Share of non-binary mask pixels above which :func:`read_mask` warns.
NONBINARY_WARN_FRACTION = 0.01


# --------------------------------------------------------------------------- reading


@dataclass
class LoadedImage:
    """An image as read from disk.

    rgb:         uint8 (H, W, 3), display orientation (EXIF applied); grey inputs have
                 three equal channels.
    alpha:       uint8 (H, W) or None.
    path:        the path it was read from.
    mode:        the Pillow mode of the file as opened (before any conversion), e.g.
                 "RGB", "P", "I;16", "CMYK".
    bit_depth:   bits per channel in the file: 1, 8, 16 or 32.
    gray:        True for grayscale inputs; write them back as L / LA.
    icc_profile: the embedded ICC profile when it still describes ``rgb`` (None for
                 converted modes such as CMYK); pass it on as ``icc_profile=``.
    warnings:    one-line notes (first frame of an animation, unreadable EXIF...).
    dpi:         the resolution the file records, (x, y) dots per inch, or None; pass it
                 on as ``dpi=``.
    deep:        16-bit inputs: the file's samples, uint16 (H, W) grey or (H, W, 3) RGB, in
                 display orientation (``rgb`` is them scaled to 8 bits); else None.
    deep_alpha:  16-bit inputs with transparency: the alpha as uint16 (H, W).
    text:        a PNG's text chunks {key: value} (``PngImagePlugin.iTXt`` values keep
                 their language); {} for other formats.
    png_chunks:  a PNG's ``gAMA`` / ``cHRM`` / ``sRGB`` chunks {type: data}, copied to a PNG
                 output with the profile.
    :func:`write_like` writes an output in this image's format with all of the above.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    path: str
    mode: str
    bit_depth: int
    gray: bool = False
    icc_profile: bytes | None = None
    warnings: list[str] = field(default_factory=list)
    dpi: tuple[float, float] | None = None
    deep: np.ndarray | None = None
    deep_alpha: np.ndarray | None = None
    text: dict = field(default_factory=dict)
    png_chunks: dict = field(default_factory=dict)

    @property
    def depth_warning(self) -> str | None:
        """One line when a PNG output cannot hold the file's bit depth, else None."""
        if self.bit_depth <= 8 or (self.bit_depth == 16 and self.deep is not None):
            return None
        held = 16 if self.deep is not None else 8
        return f"{self.bit_depth}-bit input: the output is {held}-bit (known pixels exact at {held} bits)"

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.rgb.shape[0], self.rgb.shape[1]


_COLOUR_CONVERT_MODES = {"CMYK", "YCbCr", "LAB", "HSV"}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}


def _open_loaded(path, what: str) -> Image.Image:
    """Open and fully decode ``path``; every failure becomes an InputError."""
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size == 0:
            raise _err(path, "empty file (0 bytes)", "re-export it or remove it from the input")
        img = Image.open(p)
    except InputError:
        raise
    except FileNotFoundError:
        raise _err(path, f"{what} file not found", "check the path") from None
    except IsADirectoryError:
        raise _err(path, "is a folder, not an image file", "pass image files or a folder to scan") from None
    except PermissionError:
        raise _err(path, "cannot read the file (permission denied)", "fix its permissions or remove it from the input") from None
    except Image.DecompressionBombError as e:
        raise _err(path, f"image is too large to decode safely ({e.__class__.__name__})", "downscale it first") from None
    except Image.UnidentifiedImageError:
        raise _err(
            path,
            f"not a readable {what} (unknown or unsupported format)",
            "convert it to PNG or JPEG, or remove it from the input",
        ) from None
    except Exception as e:  # Pillow raises many types on broken headers
        raise _err(
            path,
            f"cannot decode {what} header ({e.__class__.__name__}: {_short(e)})",
            "re-export it or remove it from the input",
        ) from None
    try:
        img.load()  # force a full decode: truncated / corrupt data fails here
    except Image.DecompressionBombError as e:
        img.close()
        raise _err(path, f"image is too large to decode safely ({_short(e)})", "downscale it first") from None
    except Exception as e:
        img.close()
        raise _err(
            path,
            f"cannot decode {what} (truncated or corrupt file: {_short(e)})",
            "re-export it or remove it from the input",
        ) from None
    return img


def _short(e: BaseException, limit: int = 120) -> str:
    s = " ".join(str(e).split()) or e.__class__.__name__
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1


def _orient_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an array, as ImageOps.exif_transpose does."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:  # transpose
        arr = np.swapaxes(arr, 0, 1)
    elif orientation == 6:  # rotate 90 clockwise
        arr = np.rot90(arr, -1)
    elif orientation == 7:  # transverse
        arr = np.rot90(arr, 2).swapaxes(0, 1)
    elif orientation == 8:  # rotate 90 counter-clockwise
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


def _exif_transpose(img: Image.Image, path, warnings: list[str]) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(img)
        return img if out is None else out
    except Exception as e:
        warnings.append(f"{_disp(path)}: unreadable EXIF orientation ({_short(e, 60)}); used the stored orientation")
        return img


def _scale16(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 as round(v / 257) (exact integer form, no ties exist)."""
    a = np.clip(a.astype(np.int64), 0, 65535)
    return ((a + 128) // 257).astype(np.uint8)


def _float_to_u8(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if a.size and a.max() <= 1.0:
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _gray_to_u8(img: Image.Image) -> tuple[np.ndarray, int, np.ndarray | None]:
    """One grey channel as uint8, the file's bit depth, and its 16-bit samples (None up to 8 bits)."""
    mode = img.mode
    if mode.startswith("I;16"):
        deep = np.asarray(img).astype(np.uint16)
        return _scale16(deep), 16, deep
    if mode == "I":
        deep = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
        return _scale16(deep), 32, deep
    if mode == "F":
        return _float_to_u8(np.asarray(img)), 32, None
    if mode == "1":
        return np.asarray(img.convert("L")), 1, None
    return np.asarray(img.convert("L")), 8, None


def _key_alpha(samples: np.ndarray, key, opaque: int) -> np.ndarray | None:
    """Alpha from a transparent colour key (PNG ``tRNS`` on grey or RGB): 0 where a pixel is the key,
    ``opaque`` elsewhere; None when no pixel is (nothing is transparent)."""
    match = samples == np.asarray(key, samples.dtype) if samples.ndim == 2 else (samples == np.asarray(key)).all(axis=2)
    if not match.any():
        return None
    return np.where(match, 0, opaque).astype(np.uint16 if opaque > 255 else np.uint8)


def _read_png16(path, header: png_chunks.Header, trns: bytes | None, orientation: int):
    """(deep, deep_alpha) of a 16-bit PNG, uint16 in display orientation, via OpenCV (Pillow
    truncates 16-bit colour and grey+alpha to 8 bits); the colour type from the file's header
    says grey or colour (OpenCV returns grey+alpha as four channels).  None if OpenCV fails."""
    try:
        with open(path, "rb") as f:
            data = png_chunks.pixels_only(f.read())
    except OSError:
        return None
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        return None
    arr = _orient_array(arr, orientation)  # IMREAD_UNCHANGED ignores EXIF orientation
    arr = arr[..., None] if arr.ndim == 2 else arr
    if header.grey:
        deep = np.ascontiguousarray(arr[..., 0])
        alpha = arr[..., -1] if header.colour_type == 4 and arr.shape[2] in (2, 4) else None
    else:
        deep = np.ascontiguousarray(arr[..., 2::-1])  # BGR(A) -> RGB
        alpha = arr[..., 3] if header.colour_type == 6 and arr.shape[2] == 4 else None
    key = png_chunks.trns_key(header, trns)
    if key is not None and alpha is None:  # the key is applied here: OpenCV ignores one on grey
        alpha = _key_alpha(deep, key[0] if header.grey else key, 65535)
    return deep, None if alpha is None else np.ascontiguousarray(alpha)


def _snap_dpi(d: float) -> float:
    """PNG stores pixels per metre (300 dpi: 11811, which reads 299.9994): the whole number of
    dots per inch that gives the same count, when there is one."""
    n = round(d)
    return float(n) if n > 0 and int(n / 0.0254 + 0.5) == int(d / 0.0254 + 0.5) else d


def _dpi(info: dict, png: bool = False) -> tuple[float, float] | None:
    """The file's (x, y) dots per inch when it records a usable one."""
    try:
        x, y = (float(v) for v in info.get("dpi") or ())
    except (TypeError, ValueError):
        return None
    if png:
        x, y = _snap_dpi(x), _snap_dpi(y)
    return (x, y) if 0 < x < 1e6 and 0 < y < 1e6 else None


def _recorded_dpi(img: Image.Image, header) -> tuple[float, float] | None:
    """The dpi the file records; None where Pillow fills in a default (a TIFF without resolution
    tags reads (1, 1), a JPEG with EXIF but no resolution (72, 72))."""
    try:
        if img.format == "TIFF" and 282 not in img.tag_v2:  # XResolution
            return None
        if img.format == "JPEG" and img.info.get("jfif_unit") not in (1, 2) and 0x011A not in img.getexif():
            return None
    except Exception:  # unreadable EXIF: trust none of it
        return None
    return _dpi(img.info, header is not None)


def _metadata(img: Image.Image, header) -> dict:
    """What an output keeps of its input besides pixels: ICC profile, dpi, PNG text and colour chunks."""
    return dict(icc_profile=img.info.get("icc_profile") or None, dpi=_recorded_dpi(img, header),
                text=dict(getattr(img, "text", None) or {}) if header is not None else {})


def read_image(path) -> LoadedImage:
    """Read an image file as uint8 RGB (+ separate alpha); see the module notes."""
    img = opened = _open_loaded(path, "image")
    warnings: list[str] = []
    try:
        if getattr(img, "n_frames", 1) > 1:
            warnings.append(f"{_disp(path)}: has {img.n_frames} frames; only the first is used")
        header, chunks = png_chunks.read_chunks(path) if img.format == "PNG" else (None, {})
        meta = _metadata(img, header)
        meta["png_chunks"] = {k: v for k, v in chunks.items() if k in png_chunks.COLOUR_CHUNKS}
        mode = img.mode
        if header is not None and header.bit_depth == 16:
            got = _read_png16(path, header, chunks.get(b"tRNS"), _exif_orientation(img))
            if got is not None:
                deep, deep_alpha = got
                gray8 = _scale16(deep)
                rgb = np.repeat(gray8[..., None], 3, axis=2) if header.grey else gray8
                alpha = None if deep_alpha is None else _scale16(deep_alpha)
                return LoadedImage(rgb, alpha, str(path), mode, 16, header.grey, warnings=warnings, deep=deep,
                                   deep_alpha=deep_alpha, **meta)
        transparency = img.info.get("transparency")
        img = _exif_transpose(img, path, warnings)
        try:
            rgb, alpha, bit_depth, deep, keeps_icc = _decode(img, path, mode, transparency, header)
        except InputError:
            raise
        except Exception as e:  # Pillow's conversions raise on damaged metadata (a P image's tRNS...)
            raise _err(path, f"cannot decode image ({e.__class__.__name__}: {_short(e)})",
                       "re-export it or remove it from the input") from None
        if not keeps_icc:
            meta["icc_profile"] = None  # the profile describes the original colour space
        is_gray = mode in _GRAY_MODES or mode.startswith("I;16")
        deep_alpha = None if deep is None or alpha is None else alpha.astype(np.uint16) * 257
        return LoadedImage(np.ascontiguousarray(rgb, dtype=np.uint8),
                           None if alpha is None else np.ascontiguousarray(alpha, dtype=np.uint8),
                           str(path), mode, bit_depth, is_gray, warnings=warnings, deep=deep, deep_alpha=deep_alpha,
                           **meta)
    finally:
        img.close()
        opened.close()


def _has_palette_alpha(img: Image.Image) -> bool:
    return img.mode == "P" and ("transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA"))


def _decode(img: Image.Image, path, mode: str, transparency, header):
    """(rgb uint8 (H, W, 3), alpha uint8 or None, bit depth, deep uint16 grey or None, ICC still valid)
    for every mode Pillow opens (16-bit PNGs are read by :func:`_read_png16`)."""
    alpha, deep, bit_depth = None, None, 8
    if mode == "RGB":
        rgb = np.asarray(img)
        if isinstance(transparency, tuple) and len(transparency) == 3:  # tRNS colour key (optipng, oxipng)
            alpha = _key_alpha(rgb, transparency, 255)
        return rgb, alpha, 8, None, True
    if mode in ("RGBA", "RGBa", "PA") or _has_palette_alpha(img):
        rgba = np.asarray(img.convert("RGBA"))
        return rgba[..., :3], rgba[..., 3], 8, None, True
    if mode in ("P", "RGBX") or mode in _COLOUR_CONVERT_MODES:
        return np.asarray(img.convert("RGB")), None, 8, None, mode not in _COLOUR_CONVERT_MODES
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        return np.repeat(la[..., :1], 3, axis=2), la[..., 1], 8, None, True
    if mode in _GRAY_MODES or mode.startswith("I;16"):
        gray8, bit_depth, deep = _gray_to_u8(img)
        if isinstance(transparency, int):
            alpha = _grey_key_alpha(gray8, deep, transparency, mode, header)
        return np.repeat(gray8[..., None], 3, axis=2), alpha, bit_depth, deep, True
    try:
        return np.asarray(img.convert("RGB")), None, 8, None, False
    except Exception:
        raise _err(path, f"unsupported image mode {mode!r}", "convert it to an 8-bit RGB PNG or JPEG") from None


def _grey_key_alpha(gray8: np.ndarray, deep: np.ndarray | None, key: int, mode: str, header) -> np.ndarray | None:
    """Alpha of a grey image with a transparent grey value (``tRNS``), which Pillow gives in the
    file's own units: 0..1 for 1-bit, 0..15 for 4-bit (shown as 0..255, each level times 17)."""
    if deep is not None:
        return _key_alpha(deep, key, 255) if mode.startswith("I;16") or mode == "I" else None
    if mode == "1":
        return _key_alpha(gray8, 255 if key else 0, 255)
    bits = header.bit_depth if header is not None and header.bit_depth < 8 else 8
    return _key_alpha(gray8, key * (255 // (2 ** bits - 1)), 255) if key < 2 ** bits else None


# ----------------------------------------------------------------------------- masks


def _mask_to_gray8(img: Image.Image) -> np.ndarray:
    """One 8-bit grey channel for any mask mode; see the module notes for RGBA/LA."""
    mode = img.mode
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        mode == "P" and ("transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA"))
    ):
        if mode in ("LA", "La"):
            la = np.asarray(img.convert("LA"))
            lum, a = la[..., 0], la[..., 1]
        else:
            rgba = img.convert("RGBA")
            lum = np.asarray(rgba.convert("RGB").convert("L"))
            a = np.asarray(rgba)[..., 3]
        if a.min() == 255:
            return np.ascontiguousarray(lum)
        comp = ((lum.astype(np.uint32) * a + 127) // 255).astype(np.uint8)
        if comp.min() == comp.max() and a.min() != a.max():
            return np.ascontiguousarray(a)
        return comp
    if mode in _GRAY_MODES or mode.startswith("I;16"):
        return np.ascontiguousarray(_gray_to_u8(img)[0])
    return np.asarray(img.convert("RGB").convert("L"))


def _colour_fraction(img: Image.Image) -> float:
    if img.mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "RGBX", "YCbCr"):
        return 0.0
    rgb = np.asarray(img.convert("RGB")).astype(np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return float(np.count_nonzero(spread > 32)) / max(spread.size, 1)


def read_mask(path, convention: Literal["keep", "hole"], size: tuple[int, int] | None = None) -> tuple[np.ndarray, list[str]]:
    """Read a mask file and return ``(keep_mask bool (H, W), warnings)``.

    convention: 'keep' (white = keep, RePaint) or 'hole' (white = hole, LaMa/IOPaint).
    size:       the image's (H, W); a mask of another size is resized (nearest) with a
                warning naming both sizes.
    Emptiness is not checked here; see :func:`check_mask`.
    """
    check_choice(convention, CONVENTIONS, "mask convention")
    img = opened = _open_loaded(path, "mask")
    warnings: list[str] = []
    try:
        if getattr(img, "n_frames", 1) > 1:
            warnings.append(f"{_disp(path)}: mask has {img.n_frames} frames; only the first is used")
        img = _exif_transpose(img, path, warnings)
        gray = _mask_to_gray8(img)
        colour = _colour_fraction(img)
    finally:
        img.close()
        opened.close()

    if colour > NONBINARY_WARN_FRACTION:
        warnings.append(
            f"{_disp(path)}: mask is coloured ({colour:.1%} of pixels); converted to grey by luminance "
            f"(pure red counts as black) — save masks as black and white"
        )
    nonbinary = float(np.count_nonzero((gray != 0) & (gray != 255))) / max(gray.size, 1)
    if nonbinary > NONBINARY_WARN_FRACTION:
        warnings.append(
            f"{_disp(path)}: mask is not binary ({nonbinary:.1%} of pixels are neither black nor white); "
            f"thresholded at 127 (brighter counts as white)"
        )
    white = gray > 127
    if size is not None:
        h, w = int(size[0]), int(size[1])
        mh, mw = white.shape
        if (mh, mw) != (h, w):
            white = cv2.resize(white.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST_EXACT) > 0
            warnings.append(
                f"{_disp(path)}: mask is {mw}x{mh} but the image is {w}x{h} (width x height); "
                f"resized the mask with nearest-neighbour — check that they belong together"
            )
    keep = white if convention == "keep" else ~white
    return np.ascontiguousarray(keep), warnings


def check_mask(keep_mask, path, allow_empty: bool = False) -> list[str]:
    """Raise InputError if the mask has no hole or keeps no pixel.

    With ``allow_empty=True`` the same one-line message is returned as a warning instead.
    Returns the list of warnings (empty when the mask is fine).
    """
    keep = _as_keep(keep_mask)
    hint = "check --mask-convention (keep: white = keep; hole: white = hole)"
    if keep.all():
        msg = f"{_disp(path)}: mask has no hole (every pixel is kept); nothing to inpaint — {hint}"
    elif not keep.any():
        msg = f"{_disp(path)}: mask keeps no pixel (every pixel is a hole); nothing to condition on — {hint}"
    else:
        return []
    if allow_empty:
        return [msg]
    raise InputError(msg, path)


# ----------------------------------------------------------------------------- writing

# Formats whose Pillow writers store an alpha channel.
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "TGA", "JPEG2000", "ICO", "ICNS", "DDS"}


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if not ext or fmt is None or fmt not in Image.SAVE:
        raise _err(
            path,
            f"cannot write images with extension {ext or '(none)'!r}",
            "use .png, .jpg, .webp, .tif or .bmp",
        )
    return fmt


def _luma(arr: np.ndarray) -> np.ndarray:
    """Pillow's L = (19595 R + 38470 G + 7471 B + 32768) >> 16, for 8 or 16 bits: exact when R == G == B."""
    a = arr.astype(np.int64)
    return ((19595 * a[..., 0] + 38470 * a[..., 1] + 7471 * a[..., 2] + 32768) >> 16).astype(arr.dtype)


def _checked_alpha(alpha, arr: np.ndarray) -> np.ndarray | None:
    if alpha is None:
        return None
    alpha = np.asarray(alpha)
    if alpha.dtype == bool:
        alpha = alpha.astype(arr.dtype) * (65535 if arr.dtype == np.uint16 else 255)
    if alpha.dtype not in (np.uint8, np.uint16) or alpha.shape != arr.shape[:2]:
        raise ValueError(f"alpha must be uint8 or uint16 {arr.shape[:2]}, got {alpha.dtype} {alpha.shape}")
    if alpha.dtype != arr.dtype:  # alpha at the pixels' depth
        alpha = alpha.astype(np.uint16) * 257 if arr.dtype == np.uint16 else _scale16(alpha)
    return alpha


def write_image_atomic(path, rgb: np.ndarray, alpha: np.ndarray | None = None, *, gray: bool = False,
                       text: dict | None = None, copied_text: dict | None = None, colour_chunks: dict | None = None,
                       **save_kwargs) -> list[str]:
    """Encode ``rgb`` (uint8 or uint16 (H, W, 3), or (H, W) grey) to ``path`` atomically.

    The format comes from the extension.  ``alpha`` ((H, W), at any depth) is put back as
    RGBA / LA where the format supports it; ``gray=True`` writes L / LA (luminance of ``rgb``,
    exact for equal channels).  uint16 pixels are written as a 16-bit PNG (other formats:
    8-bit, with a warning).  ``text`` ({key: str}) is stored as PNG iTXt chunks, ``copied_text``
    (an input's text chunks) as they came, ``text`` winning on a shared key, and
    ``colour_chunks`` ({b"gAMA": data...}) as they are (other formats: ignored); read text back
    with :func:`read_png_text`.  ``save_kwargs`` go to Pillow (``quality=``, ``icc_profile=``,
    ``dpi=``...; None values are left out).  Returns warnings (e.g. alpha dropped for JPEG).
    """
    final = Path(path)
    fmt = _format_for(final)
    arr = np.asarray(rgb)
    if arr.dtype not in (np.uint8, np.uint16) or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"rgb must be uint8 or uint16 (H, W, 3) or (H, W), got {arr.dtype} {arr.shape}")
    warnings: list[str] = []
    alpha = _checked_alpha(alpha, arr)
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        warnings.append(f"{_disp(final)}: {fmt} cannot store transparency; alpha channel dropped (use .png to keep it)")
        alpha = None
    if arr.dtype == np.uint16 and fmt != "PNG":
        warnings.append(f"{_disp(final)}: written as 8-bit ({fmt}); use .png to keep 16 bits")
        arr, alpha = _scale16(arr), None if alpha is None else _scale16(alpha)
    gray = gray or arr.ndim == 2
    g = _luma(arr) if gray and arr.ndim == 3 else arr
    pixels = np.dstack([g, alpha]) if alpha is not None else g
    kw = {k: v for k, v in save_kwargs.items() if not (k in ("icc_profile", "dpi") and not v)}  # None: none
    texts = [(k, v, False) for k, v in (copied_text or {}).items() if k not in (text or {})]
    texts += [(k, str(v), True) for k, v in (text or {}).items()]
    if arr.dtype == np.uint16:
        data = png_chunks.encode_png16(pixels, _png16_chunks(kw, texts, colour_chunks or {}))
        with atomic_path(final) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        return warnings
    img = Image.fromarray(pixels, ("LA" if gray else "RGBA") if alpha is not None else ("L" if gray else "RGB"))
    if fmt == "JPEG":
        kw.setdefault("quality", 95)
        kw.setdefault("subsampling", 0)
    elif fmt == "WEBP" and "quality" not in kw and "lossless" not in kw:
        kw["lossless"] = True
    if fmt == "PNG" and (texts or colour_chunks):
        kw["pnginfo"] = _pnginfo(texts, colour_chunks or {})
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            img.save(f, format=fmt, **kw)
    return warnings


def _pnginfo(texts: list, colour_chunks: dict) -> PngImagePlugin.PngInfo:
    """Text chunks (copied ones in their kind; ours, ``ours``, as iTXt: file names need not be
    Latin-1) and colour chunks for Pillow's PNG writer."""
    info = PngImagePlugin.PngInfo()
    for kind, data in colour_chunks.items():
        info.add(kind, data)
    for key, value, ours in texts:
        if ours or isinstance(value, PngImagePlugin.iTXt):
            info.add_itxt(key, value, getattr(value, "lang", "") or "", getattr(value, "tkey", "") or "")
        else:
            info.add_text(key, value)  # tEXt when Latin-1, else iTXt
    return info


def _png16_chunks(kw: dict, texts: list, colour_chunks: dict) -> list[bytes]:
    """The chunks Pillow would write around a 16-bit PNG's pixels: ICC profile, colour, dpi, text."""
    out = [png_chunks.iccp_chunk(kw["icc_profile"])] if kw.get("icc_profile") else []
    out += [png_chunks.chunk(kind, data) for kind, data in colour_chunks.items()]
    if kw.get("dpi"):
        out.append(png_chunks.phys_chunk(kw["dpi"]))
    for key, value, ours in texts:
        out.append(png_chunks.text_chunk(key, str(value), getattr(value, "lang", "") or "",
                                         getattr(value, "tkey", "") or "", itxt=ours))
    return out


def write_like(path, rgb: np.ndarray, image: LoadedImage, *, text: dict | None = None) -> list[str]:
    """Write ``rgb`` (uint8 (H, W, 3), an output made from ``image`` at its size) in ``image``'s
    pixel format: grey stays grey, alpha is put back, a 16-bit input gives a 16-bit PNG in which
    every pixel whose 8-bit value is the input's own keeps the input's 16-bit value (known pixels
    exact at 16 bits); with the input's ICC profile, dpi, PNG text and colour chunks (``text``
    adds to them).  Returns warnings."""
    rgb = np.asarray(rgb)
    if rgb.shape != image.rgb.shape:
        raise ValueError(f"output {rgb.shape} is not the size of its input {image.rgb.shape}")
    pixels, alpha = rgb, image.alpha
    if image.deep is not None:
        new8, old8 = (_luma(rgb), image.rgb[..., 0]) if image.gray else (rgb, image.rgb)
        same = new8 == old8 if image.gray else (new8 == old8).all(axis=2, keepdims=True)
        pixels = np.where(same, image.deep, new8.astype(np.uint16) * 257)
        alpha = image.deep_alpha if image.deep_alpha is not None else alpha
    return write_image_atomic(path, pixels, alpha, gray=image.gray, text=text, copied_text=image.text,
                              colour_chunks=image.png_chunks, icc_profile=image.icc_profile, dpi=image.dpi)


def read_png_text(path, key: str) -> str | None:
    """A text chunk of a PNG (written by ``write_image_atomic(text=...)``), or None (absent,
    not a PNG, unreadable).  Reads the chunks before the pixels only."""
    try:
        with Image.open(path) as img:
            value = img.info.get(key)
    except (OSError, ValueError, SyntaxError):
        return None
    return str(value) if value is not None else None


def fill_and_border_colours(rgb, keep_mask, ring: int = 3) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean colour of the hole as filled, mean colour of the known pixels within ``ring`` px
    of it), float RGB; None when there is no hole or no known pixel beside it."""
    keep = _as_keep(keep_mask)
    hole = ~keep
    if not hole.any():
        return None
    near = cv2.dilate(hole.astype(np.uint8), np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)) > 0
    border = near & keep
    if not border.any():
        return None
    rgb = np.asarray(rgb)
    return rgb[hole].astype(np.float64).mean(axis=0), rgb[border].astype(np.float64).mean(axis=0)
