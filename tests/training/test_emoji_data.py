"""Tests of the emoji dataset helpers: squaring, the held-out split rule, the font reader."""

import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from repaint_cli.training import emoji_data as emoji


def _shape_image(kind: str, colour, size: int = 32) -> np.ndarray:
    """A white (size, size, 3) image with one filled shape in the given colour."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    if kind == "disc":
        d.ellipse((6, 6, 25, 25), fill=colour)
    elif kind == "bar":
        d.rectangle((2, 13, 29, 18), fill=colour)
    elif kind == "triangle":
        d.polygon([(16, 3), (29, 28), (3, 28)], fill=colour)
    elif kind == "cross":
        d.line((4, 4, 27, 27), fill=colour, width=3)
        d.line((4, 27, 27, 4), fill=colour, width=3)
    return np.asarray(img)


def test_to_square_shape_and_dtype():
    img = Image.new("RGBA", (136, 128), (200, 30, 30, 255))
    out = emoji.to_square(img, 32)
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.uint8
    out16 = emoji.to_square(img, 16)
    assert out16.shape == (16, 16, 3)


def test_to_square_transparent_becomes_white():
    img = Image.new("RGBA", (136, 128), (0, 0, 0, 0))  # fully transparent black
    out = emoji.to_square(img, 32)
    assert (out == 255).all()


def test_to_square_pads_with_white_and_keeps_content():
    # Opaque red, wider than tall: padding rows (top/bottom) must be white, the centre red.
    img = Image.new("RGBA", (128, 64), (255, 0, 0, 255))
    out = emoji.to_square(img, 32).astype(int)
    assert (out[0] >= 250).all() and (out[-1] >= 250).all()
    centre = out[16, 16]
    assert centre[0] > 240 and centre[1] < 20 and centre[2] < 20


def test_split_heldout_rule():
    gids, images, expected_drop = [], [], set()
    # gid 0 and 16 are held out (disc, bar). 1..4 are recoloured copies of held-out shapes
    # (near-duplicates, must be dropped); 5, 6 are other shapes (kept for training).
    layout = {
        0: ("disc", (255, 200, 0)),
        16: ("bar", (0, 0, 200)),
        1: ("disc", (120, 60, 20)),   # other "skin tone" of gid 0
        2: ("disc", (60, 30, 10)),
        3: ("bar", (200, 0, 0)),
        4: ("bar", (0, 150, 0)),
        5: ("triangle", (0, 100, 200)),
        6: ("cross", (30, 30, 30)),
    }
    for gid, (kind, colour) in sorted(layout.items()):
        gids.append(gid)
        images.append(_shape_image(kind, colour))
        if gid in (1, 2, 3, 4):
            expected_drop.add(gid)
    gids = np.array(gids)
    images = np.stack(images)
    train_idx, held_idx, drop_idx = emoji.split_heldout(gids, images)
    assert set(gids[held_idx]) == {0, 16}
    assert set(gids[drop_idx]) == expected_drop
    assert set(gids[train_idx]) == {5, 6}
    # a partition of all indices, each part sorted
    all_idx = np.concatenate([train_idx, held_idx, drop_idx])
    assert sorted(all_idx.tolist()) == list(range(len(gids)))
    for part in (train_idx, held_idx, drop_idx):
        assert (np.diff(part) > 0).all()


def test_split_heldout_no_heldout_means_all_train():
    gids = np.array([1, 2, 3])
    images = np.stack([_shape_image("disc", (0, 0, 0))] * 3)
    train_idx, held_idx, drop_idx = emoji.split_heldout(gids, images)
    assert train_idx.tolist() == [0, 1, 2]
    assert len(held_idx) == 0 and len(drop_idx) == 0


def test_split_heldout_blank_image_does_not_crash():
    gids = np.array([0, 1])
    images = np.full((2, 32, 32, 3), 255, np.uint8)  # no edges at all
    train_idx, held_idx, drop_idx = emoji.split_heldout(gids, images)
    assert held_idx.tolist() == [0] and train_idx.tolist() == [1] and len(drop_idx) == 0


def test_deterministic_npz(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "size": np.array(32, np.int32)}
    p1, p2 = tmp_path / "x.npz", tmp_path / "y.npz"
    emoji._save_npz_deterministic(p1, arrays)
    emoji._save_npz_deterministic(p2, arrays)
    assert p1.read_bytes() == p2.read_bytes()
    with np.load(p1) as d:
        assert d["a"].tolist() == arrays["a"].tolist() and int(d["size"]) == 32
    with zipfile.ZipFile(p1) as zf:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())


def test_find_emoji_font_error_mentions_apt(monkeypatch):
    monkeypatch.setattr(emoji, "FONT_CANDIDATES", ("/nonexistent/NotoColorEmoji.ttf",))
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        emoji.find_emoji_font()


def _font_or_skip():
    pytest.importorskip("fontTools", reason="fonttools not installed (pip install 'repaint-cli[train]')")
    try:
        return emoji.find_emoji_font()
    except FileNotFoundError:
        pytest.skip("Noto Color Emoji font absent (apt-get install fonts-noto-color-emoji)")


def test_extract_emoji_from_font():
    font = _font_or_skip()
    glyphs = emoji.extract_emoji(font)
    assert len(glyphs) > 1000
    gids = [g for g, _ in glyphs]
    assert gids == sorted(gids) and len(set(gids)) == len(gids)
    gid, img = glyphs[len(glyphs) // 2]
    assert img.mode == "RGBA" and min(img.size) >= 32
    sq = emoji.to_square(img, 32)
    assert sq.shape == (32, 32, 3) and sq.std() > 5  # not blank
