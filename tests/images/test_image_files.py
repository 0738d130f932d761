"""images/image_files.py: images and masks read (modes, bit depths, conventions, one-line errors) and written
atomically, with their ICC profile and DPI."""

from __future__ import annotations

import errno
import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from repaint_cli import files as rfiles
from repaint_cli.files import InputError, is_atomic_temp, write_bytes_atomic
from repaint_cli.images.image_files import check_mask, read_image, read_mask, write_image_atomic
from PIL import ImageCms
from conftest import write_png
from repaint_cli.images import image_files as imageio
from repaint_cli.images.inpaint import InpaintOptions, inpaint
from pathlib import Path
import png_build as pb
from repaint_cli.images.options import Reporter

RNG = np.random.default_rng(1234)


def noise(h, w, c=3):
    return RNG.integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------ broken inputs


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_file(tmp_path, fmt, ext):
    buf = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buf, fmt)
    data = buf.getvalue()
    p = tmp_path / f"photo.{ext}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        read_image(p)
    msg = one_line(e)
    assert str(p) in msg and "truncated or corrupt" in msg and "re-export" in msg
    with pytest.raises(InputError):
        read_mask(p, "keep")


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n")
    with pytest.raises(InputError) as e:
        read_image(p)
    assert str(p) in one_line(e)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)


# ------------------------------------------------------------------ image modes


def test_rgb_roundtrip(tmp_path):
    rgb = noise(13, 29)
    p = tmp_path / "a.png"
    Image.fromarray(rgb).save(p)
    li = read_image(p)
    assert li.rgb.dtype == np.uint8 and li.rgb.shape == (13, 29, 3)
    assert np.array_equal(li.rgb, rgb) and li.alpha is None and not li.gray
    assert li.mode == "RGB" and li.bit_depth == 8 and li.size == (13, 29)


def test_rgba_alpha_roundtrip(tmp_path):
    rgba = noise(17, 11, 4)
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    li = read_image(p)
    assert li.mode == "RGBA"
    assert np.array_equal(li.rgb, rgba[..., :3]) and np.array_equal(li.alpha, rgba[..., 3])
    out = tmp_path / "out" / "b.png"
    assert write_image_atomic(out, li.rgb, li.alpha) == []
    back = Image.open(out)
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back), rgba)


def test_gray_L_written_back_as_L(tmp_path):
    g = noise(9, 14, 0)
    p = tmp_path / "g.png"
    Image.fromarray(g, "L").save(p)
    li = read_image(p)
    assert li.gray and li.mode == "L" and li.alpha is None
    assert all(np.array_equal(li.rgb[..., c], g) for c in range(3))
    out = tmp_path / "g_out.png"
    write_image_atomic(out, li.rgb, gray=li.gray)
    back = Image.open(out)
    assert back.mode == "L" and np.array_equal(np.asarray(back), g)


def test_gray_LA(tmp_path):
    la = noise(8, 6, 2)
    p = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(p)
    li = read_image(p)
    assert li.gray and np.array_equal(li.rgb[..., 1], la[..., 0]) and np.array_equal(li.alpha, la[..., 1])
    out = tmp_path / "la_out.png"
    write_image_atomic(out, li.rgb, li.alpha, gray=True)
    back = Image.open(out)
    assert back.mode == "LA" and np.array_equal(np.asarray(back), la)


def test_palette_with_transparency(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9))
    p = tmp_path / "p.png"
    im.save(p, transparency=1)
    li = read_image(p)
    assert li.mode == "P" and not li.gray
    assert li.alpha is not None and np.array_equal(li.alpha, np.where(idx == 1, 0, 255))
    assert tuple(li.rgb[0, 0]) == (10, 20, 30) and tuple(li.rgb[0, 2]) == (0, 255, 0)


def test_one_bit(tmp_path):
    bits = RNG.integers(0, 2, size=(10, 12)).astype(bool)
    p = tmp_path / "b.png"
    Image.fromarray(bits).save(p)
    li = read_image(p)
    assert li.mode == "1" and li.bit_depth == 1 and li.gray
    assert np.array_equal(li.rgb[..., 0], np.where(bits, 255, 0))


def test_16bit_gray_scaled(tmp_path):
    vals = np.array([[0, 128, 129, 257, 385, 386, 1000, 32767, 32768, 65407, 65535]], np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(vals).save(p)
    li = read_image(p)
    assert li.bit_depth == 16 and li.gray
    expected = np.floor(vals / 257 + 0.5).astype(np.uint8)
    assert np.array_equal(li.rgb[..., 0], expected)


def test_16bit_colour_png_scaled_not_truncated(tmp_path):
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[0, 0] = (1000, 40000, 65535)  # Pillow alone would give (3, 156, 255)
    rgb16[1, 2] = (385, 386, 128)
    p = tmp_path / "c16.png"
    cv2.imwrite(str(p), rgb16[..., ::-1])
    li = read_image(p)
    assert li.bit_depth == 16 and not li.gray and li.alpha is None
    assert np.array_equal(li.rgb, np.floor(rgb16 / 257 + 0.5).astype(np.uint8))
    assert tuple(li.rgb[0, 0]) == (4, 156, 255)

    rgba16 = np.dstack([rgb16, np.full((2, 3), 30000, np.uint16)])
    p2 = tmp_path / "c16a.png"
    cv2.imwrite(str(p2), rgba16[..., [2, 1, 0, 3]])
    li2 = read_image(p2)
    assert np.array_equal(li2.rgb, li.rgb) and np.all(li2.alpha == 117)


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(p, quality=95)
    li = read_image(p)
    assert li.mode == "CMYK" and li.rgb.shape == (8, 16, 3) and li.icc_profile is None
    r, g, b = li.rgb.reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 25 and b < 25


def test_exif_rotated_jpeg(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # H=20, W=40
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    p = tmp_path / "rot.jpg"
    Image.fromarray(stored).save(p, exif=exif.tobytes(), quality=95)
    li = read_image(p)
    assert li.rgb.shape == (40, 20, 3)  # dims swapped
    top, bottom = li.rgb[:17].astype(int), li.rgb[23:].astype(int)
    assert (top[..., 0] > 200).all() and (top[..., 2] < 60).all()  # left -> top
    assert (bottom[..., 2] > 200).all() and (bottom[..., 0] < 60).all()


def test_first_frame_of_animation_warns(tmp_path):
    frames = [Image.new("RGB", (5, 5), c) for c in ((255, 0, 0), (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    li = read_image(p)
    assert li.rgb.shape == (5, 5, 3) and any("frames" in w for w in li.warnings)


# ------------------------------------------------------------------ masks


def _white_pattern(h=12, w=15):
    white = np.zeros((h, w), bool)
    white[3:8, 4:11] = True
    return white


def _save_mask(p, white, kind):
    u8 = white.astype(np.uint8) * 255
    if kind == "L":
        im = Image.fromarray(u8, "L")
    elif kind == "RGB":
        im = Image.fromarray(np.dstack([u8] * 3), "RGB")
    elif kind == "RGBA-opaque":
        im = Image.fromarray(np.dstack([u8] * 3 + [np.full_like(u8, 255)]), "RGBA")
    elif kind == "RGBA-white-strokes":  # white strokes on a transparent layer
        im = Image.fromarray(np.dstack([u8] * 4), "RGBA")
    elif kind == "RGBA-black-strokes":  # black strokes on a transparent layer
        im = Image.fromarray(np.dstack([np.zeros_like(u8)] * 3 + [u8]), "RGBA")
    elif kind == "1":
        im = Image.fromarray(white)
    elif kind == "I;16":
        im = Image.fromarray(white.astype(np.uint16) * 65535)
    elif kind == "LA":
        im = Image.fromarray(np.dstack([u8, np.full_like(u8, 255)]), "LA")
    elif kind == "P":
        im = Image.fromarray(white.astype(np.uint8), "P")
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 750)
    else:  # pragma: no cover
        raise AssertionError(kind)
    im.save(p)


MASK_KINDS = ["L", "RGB", "RGBA-opaque", "RGBA-white-strokes", "RGBA-black-strokes", "1", "I;16", "LA", "P"]


@pytest.mark.parametrize("convention", ["keep", "hole"])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mask_modes_and_conventions(tmp_path, kind, convention):
    white = _white_pattern()
    p = tmp_path / "m.png"
    _save_mask(p, white, kind)
    keep, warnings = read_mask(p, convention)
    assert keep.dtype == bool and keep.shape == white.shape
    assert np.array_equal(keep, white if convention == "keep" else ~white)
    assert warnings == []


def test_mask_16bit_threshold(tmp_path):
    vals = np.array([[0, 32767, 32768, 65535] * 50], np.uint16)  # binary-ish: 50% non-binary
    p = tmp_path / "m16.png"
    Image.fromarray(vals).save(p)
    keep, warnings = read_mask(p, "keep")
    assert np.array_equal(keep[0, :4], [False, False, True, True])
    assert any("not binary" in w for w in warnings)


def test_mask_bad_convention(tmp_path):
    p = tmp_path / "m.png"
    _save_mask(p, _white_pattern(), "L")
    with pytest.raises(ValueError):
        read_mask(p, "white")


def test_mask_other_size_resized_with_warning(tmp_path):
    white = np.zeros((10, 20), bool)
    white[:, 10:] = True
    p = tmp_path / "m.png"
    _save_mask(p, white, "L")
    keep, warnings = read_mask(p, "hole", size=(30, 40))
    assert keep.shape == (30, 40)
    assert keep[:, :20].all() and not keep[:, 20:].any()
    assert len(warnings) == 1 and "20x10" in warnings[0] and "40x30" in warnings[0] and str(p) in warnings[0]
    _, same = read_mask(p, "hole", size=(10, 20))
    assert same == []


def test_mask_nonbinary(tmp_path):
    grad = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    p = tmp_path / "soft.png"
    Image.fromarray(grad, "L").save(p)
    keep, warnings = read_mask(p, "keep")
    assert np.array_equal(keep[0], np.arange(256) > 127)
    assert any("not binary" in w for w in warnings)

    # a few soft edge pixels (< 1 %) are normal: no warning
    m = np.zeros((100, 100), np.uint8)
    m[40:60, 40:60] = 255
    m[39, 40:60] = 128  # 20 px = 0.2 %
    p2 = tmp_path / "edges.png"
    Image.fromarray(m, "L").save(p2)
    keep2, w2 = read_mask(p2, "keep")
    assert w2 == [] and keep2[39, 50] and not keep2[38, 50]


def test_check_mask_empty_and_full(tmp_path):
    p = tmp_path / "m.png"
    full_keep = np.ones((4, 5), bool)
    with pytest.raises(InputError) as e:
        check_mask(full_keep, p)
    msg = one_line(e)
    assert str(p) in msg and "no hole" in msg and "--mask-convention" in msg
    with pytest.raises(InputError, match="keeps no pixel"):
        check_mask(np.zeros((4, 5), bool), p)
    with pytest.raises(InputError, match="no hole"):
        check_mask(np.full((4, 5), 255, np.uint8), p)
    w = check_mask(full_keep, p, allow_empty=True)
    assert len(w) == 1 and "no hole" in w[0]
    w = check_mask(np.zeros((4, 5), bool), p, allow_empty=True)
    assert len(w) == 1 and "keeps no pixel" in w[0]
    ok = full_keep.copy()
    ok[1, 1] = False
    assert check_mask(ok, p) == []


# ------------------------------------------------------------------ atomic writes


def _leftovers(folder):
    return [n for n in os.listdir(folder) if is_atomic_temp(n) or ".tmp" in n]


def test_write_leaves_no_temp_and_formats(tmp_path):
    rgb = noise(7, 9)
    for ext in ("png", "bmp", "tif", "webp"):
        out = tmp_path / f"x.{ext}"
        write_image_atomic(out, rgb)
        assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), rgb), ext  # lossless
    out = tmp_path / "x.jpg"
    w = write_image_atomic(out, rgb, alpha=np.full((7, 9), 255, np.uint8))
    assert Image.open(out).format == "JPEG" and len(w) == 1 and "alpha" in w[0]
    assert _leftovers(tmp_path) == []
    with pytest.raises(InputError, match="extension"):
        write_image_atomic(tmp_path / "x.nope", rgb)


def test_write_exception_midway_removes_temp_and_keeps_old(tmp_path, monkeypatch):
    out = tmp_path / "res.png"
    out.write_bytes(b"old result")

    def boom(self, fp, *args, **kwargs):
        fp.write(b"partial data")
        raise OSError(errno.EIO, "simulated encoder failure")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="simulated"):
        write_image_atomic(out, noise(5, 5))
    assert out.read_bytes() == b"old result"
    assert sorted(os.listdir(tmp_path)) == ["res.png"]


def test_unwritable_dir_raises_input_error(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        ro.chmod(0o500)
    else:  # root ignores permissions: simulate the refusal

        def refuse(final):
            raise PermissionError(errno.EACCES, "Permission denied", str(final))

        monkeypatch.setattr(rfiles, "_create_temp", refuse)
    try:
        with pytest.raises(InputError) as e:
            write_image_atomic(ro / "x.png", noise(4, 4))
        msg = one_line(e)
        assert str(ro) in msg and "permission" in msg.lower()
    finally:
        ro.chmod(0o700)
    assert os.listdir(ro) == []


def test_parent_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError):
        write_bytes_atomic(f / "sub" / "x.json", b"{}")


# ------------------------------------------------------------------ fit / unfit

S = 64
SIZES = [(37, 101), (101, 37), (300, 77), (77, 300), (1000, 700), (700, 1000), (64, 64), (20, 33)]


FAST = dict(mask="box", t_T=4, jump_length=2, jump_n_sample=1)


def opts(ckpt, out, **kw):
    return InpaintOptions(**{**FAST, "model": str(ckpt), "out_dir": out, **kw})


def test_icc_profile_and_dpi_are_kept(tmp_path, small_checkpoint):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(imgs / "managed.png", icc_profile=icc, dpi=(300, 300))
    Image.fromarray(rgb).save(imgs / "photo.jpg", icc_profile=icc, dpi=(72, 72), quality=95)
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out"))
    assert summary.done == 2
    for name in ("managed.png", "photo.png"):
        with Image.open(tmp_path / "out" / name) as out:
            assert out.info.get("icc_profile") == icc, name
        assert imageio.read_image(tmp_path / "out" / name).dpi == pytest.approx(
            (300, 300) if name == "managed.png" else (72, 72), abs=0.01)


def test_an_image_without_profile_or_dpi_gets_none(tmp_path):
    write_png(tmp_path / "plain.png", np.zeros((4, 4, 3)))
    img = imageio.read_image(tmp_path / "plain.png")
    assert img.icc_profile is None and img.dpi is None
    imageio.write_image_atomic(tmp_path / "copy.png", img.rgb, icc_profile=img.icc_profile, dpi=img.dpi)
    with Image.open(tmp_path / "copy.png") as out:
        assert "icc_profile" not in out.info and "dpi" not in out.info


FAST_PNG_CHUNKS = dict(t_T=2, jump_length=1, jump_n_sample=1, device="cpu")


RNG_PNG_CHUNKS = np.random.default_rng(32)


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
    summary = inpaint([str(src / name)], InpaintOptions(mask=str(mask), out_dir=tmp_path / "out", **FAST_PNG_CHUNKS, **kw),
                      Reporter())
    assert summary.done == 1, [r.error for r in summary.results]
    return (tmp_path / "out" / (Path(name).stem + ".png")).read_bytes()


def test_tiff_without_resolution_gets_no_dpi(tmp_path):
    """Pillow reads (1, 1) for a TIFF with no resolution tags; it was written into the output as 1 dpi."""
    Image.fromarray(RNG_PNG_CHUNKS.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(tmp_path / "a.tif")
    assert read_image(tmp_path / "a.tif").dpi is None
    Image.fromarray(RNG_PNG_CHUNKS.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(tmp_path / "b.tif", dpi=(300, 200))
    assert read_image(tmp_path / "b.tif").dpi == (300, 200)


def test_jpeg_with_exif_but_no_resolution_gets_no_dpi(tmp_path):
    """Pillow fills in (72, 72) for a JPEG whose EXIF has no resolution; it was written as 72 dpi."""
    ex = Image.Exif()
    ex[0x0112] = 6
    img = Image.fromarray(RNG_PNG_CHUNKS.integers(0, 256, (5, 6, 3), dtype=np.uint8))
    data = pb.pil_bytes(img, "JPEG", exif=ex)
    out = run_one(tmp_path, data, keep_mask(6, 5), name="a.jpg")
    assert b"pHYs" not in dict(pb.chunks_of(out))
    (tmp_path / "c.jpg").write_bytes(pb.pil_bytes(img, "JPEG", exif=ex, dpi=(150, 150)))
    assert read_image(tmp_path / "c.jpg").dpi == (150, 150)


@pytest.mark.parametrize("shape,space", [((6, 6), "sRGB"), ((6, 6, 3), "LAB")])
def test_16bit_png_with_a_mismatched_profile_reads_without_libpng_warnings(tmp_path, capfd, shape, space):
    """OpenCV's libpng printed 'libpng warning: iCCP: ...' to the terminal for such a file."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes()
    a = RNG_PNG_CHUNKS.integers(0, 65536, shape, dtype=np.uint16)
    (tmp_path / "g.png").write_bytes(pb.splice(pb.cv2_png(a), [pb.iccp(icc)]))
    img = read_image(tmp_path / "g.png")
    assert "libpng" not in capfd.readouterr().err
    assert img.icc_profile == icc


def test_a_conversion_error_in_pillow_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    """A fuzz run (under -W error) saw Pillow's convert raise ValueError ('Transparency for P mode
    should be bytes or int'); it escaped read_image and would have stopped the run."""
    from repaint_cli.files import InputError

    img = Image.fromarray(RNG_PNG_CHUNKS.integers(0, 4, (4, 4), dtype=np.uint8), "P")
    img.putpalette(bytes(range(12)))
    img.save(tmp_path / "p.png", transparency=1)

    def broken(self, *a, **k):
        raise ValueError("Transparency for P mode should be bytes or int")

    monkeypatch.setattr(Image.Image, "convert", broken)
    with pytest.raises(InputError) as e:
        read_image(tmp_path / "p.png")
    assert "\n" not in str(e.value) and "p.png" in str(e.value) and "ValueError" in str(e.value)
