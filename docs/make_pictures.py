"""The README's pictures, from a run of the embedded model (see `make readme-pictures`).

    python docs/make_pictures.py out/readme
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent


def before_after_grid(run_dir: Path, out: Path, cols: int = 2, scale: int = 4, gap: int = 8) -> None:
    """Every <stem>_concat.png (input with hole | mask | output), enlarged, in a grid."""
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(run_dir.glob("*_concat.png"))]
    if not tiles:
        raise SystemExit(f"{run_dir}: no *_concat.png; run repaint inpaint with --concat first")
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (h * scale + gap) + gap, cols * (w * scale + gap) + gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        big = t.repeat(scale, 0).repeat(scale, 1)
        y, x = gap + r * (h * scale + gap), gap + c * (w * scale + gap)
        sheet[y:y + big.shape[0], x:x + big.shape[1]] = big
    Image.fromarray(sheet).save(out)


if __name__ == "__main__":
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "out/readme")
    before_after_grid(run, ROOT / "demo_sheet.png")
    gifs = sorted(run.glob("emoji_544.gif")) or sorted(run.glob("*.gif"))  # the horse, if present
    if gifs:
        (ROOT / "demo_animation.gif").write_bytes(gifs[0].read_bytes())
    print(ROOT / "demo_sheet.png")
