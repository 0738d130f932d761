"""images/png_chunks.py: an output keeps its input's pixel format and metadata (tRNS keys, 16 bits, text chunks,
DPI, ICC), through the real inpaint path with the embedded default model and a two-step schedule (issue 32:
S3, S4, N9)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import png_build as pb
from repaint_cli.images.image_files import read_image
from repaint_cli.images.inpaint import inpaint
from repaint_cli.images.options import InpaintOptions, Reporter

FAST = dict(t_T=2, jump_length=1, jump_n_sample=1, device="cpu")
RNG = np.random.default_rng(32)


def keep_mask(h, w):
    keep = np.ones((h, w), bool)
    keep[h // 4: h // 4 + max(1, h // 2), w // 4: w // 4 + max(1, w // 2)] = False
    return keep


def run_one(tmp_path, data: bytes, keep, name="a.png", **kw) -> bytes:
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(data)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.where(keep, 255, 0).astype(np.uint8)).save(mask)
    summary = inpaint([str(src / name)], InpaintOptions(mask=str(mask), out_dir=tmp_path / "out", **FAST, **kw),
                      Reporter())
    assert summary.done == 1, [r.error for r in summary.results]
    return (tmp_path / "out" / (Path(name).stem + ".png")).read_bytes()


# ------------------------------------------------------------------ S3: tRNS colour keys


def test_rgb_trns_transparency_kept(tmp_path):
    rgb = RNG.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    key = (1, 2, 3)
    rgb[0, :3] = key  # transparent pixels, known
    rgb[6, 4] = key  # one in the hole: transparency is never inpainted
    data = pb.pil_bytes(Image.fromarray(rgb), "PNG", transparency=key)
    out = run_one(tmp_path, data, keep_mask(12, 9))
    assert pb.header(out) == (8, 6)  # RGBA
    got = pb.decode(out)
    want_alpha = np.where((rgb == key).all(axis=2), 0, 255)
    assert np.array_equal(got[..., 3], want_alpha)
    keep = keep_mask(12, 9)
    assert np.array_equal(got[..., :3][keep], rgb[keep])


def test_grey16_trns_transparency_kept_at_16_bits(tmp_path):
    g = RNG.integers(0, 65536, (10, 11), dtype=np.uint16)
    g[0, 0] = g[9, 10] = 4242
    data = pb.splice(pb.cv2_png(g), [pb.trns(4242)])
    out = run_one(tmp_path, data, keep_mask(10, 11))
    assert pb.header(out) == (16, 4)  # 16-bit grey + alpha
    got = pb.decode(out)
    assert np.array_equal(got[..., 1], np.where(g == 4242, 0, 65535))
    keep = keep_mask(10, 11)
    assert np.array_equal(got[..., 0][keep], g[keep])


def test_rgb16_trns_transparency_kept(tmp_path):
    rgb = RNG.integers(0, 65536, (9, 8, 3), dtype=np.uint16)
    rgb[8, 7] = (7, 8, 9)
    out = run_one(tmp_path, pb.splice(pb.cv2_png(rgb), [pb.trns((7, 8, 9))]), keep_mask(9, 8))
    assert pb.header(out) == (16, 6)
    got = pb.decode(out)
    assert np.array_equal(got[..., 3], np.where((rgb == (7, 8, 9)).all(axis=2), 0, 65535))


def test_four_bit_grey_trns_transparency_kept(tmp_path):
    """Pillow gives a 4-bit file's key in 4-bit units (its LA conversion then finds no pixel)."""
    g4 = RNG.integers(0, 16, (7, 10), dtype=np.uint8)
    g4[0, 0] = 5
    out = run_one(tmp_path, pb.encode(g4, 0, 4, [pb.trns(5)]), keep_mask(7, 10))
    assert pb.header(out) == (8, 4)
    got = pb.decode(out)
    assert np.array_equal(got[..., 1], np.where(g4 == 5, 0, 255))
    keep = keep_mask(7, 10)
    assert np.array_equal(got[..., 0][keep], (g4 * 17)[keep])


# ------------------------------------------------------------------ S4 and 16 bits


def test_grey_alpha_16bit_stays_grey_alpha_16bit(tmp_path):
    ga = RNG.integers(0, 65536, (13, 7, 2), dtype=np.uint16)
    out = run_one(tmp_path, pb.encode(ga, 4, 16), keep_mask(13, 7))
    assert pb.header(out) == (16, 4)
    got = pb.decode(out)
    keep = keep_mask(13, 7)
    assert np.array_equal(got[..., 1], ga[..., 1])
    assert np.array_equal(got[..., 0][keep], ga[..., 0][keep])
    img = read_image(tmp_path / "out" / "a.png")
    assert img.gray and img.bit_depth == 16


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_16bit_known_pixels_exact_at_16_bits(tmp_path, channels):
    a = RNG.integers(0, 65536, (11, 12, channels), dtype=np.uint16)
    out = run_one(tmp_path, pb.cv2_png(a), keep_mask(11, 12))
    assert pb.header(out) == (16, 2 if channels == 3 else 6)
    got = pb.decode(out)
    keep = keep_mask(11, 12)
    assert np.array_equal(got[keep], a[keep])


def test_16bit_input_no_longer_warns_8bit(tmp_path):
    g = RNG.integers(0, 65536, (8, 8), dtype=np.uint16)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "g.png").write_bytes(pb.cv2_png(g))
    s = inpaint([str(tmp_path / "in" / "g.png")], InpaintOptions(mask="box", out_dir=tmp_path / "out", **FAST), Reporter())
    assert s.done == 1 and not any("8-bit" in w for w in s.results[0].warnings)


# ------------------------------------------------------------------ N9: text chunks, dpi


def test_png_text_chunks_kept(tmp_path):
    rgb = RNG.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    data = pb.splice(pb.cv2_png(rgb), [pb.text("Author", "Ada"), pb.text("Comment", "zipped text", "zTXt"),
                                       pb.text("Title", "Überschrift ✓", "iTXt")])
    out = run_one(tmp_path, data, keep_mask(9, 9))
    with Image.open(tmp_path / "out" / "a.png") as im:
        im.load()
        assert {k: im.text[k] for k in ("Author", "Comment", "Title")} == {
            "Author": "Ada", "Comment": "zipped text", "Title": "Überschrift ✓"}
        assert "repaint" in " ".join(im.text)  # the run's own settings beside them
    assert pb.header(out) == (8, 2)


def test_png_text_chunks_kept_in_16bit_output(tmp_path):
    g = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    data = pb.splice(pb.cv2_png(g), [pb.text("Source", "scanner 4"), pb.text("Note", "ünïcödé ✓", "iTXt")])
    run_one(tmp_path, data, keep_mask(6, 5))
    with Image.open(tmp_path / "out" / "a.png") as im:
        im.load()
        assert im.text["Source"] == "scanner 4" and im.text["Note"] == "ünïcödé ✓"


def test_png_dpi_300_reads_as_300_and_is_written_back_the_same(tmp_path):
    rgb = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(rgb).save(src, dpi=(300, 72))
    assert read_image(src).dpi == (300.0, 72.0)
    out = run_one(tmp_path, src.read_bytes(), keep_mask(8, 8))
    assert dict(pb.chunks_of(out))[b"pHYs"] == dict(pb.chunks_of(src.read_bytes()))[b"pHYs"]
    assert read_image(tmp_path / "out" / "a.png").dpi == (300.0, 72.0)


def test_dpi_kept_in_16bit_output_and_odd_dpi_unchanged(tmp_path):
    g = RNG.integers(0, 65536, (6, 6, 3), dtype=np.uint16)
    data = pb.splice(pb.cv2_png(g), [pb.phys(11811, 11792), pb.chunk(b"gAMA", (45455).to_bytes(4, "big"))])
    out = run_one(tmp_path, data, keep_mask(6, 6))
    chunks = dict(pb.chunks_of(out))
    assert chunks[b"pHYs"] == pb.phys(11811, 11792)[8:-4]
    assert chunks[b"gAMA"] == (45455).to_bytes(4, "big")
    assert read_image(tmp_path / "out" / "a.png").dpi == (300.0, pytest.approx(299.5168))


def test_icc_profile_kept_in_16bit_output(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    g = RNG.integers(0, 65536, (6, 6, 3), dtype=np.uint16)
    run_one(tmp_path, pb.splice(pb.cv2_png(g), [pb.iccp(icc)]), keep_mask(6, 6))
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.info["icc_profile"] == icc


# ------------------------------------------------------------------ N9: --concat under --mask-convention hole


# ------------------------------------------------------------------ found by tests/test_fuzz_images.py
