"""Tests for repaint_cli.images.image_files (reading, masks), repaint_cli.files (atomic writes) and
repaint_cli.images.fit (fit / unfit)."""

from __future__ import annotations

import errno
import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from repaint_cli import files as rfiles
from repaint_cli.files import InputError, atomic_path, is_atomic_temp, write_bytes_atomic
from repaint_cli.images.fit import apply_fit, plan_fit, unfit
from repaint_cli.images.image_files import check_mask, read_image, read_mask, write_image_atomic

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


def test_atomic_path_and_bytes(tmp_path):
    out = tmp_path / "deep" / "a.json"
    write_bytes_atomic(out, b'{"a": 1}')
    assert out.read_bytes() == b'{"a": 1}'

    target = tmp_path / "anim.gif"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.suffix == ".gif"
        assert is_atomic_temp(tmp) and not target.exists()
        Image.new("RGB", (3, 3)).save(tmp)  # format picked from the extension
    assert Image.open(target).format == "GIF"

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.mp4") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert not (tmp_path / "b.mp4").exists() and _leftovers(tmp_path) == []
    assert not is_atomic_temp("photo.png") and not is_atomic_temp(".hidden.png")


def test_written_file_mode_respects_umask(tmp_path):
    out = tmp_path / "perm.png"
    write_image_atomic(out, noise(3, 3))
    old = os.umask(0)
    os.umask(old)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~old)


# ------------------------------------------------------------------ fit / unfit

S = 64
SIZES = [(37, 101), (101, 37), (300, 77), (77, 300), (1000, 700), (700, 1000), (64, 64), (20, 33)]


def _hole_mask(h, w, kind):
    keep = np.ones((h, w), bool)
    if kind == "tiny":
        keep[h // 3, (2 * w) // 3] = False  # one pixel
    elif kind == "blob":
        keep[h // 4 : h // 4 + max(1, h // 5), w // 5 : w // 5 + max(1, w // 3)] = False
    elif kind == "corner":
        keep[-3:, -2:] = False
        keep[0, 0] = False
    return keep


def _s_coords(plan, y, x):
    """Where original pixel centres land in the S grid."""
    t, _, l, _ = plan.pad
    y0, _, x0, _ = plan.region
    f = plan.S / plan.padded
    sy = np.floor((y - y0 + t + 0.5) * f).astype(int)
    sx = np.floor((x - x0 + l + 0.5) * f).astype(int)
    return sy, sx


@pytest.mark.parametrize("mode", ["crop", "resize", "pad"])
@pytest.mark.parametrize("kind", ["tiny", "blob", "corner"])
@pytest.mark.parametrize("hw", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_fit_unfit_roundtrip(hw, kind, mode):
    h, w = hw
    rgb = noise(h, w)
    keep = _hole_mask(h, w, kind)
    hole_colour = np.array([255, 0, 255], np.uint8)
    rgb[~keep] = hole_colour  # the "object to remove"
    if mode == "pad" and (h > S or w > S):
        with pytest.raises(InputError) as e:
            plan_fit(keep, S, "pad", path="big.png")
        assert "big.png" in one_line(e) and "--fit crop" in str(e.value)
        return
    plan = plan_fit(keep, S, mode)
    rgb_S, keep_S = apply_fit(plan, rgb, keep)
    assert rgb_S.shape == (S, S, 3) and rgb_S.dtype == np.uint8
    assert keep_S.shape == (S, S) and keep_S.dtype == bool

    # every original hole pixel maps to a hole at S (a 1-pixel hole is not lost)
    ys, xs = np.nonzero(~keep)
    sy, sx = _s_coords(plan, ys, xs)
    assert (~keep_S[sy, sx]).all()
    # no known pixel at S carries content from under the hole
    bg = rgb.copy()
    bg[~keep] = 0
    leak = apply_fit(plan, rgb, keep)[0].astype(int) - apply_fit(plan, bg, keep)[0].astype(int)
    assert not leak[keep_S].any()
    # pixel-exact when no resampling is needed
    if plan.padded == S:
        t, _, l, _ = plan.pad
        y0, y1, x0, x1 = plan.region
        assert np.array_equal(rgb_S[t : t + y1 - y0, l : l + x1 - x0], rgb[y0:y1, x0:x1])
        assert np.array_equal(keep_S[t : t + y1 - y0, l : l + x1 - x0], keep[y0:y1, x0:x1])

    gen = np.array([17, 200, 99], np.uint8)
    sample = np.where(keep_S[..., None], rgb_S, gen).astype(np.uint8)
    out = unfit(plan, sample, rgb, keep)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(out[keep], rgb[keep])  # byte-identical known pixels
    assert not (out[~keep] == hole_colour).all(axis=-1).any()  # every hole pixel was replaced

    const = np.broadcast_to(gen, (S, S, 3)).copy()
    out2 = unfit(plan, const, rgb, keep)
    assert (out2[~keep] == gen).all() and np.array_equal(out2[keep], rgb[keep])


def test_plan_choices():
    big = np.ones((700, 1000), bool)
    big[300, 400] = False
    p = plan_fit(big, 256)
    assert p.mode == "crop" and p.padded == 256 and p.scale == 1.0  # native scale, no resampling
    y0, y1, x0, x1 = p.region
    assert (y1 - y0, x1 - x0) == (256, 256) and y0 <= 300 < y1 and x0 <= 400 < x1

    # large hole: window = box * (1 + 2 * context), shrunk to S
    m = np.ones((700, 1000), bool)
    m[100:200, 600:900] = False  # 100 x 300 box
    p = plan_fit(m, 64, "crop", context=0.5)
    y0, y1, x0, x1 = p.region
    assert (y1 - y0, x1 - x0) == (600, 600) and p.padded == 600
    assert y0 <= 100 and y1 >= 200 and x0 <= 600 and x1 >= 900 and x1 <= 1000 and y0 >= 0

    # hole wider than the image's shorter side: the window covers everything (like resize)
    m = np.ones((100, 1000), bool)
    m[10:20, 50:950] = False
    p = plan_fit(m, 64, "crop")
    assert p.region == (0, 100, 0, 1000) and p.padded == 1000 and p.note

    small = np.ones((30, 50), bool)
    small[5, 5] = False
    p = plan_fit(small, 64, "crop")
    assert p.mode == "pad" and p.requested == "crop" and p.padded == 64
    p = plan_fit(small, 64, "resize")
    assert p.mode == "resize" and p.padded == 50 and p.scale > 1

    with pytest.raises(ValueError):
        plan_fit(small, 64, "stretch")
    with pytest.raises(ValueError):
        plan_fit(small, 64, "crop", context=-1)


def test_unfit_rejects_mismatched_inputs():
    keep = np.ones((40, 50), bool)
    keep[10, 10] = False
    plan = plan_fit(keep, 32, "crop")
    rgb = noise(40, 50)
    with pytest.raises(ValueError):
        unfit(plan, np.zeros((31, 32, 3), np.uint8), rgb, keep)
    with pytest.raises(ValueError):
        apply_fit(plan, noise(41, 50), keep)


def test_uint8_keep_mask_accepted():
    keep = np.full((50, 80), 255, np.uint8)
    keep[20:25, 30:40] = 0
    plan = plan_fit(keep, 32, "resize")
    rgb = noise(50, 80)
    rgb_S, keep_S = apply_fit(plan, rgb, keep)
    out = unfit(plan, rgb_S, rgb, keep)
    assert np.array_equal(out[keep == 255], rgb[keep == 255])
    assert not keep_S.all()
