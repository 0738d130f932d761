"""images/sheet.py: a contact sheet of inputs, masks and results."""
import numpy as np
import pytest
from PIL import Image
from conftest import write_png
from repaint_cli.images import sheet
from repaint_cli.images.sheet import make_sheet, sheet_for_dir


def test_make_sheet_and_sheet_for_dir(tmp_path):
    rng = np.random.default_rng(1)
    out = tmp_path / "out"
    out.mkdir()
    for i, (h, w) in enumerate([(16, 16), (30, 50), (64, 20), (8, 8), (16, 16)]):
        write_png(out / f"r{i}.png", rng.integers(0, 256, (h, w, 3)))
    for extra in ("r0_mask.png", "r0_concat.png", "old_sheet.png", "r0.gif"):
        write_png(out / extra, np.zeros((4, 4, 3)))
    (out / "frames" / "r0").mkdir(parents=True)
    write_png(out / "frames" / "r0" / "0000_t049_xt.png", np.zeros((4, 4, 3)))
    (out / "broken.png").write_bytes(b"not a png")

    assert [p.name for p in sheet.result_images(out)] == ["broken.png"] + [f"r{i}.png" for i in range(5)]
    path = sheet_for_dir(out)
    assert path == out / "sheet.png"
    im = Image.open(path)
    im.load()
    assert im.size[0] > 3 * 128 and im.size[1] > 2 * 128  # 6 images: 3 x 2 cells
    assert [p.name for p in sheet.result_images(out)] == ["broken.png"] + [f"r{i}.png" for i in range(5)]  # sheet.png excluded

    p2 = make_sheet(sorted(out.glob("r?.png")), tmp_path / "s.png", cols=5, cell=32, labels=False)
    im2 = Image.open(p2)
    im2.load()
    assert im2.size == (5 * 36 + 4, 36 + 4)
    with pytest.raises(ValueError):
        sheet_for_dir(tmp_path / "nope")
