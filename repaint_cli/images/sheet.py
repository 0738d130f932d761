"""Contact sheets: every result of an output folder at a glance (``repaint sheet``, ``--sheet``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional
import cv2
import numpy as np
from . import image_files
from ..files import InputError, WritePlan, is_atomic_temp
from .frames import draw_text


_SHEET_EXCLUDE = ("_mask", "_concat", "_sheet")
SHEET_KEY = "repaint-sheet"  # the PNG text chunk that marks a contact sheet (a rerun may replace it)


def _fit_cell(rgb: np.ndarray, cell: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = cell / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_NEAREST
    return cv2.resize(np.ascontiguousarray(rgb), (nw, nh), interpolation=interp)


def _fit_label(text: str, width: int, scale: float) -> str:
    def w(s):
        return cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    if w(text) <= width:
        return text
    while len(text) > 1 and w(text + "..") > width:
        text = text[:-1]
    return text + ".."


def make_sheet(image_paths, out_path, cols: Optional[int] = None, cell: int = 128, labels: bool = True) -> Path:
    """One PNG contact sheet: each image fitted into a ``cell`` square (aspect kept), its
    file stem below. Unreadable files get a grey cell with a red cross. Returns the path."""
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise ValueError("no images for the contact sheet")
    cell = int(cell)
    if cell < 8:
        raise ValueError(f"cell {cell}: must be at least 8 px")
    n = len(paths)
    cols = int(cols) if cols else math.ceil(math.sqrt(n))
    if cols < 1:
        raise ValueError(f"cols {cols}: must be at least 1")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    pad = 4
    scale = 0.4 if cell >= 96 else 0.3
    label_h = (cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1] + 8) if labels else 0
    cw, ch = cell + pad, cell + label_h + pad
    sheet = np.full((rows * ch + pad, cols * cw + pad, 3), 255, np.uint8)
    for i, p in enumerate(paths):
        r, c = divmod(i, cols)
        x, y = pad + c * cw, pad + r * ch
        try:
            thumb = _fit_cell(image_files.read_image(p).rgb, cell)
        except (InputError, OSError, ValueError):
            thumb = np.full((cell, cell, 3), 200, np.uint8)
            cv2.line(thumb, (0, 0), (cell - 1, cell - 1), (220, 40, 40), 2)
            cv2.line(thumb, (0, cell - 1), (cell - 1, 0), (220, 40, 40), 2)
        th, tw = thumb.shape[:2]
        oy, ox = y + (cell - th) // 2, x + (cell - tw) // 2
        sheet[y:y + cell, x:x + cell] = 235
        sheet[oy:oy + th, ox:ox + tw] = thumb
        if labels:
            draw_text(sheet, _fit_label(p.stem, cell, scale), (x, y + cell + label_h - 5), scale, (0, 0, 0))
    image_files.write_image_atomic(out_path, sheet, text={SHEET_KEY: f"{n} images"})
    return Path(out_path)


def result_images(out_dir) -> list[Path]:
    """The ``<stem>.png`` results in an output folder (no masks, concats, sheets, frames, temp files)."""
    out_dir = Path(out_dir)
    found = []
    for p in sorted(out_dir.iterdir()):
        if not p.is_file() or p.suffix.lower() != ".png" or p.name.startswith("."):
            continue
        if p.stem == "sheet" or p.stem.endswith(_SHEET_EXCLUDE) or is_atomic_temp(p):
            continue
        found.append(p)
    return found


def sheet_for_dir(out_dir, out_path=None, cols: Optional[int] = None, cell: int = 128) -> Path:
    """A contact sheet of the results in ``out_dir``, written to ``<out_dir>/sheet.png`` by default."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"{out_dir}: not a folder; give the --out folder of a 'repaint inpaint' run")
    out_path = Path(out_path) if out_path else out_dir / "sheet.png"
    # an earlier sheet is replaced (is_file first: opening a FIFO to read it would wait for a writer)
    is_sheet = out_path.is_file() and image_files.read_png_text(out_path, SHEET_KEY) is not None
    images = [p for p in result_images(out_dir) if not (is_sheet and p.resolve() == out_path.resolve())]
    plan = WritePlan()  # never over a result, nor over a device or FIFO
    for p in images:
        plan.read(p, f"the result {p.name} (not a contact sheet)")
    plan.write(out_path, "the contact sheet")
    plan.check()
    if not images:
        raise ValueError(f"{out_dir}: no <stem>.png results in this folder; run 'repaint inpaint --out {out_dir}' first")
    return make_sheet(images, out_path, cols=cols, cell=cell)
