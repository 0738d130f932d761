"""Colour-emoji training data for our small DDPM.

The bitmaps come from Google's Noto Color Emoji font (Debian package
``fonts-noto-color-emoji``), whose CBDT table stores every emoji as a PNG.
``fonttools`` (the ``train`` extra) is needed only here, so it is imported lazily.

The held-out split is fixed so that every benchmark sees the same images:

* every glyph whose glyph ID is divisible by ``HELDOUT_EVERY`` (16) is held out;
* a remaining glyph is also kept out of training when its edge map is a
  near-duplicate of some held-out glyph's (skin-tone and gender variants of one
  emoji share their outlines): normalised correlation of Sobel gradient
  magnitudes above ``EDGE_CORR_THRESHOLD`` (0.85).

Run ``python -m repaint_cli.emoji --out data/emoji32.npz --size 32`` to build it.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ..files import atomic_path

HELDOUT_EVERY = 16
EDGE_CORR_THRESHOLD = 0.85
EDGE_SIZE = 32  # side of the grayscale images the edge maps are computed on

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-color-emoji-fonts/NotoColorEmoji.ttf",
    "/usr/local/share/fonts/NotoColorEmoji.ttf",
    "~/.local/share/fonts/NotoColorEmoji.ttf",
    "~/.fonts/NotoColorEmoji.ttf",
    "/System/Library/Fonts/NotoColorEmoji.ttf",
)

# Regional indicator symbols: a ligature made only of these is a flag.
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)


def find_emoji_font() -> Path:
    """Return the path of NotoColorEmoji.ttf, or raise FileNotFoundError saying how to get it."""
    for cand in FONT_CANDIDATES:
        p = Path(cand).expanduser()
        if p.is_file():
            return p
    raise FileNotFoundError(
        "Noto Color Emoji font not found (looked in: "
        + ", ".join(FONT_CANDIDATES)
        + "). On Debian/Ubuntu install it with: apt-get install fonts-noto-color-emoji"
    )


def _open_font(font_path):
    try:
        from fontTools.ttLib import TTFont
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fonttools is needed to read the emoji font: pip install 'repaint-cli[train]'"
        ) from e
    return TTFont(str(font_path), lazy=True)


def extract_emoji(font_path) -> list[tuple[int, Image.Image]]:
    """Decode every CBDT bitmap of the font: [(glyph_id, RGBA image)] sorted by glyph ID.

    If the font has several strikes (bitmap sizes), the largest one is used.
    """
    font = _open_font(font_path)
    if "CBDT" not in font:
        raise ValueError(f"{font_path} has no CBDT table (not a colour bitmap font)")
    strikes = font["CBDT"].strikeData
    if not strikes:
        raise ValueError(f"{font_path}: CBDT table holds no strikes")
    strike = max(strikes, key=len)
    out = []
    for name, bitmap in strike.items():
        data = getattr(bitmap, "imageData", None)
        if not data:  # formats 17/18/19 carry PNG data; anything else is skipped
            continue
        img = Image.open(io.BytesIO(data))
        img.load()
        out.append((font.getGlyphID(name), img.convert("RGBA")))
    out.sort(key=lambda t: t[0])
    return out


def flag_glyph_ids(font_path) -> set[int]:
    """Glyph IDs of flags: GSUB ligatures built only from regional-indicator glyphs."""
    font = _open_font(font_path)
    cmap = font.getBestCmap() or {}
    ri_names = {name for cp, name in cmap.items() if cp in _REGIONAL_INDICATORS}
    flags: set[int] = set()
    if "GSUB" not in font or font["GSUB"].table.LookupList is None:
        return flags
    for lookup in font["GSUB"].table.LookupList.Lookup:
        for sub in lookup.SubTable:
            if getattr(sub, "ExtSubTable", None) is not None:
                sub = sub.ExtSubTable
            ligatures = getattr(sub, "ligatures", None)
            if not ligatures:
                continue
            for first, ligs in ligatures.items():
                if first not in ri_names:
                    continue
                for lig in ligs:
                    if all(c in ri_names for c in lig.Component):
                        flags.add(font.getGlyphID(lig.LigGlyph))
    return flags


def to_square(img: Image.Image, size: int = 32) -> np.ndarray:
    """Composite on white, pad to a white square (content centred), resize: (size, size, 3) uint8."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    w, h = rgb.size
    side = max(w, h)
    if w != h:
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(rgb, ((side - w) // 2, (side - h) // 2))
        rgb = square
    if side != size:
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8).copy()


def edge_features(images: np.ndarray, edge_size: int = EDGE_SIZE) -> np.ndarray:
    """Zero-mean, unit-norm Sobel gradient magnitudes of the grayscale images: (N, edge_size**2)."""
    import cv2

    images = np.asarray(images)
    feats = np.empty((len(images), edge_size * edge_size), dtype=np.float64)
    for i, im in enumerate(images):
        gray = cv2.cvtColor(np.ascontiguousarray(im, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
        if gray.shape != (edge_size, edge_size):
            gray = cv2.resize(gray, (edge_size, edge_size), interpolation=cv2.INTER_AREA)
        g = gray.astype(np.float64) / 255.0
        gx = cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3)
        gy = cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)
        mag = np.hypot(gx, gy).ravel()
        mag -= mag.mean()
        n = np.linalg.norm(mag)
        feats[i] = mag / n if n > 1e-12 else 0.0
    return feats


def split_heldout(
    gids: Sequence[int],
    images: np.ndarray,
    every: int = HELDOUT_EVERY,
    threshold: float = EDGE_CORR_THRESHOLD,
    edge_size: int = EDGE_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices into (train_idx, heldout_idx, dropped_idx), each sorted ascending.

    ``heldout``: glyph ID divisible by ``every``. ``dropped``: not held out, but the
    Sobel-edge correlation with some held-out image exceeds ``threshold``.
    ``train``: everything else. ``images`` are (N, H, W, 3) uint8 RGB.
    """
    gids = np.asarray(gids, dtype=np.int64)
    if len(gids) != len(images):
        raise ValueError(f"{len(gids)} glyph ids but {len(images)} images")
    is_held = gids % every == 0
    heldout_idx = np.flatnonzero(is_held)
    rest_idx = np.flatnonzero(~is_held)
    if len(heldout_idx) == 0 or len(rest_idx) == 0:
        return rest_idx, heldout_idx, np.empty(0, dtype=np.int64)
    feats = edge_features(images, edge_size)
    corr = feats[rest_idx] @ feats[heldout_idx].T  # (rest, held)
    near = corr.max(axis=1) > threshold
    return rest_idx[~near], heldout_idx, rest_idx[near]


def _save_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so the bytes never change."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def build_emoji_arrays(size: int = 32, font_path=None) -> dict:
    """Everything the dataset and the examples need, in memory."""
    font_path = Path(font_path) if font_path is not None else find_emoji_font()
    glyphs = extract_emoji(font_path)
    if not glyphs:
        raise ValueError(f"{font_path}: no colour bitmaps found")
    gids = np.array([g for g, _ in glyphs], dtype=np.int64)
    images = np.stack([to_square(im, size) for _, im in glyphs])
    train_idx, held_idx, drop_idx = split_heldout(gids, images)
    return {
        "font_path": font_path,
        "gids": gids,
        "images": images,
        "train_idx": train_idx,
        "heldout_idx": held_idx,
        "dropped_idx": drop_idx,
    }


def prepare_emoji_dataset(out_path, size: int = 32, font_path=None, _arrays=None) -> dict:
    """Write the .npz (train, train_gid, heldout, heldout_gid, size); return the counts."""
    a = _arrays if _arrays is not None else build_emoji_arrays(size, font_path)
    gids, images = a["gids"], a["images"]
    tr, ho = a["train_idx"], a["heldout_idx"]
    _save_npz_deterministic(
        Path(out_path),
        {
            "train": images[tr],
            "train_gid": gids[tr].astype(np.int32),
            "heldout": images[ho],
            "heldout_gid": gids[ho].astype(np.int32),
            "size": np.array(size, dtype=np.int32),
        },
    )
    return {
        "total": int(len(gids)),
        "heldout": int(len(ho)),
        "dropped_near_duplicates": int(len(a["dropped_idx"])),
        "train": int(len(tr)),
    }


def pick_examples(
    gids: np.ndarray, images: np.ndarray, n: int, exclude: Iterable[int] = (), min_std: float = 20.0
) -> list[int]:
    """Indices of ``n`` images spread evenly over the list, skipping excluded IDs and near-blank images.

    ``images`` and ``gids`` are the held-out set. An image is near-blank when the
    standard deviation of its pixels is below ``min_std``.
    """
    exclude = set(int(g) for g in exclude)
    ok = [
        i
        for i in range(len(gids))
        if int(gids[i]) not in exclude and float(images[i].astype(np.float64).std()) >= min_std
    ]
    if len(ok) <= n:
        return ok
    pos = np.linspace(0, len(ok) - 1, n).round().astype(int)
    return [ok[p] for p in pos]


def write_examples(out_dir, gids: np.ndarray, images: np.ndarray, n: int = 8, exclude=()) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in pick_examples(gids, images, n, exclude):
        p = out_dir / f"emoji_{int(gids[i])}.png"
        with atomic_path(p) as tmp:
            Image.fromarray(images[i], "RGB").save(tmp, format="PNG", optimize=True)
        paths.append(p)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m repaint_cli.emoji",
        description="Build the colour-emoji training set (held-out split fixed) from Noto Color Emoji.",
    )
    ap.add_argument("--out", type=Path, default=Path("data/emoji32.npz"), help="output .npz")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    ap.add_argument("--font", type=Path, default=None, help="path to NotoColorEmoji.ttf")
    ap.add_argument("--examples", type=Path, default=None, help="also write held-out examples here")
    ap.add_argument("--n-examples", type=int, default=8, help="how many examples (default 8)")
    args = ap.parse_args(argv)
    if args.size < 4:
        ap.error("--size must be at least 4")
    try:
        arrays = build_emoji_arrays(args.size, args.font)
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    counts = prepare_emoji_dataset(args.out, args.size, _arrays=arrays)
    print(
        f"emoji: total {counts['total']}, held out {counts['heldout']} "
        f"(glyph id % {HELDOUT_EVERY} == 0), dropped near-duplicates {counts['dropped_near_duplicates']} "
        f"(Sobel-edge corr > {EDGE_CORR_THRESHOLD}), train {counts['train']} -> {args.out}",
        file=sys.stderr,
    )
    if args.examples is not None:
        ho = arrays["heldout_idx"]
        flags = flag_glyph_ids(arrays["font_path"])
        paths = write_examples(
            args.examples, arrays["gids"][ho], arrays["images"][ho], args.n_examples, exclude=flags
        )
        print(f"examples: {len(paths)} written to {args.examples}: "
              + " ".join(p.name for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
