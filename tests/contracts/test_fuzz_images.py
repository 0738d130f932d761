"""Property-based round trips of image files through the real inpaint path (issue 32).

Generated inputs: PNGs of every colour type and bit depth (1, 2, 4, 8, 16 bits; grey, grey+alpha,
palette with and without transparency, RGB, RGBA, ``tRNS`` colour keys), JPEG, TIFF and WebP;
EXIF orientations, ICC profiles, resolutions, PNG text and gAMA chunks; odd sizes (1xN, primes,
tiny, non-square) and random masks in either convention.  Each goes through ``inpaint()`` (what
``repaint inpaint`` calls) with the embedded default model and a two-step schedule, and the
output file is read back independently (OpenCV and the PNG bytes) to check: every known pixel
exact in the input's own sample values, grey/colour, bit depth and alpha kept, the ICC profile,
resolution, text and colour chunks kept, EXIF orientation applied (and not written); or, for a
mask with no hole or no known pixel, one line naming the file and no output.

The suite runs 25 examples; `make fuzz` runs rounds until its share of FUZZ_MINUTES is spent.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image, ImageCms, PngImagePlugin

import png_build as pb
from conftest import run_fuzz
from repaint_cli.images.inpaint import inpaint
from repaint_cli.images.options import InpaintOptions, Reporter

pytestmark = pytest.mark.fuzz

FAST = dict(t_T=2, jump_length=1, jump_n_sample=1, device="cpu")
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

# kind: (grey, bit depth of the output)
KINDS = {
    "png1": (True, 8), "png2": (True, 8), "png4": (True, 8), "L": (True, 8), "LA": (True, 8), "P": (False, 8),
    "RGB": (False, 8), "RGBA": (False, 8), "I16": (True, 16), "GA16": (True, 16), "RGB16": (False, 16),
    "RGBA16": (False, 16), "jpeg": (False, 8), "jpegL": (True, 8), "tiff": (False, 8), "tiffI16": (True, 16),
    "webp": (False, 8),
}
TRNS_KINDS = {"png1", "png2", "png4", "L", "RGB", "I16", "RGB16"}
SIDES = st.one_of(st.integers(1, 6), st.sampled_from([7, 11, 13, 17, 23, 29, 31, 32, 33, 37, 41]))


@dataclass
class Case:
    kind: str
    data: bytes  # the input file
    ext: str
    truth: np.ndarray  # display orientation, the file's own values: (H, W) grey or (H, W, 3) colour
    alpha: np.ndarray | None  # display orientation, at the output's depth; None: opaque output expected
    keep: np.ndarray  # bool, display orientation
    convention: str
    fit: str
    icc: bytes | None = None
    ppm: tuple[int, int] | None = None  # the output's expected pHYs
    text: dict = field(default_factory=dict)
    gama: bytes | None = None
    orientation: int = 1
    damaged: bool = False  # bytes cut off or changed: the image is done or fails with one line


def _text_items():
    key = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12)
    latin = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=40)
    uni = st.text(st.characters(min_codepoint=32, exclude_categories=("Cs", "Cc")), max_size=40)
    item = st.one_of(st.tuples(key, latin, st.sampled_from(["tEXt", "zTXt"])), st.tuples(key, uni, st.just("iTXt")))
    return st.lists(item, max_size=3, unique_by=lambda t: t[0]).map(
        lambda items: [t for t in items if t[0] != "repaint"])


@st.composite
def cases(draw) -> Case:
    kind = draw(st.sampled_from(sorted(KINDS)))
    h, w = draw(SIDES), draw(SIDES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    with_trns = kind in TRNS_KINDS and draw(st.booleans())
    orientation = draw(st.sampled_from([1, 1, 2, 3, 4, 5, 6, 7, 8])) if kind not in ("tiff", "tiffI16") else 1
    icc = draw(st.sampled_from([None, SRGB, b"not a real profile \x00\x01\x02"]))
    meta = dict(icc=icc, orientation=orientation)
    if kind in ("jpeg", "jpegL", "tiff", "tiffI16", "webp"):
        truth, alpha, data, ext, ppm = _other_format(kind, h, w, rng, draw, meta)
        meta["ppm"] = ppm
    else:
        truth, alpha, data = _png_pixels(kind, h, w, rng, draw, with_trns)
        ppm = draw(st.none() | st.tuples(st.integers(1, 60000), st.integers(1, 60000)))
        text = draw(_text_items())
        gama = draw(st.none() | st.integers(1, 200000).map(lambda g: g.to_bytes(4, "big")))
        extra = [pb.iccp(icc)] if icc else []
        extra += [pb.phys(*ppm)] if ppm else []
        extra += [pb.chunk(b"gAMA", gama)] if gama else []
        extra += [pb.exif_orientation(orientation)] if orientation != 1 else []
        extra += [pb.text(k, v, how) for k, v, how in text]
        data, ext = pb.splice(data, extra), ".png"
        meta.update(ppm=ppm, text={k: v for k, v, _ in text}, gama=gama)
    truth = pb.orient(truth, orientation)
    alpha = None if alpha is None else pb.orient(alpha, orientation)
    dh, dw = truth.shape[:2]
    keep = _mask(draw, rng, dh, dw)
    damage = draw(st.sampled_from(["none"] * 8 + ["cut", "flip"]))
    if damage == "cut":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return Case(kind, data, ext, truth, alpha, keep, draw(st.sampled_from(["keep", "hole"])),
                draw(st.sampled_from(["crop", "resize"])), damaged=damage != "none", **meta)


def _mask(draw, rng, h, w) -> np.ndarray:
    how = draw(st.sampled_from(["box", "noise", "all-keep", "all-hole"]))
    if how == "all-keep":
        return np.ones((h, w), bool)
    if how == "all-hole":
        return np.zeros((h, w), bool)
    if how == "noise":
        return rng.random((h, w)) < draw(st.floats(0.05, 0.95))
    y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
    keep = np.ones((h, w), bool)
    keep[y0:y0 + int(rng.integers(1, h + 1)), x0:x0 + int(rng.integers(1, w + 1))] = False
    return keep


def _key_in(samples: np.ndarray, rng) -> tuple:
    """A transparent key that some pixel has (the first pixel's value, also put at a random pixel)."""
    y, x = int(rng.integers(0, samples.shape[0])), int(rng.integers(0, samples.shape[1]))
    samples[y, x] = samples[0, 0]
    return samples[0, 0]


def _png_pixels(kind, h, w, rng, draw, with_trns):
    """(truth, alpha, PNG bytes) for a PNG kind: truth in the output's sample values."""
    if kind in ("png1", "png2", "png4"):
        bits = int(kind[3])
        s = rng.integers(0, 2**bits, (h, w))
        key = _key_in(s, rng) if with_trns else None
        data = pb.encode(s, 0, bits, [pb.trns(key)] if with_trns else [])
        return s * (255 // (2**bits - 1)), _key_alpha(s, key, 255), data
    if kind == "I16" or kind == "RGB16":
        s = rng.integers(0, 65536, (h, w) if kind == "I16" else (h, w, 3), dtype=np.uint16)
        key = _key_in(s, rng) if with_trns else None
        data = pb.cv2_png(s)
        return s, _key_alpha(s, key, 65535), pb.splice(data, [pb.trns(key)]) if with_trns else data
    if kind in ("GA16", "RGBA16"):
        s = rng.integers(0, 65536, (h, w, 2 if kind == "GA16" else 4), dtype=np.uint16)
        data = pb.encode(s, 4, 16) if kind == "GA16" else pb.cv2_png(s)
        return s[..., :-1].squeeze(-1) if kind == "GA16" else s[..., :3], s[..., -1], data
    if kind == "P":
        n = draw(st.integers(1, 256))
        palette = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        idx = rng.integers(0, n, (h, w), dtype=np.uint8)
        img = Image.fromarray(idx, "P")
        img.putpalette(palette.tobytes())
        how = draw(st.sampled_from(["none", "index", "table"]))
        if how == "none":
            return palette[idx], None, pb.pil_bytes(img, "PNG")
        table = np.full(n, 255, np.uint8)
        if how == "index":
            table[int(idx[0, 0])] = 0
            return palette[idx], table[idx], pb.pil_bytes(img, "PNG", transparency=int(idx[0, 0]))
        table = rng.integers(0, 256, n, dtype=np.uint8)
        return palette[idx], table[idx], pb.pil_bytes(img, "PNG", transparency=table.tobytes())
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[kind]
    s = rng.integers(0, 256, (h, w, channels), dtype=np.uint8).squeeze(-1) if channels == 1 else \
        rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if kind in ("L", "RGB"):
        key = _key_in(s, rng) if with_trns else None
        data = pb.pil_bytes(Image.fromarray(s), "PNG")
        return s, _key_alpha(s, key, 255), pb.splice(data, [pb.trns(key)]) if with_trns else data
    return s[..., :-1].squeeze(-1) if kind == "LA" else s[..., :3], s[..., -1], pb.pil_bytes(Image.fromarray(s), "PNG")


def _key_alpha(s: np.ndarray, key, opaque: int):
    if key is None:
        return None
    match = s == key if s.ndim == 2 else (s == key).all(axis=2)
    return np.where(match, 0, opaque)


def _other_format(kind, h, w, rng, draw, meta):
    """(truth, alpha, bytes, extension, expected pHYs) for JPEG, TIFF and WebP inputs; the truth of
    a lossy file is its decoded pixels (by Pillow, not by the code under test)."""
    dpi = draw(st.none() | st.tuples(st.integers(1, 2400), st.integers(1, 2400)))
    save = {"dpi": dpi} if dpi else {}
    if meta["icc"]:
        save["icc_profile"] = meta["icc"]
    if meta["orientation"] != 1:
        ex = Image.Exif()
        ex[0x0112] = meta["orientation"]
        save["exif"] = ex
    ppm = tuple(int(v / 0.0254 + 0.5) for v in dpi) if dpi else None
    if kind == "tiffI16":
        s = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        return s, None, pb.pil_bytes(Image.fromarray(s), "TIFF", **save), ".tif", ppm
    mode = {"jpegL": "L", "webp": "RGBA"}.get(kind, "RGB")
    s = rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
    img = Image.fromarray(s.squeeze(-1) if mode == "L" else s, mode)
    fmt, ext = {"jpeg": ("JPEG", ".jpg"), "jpegL": ("JPEG", ".jpg"), "tiff": ("TIFF", ".tif"),
                "webp": ("WEBP", ".webp")}[kind]
    if fmt == "WEBP":
        save.pop("dpi", None)
        save["lossless"], ppm = True, None
    data = pb.pil_bytes(img, fmt, **save)
    import io
    with Image.open(io.BytesIO(data)) as back:
        decoded = np.asarray(back.convert(mode))
    if mode == "RGBA":
        return decoded[..., :3], decoded[..., 3], data, ext, ppm
    return decoded, None, data, ext, ppm


def check(case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / f"img{case.ext}"
        src.write_bytes(case.data)
        white = case.keep if case.convention == "keep" else ~case.keep
        Image.fromarray(np.where(white, 255, 0).astype(np.uint8)).save(tmp / "mask.png")
        opts = InpaintOptions(mask=str(tmp / "mask.png"), mask_convention=case.convention, fit=case.fit,
                              out_dir=tmp / "out", **FAST)
        summary = inpaint([str(src)], opts, Reporter())
        (result,) = summary.results
        out = tmp / "out" / "img.png"
        if case.damaged:  # whatever the decoder makes of it, or one line naming the file
            named = str(src) in (result.error or "") or str(tmp / "mask.png") in (result.error or "")
            assert result.status == "done" or ("\n" not in result.error and named and not out.exists()), result.error
            return
        if case.keep.all() or not case.keep.any():  # nothing to inpaint, or nothing to go on
            assert result.status == "failed" and "\n" not in result.error
            assert str(src) in result.error or str(tmp / "mask.png") in result.error
            assert not out.exists()
            return
        assert result.status == "done", result.error
        check_output(case, out.read_bytes())


def check_output(case: Case, data: bytes) -> None:
    grey, depth = KINDS[case.kind]
    got_depth, ctype = pb.header(data)
    has_alpha = case.alpha is not None
    assert (got_depth, ctype) == (depth, {(True, False): 0, (True, True): 4, (False, False): 2,
                                          (False, True): 6}[grey, has_alpha])
    got = pb.decode(data)
    pixels, alpha = (got[..., :-1], got[..., -1]) if has_alpha else (got, None)
    pixels = pixels.squeeze(-1) if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    assert pixels.shape[:2] == case.truth.shape[:2]
    assert np.array_equal(pixels[case.keep], case.truth[case.keep])
    if has_alpha:
        assert np.array_equal(alpha, case.alpha)
    chunks = pb.chunks_of(data)
    kinds = [k for k, _ in chunks]
    assert b"eXIf" not in kinds  # orientation applied to the pixels; EXIF is not copied
    found = dict(chunks)
    assert (b"pHYs" in found) == (case.ppm is not None)
    if case.ppm:
        assert found[b"pHYs"][:8] == np.array(case.ppm, ">u4").tobytes() and found[b"pHYs"][8] == 1
    assert found.get(b"gAMA") == case.gama
    with Image.open(__import__("io").BytesIO(data)) as img:
        img.load()
        assert img.info.get("icc_profile") == case.icc
        text = dict(img.text)
    for key, value in case.text.items():
        assert text.get(key) == value, key
    assert isinstance(text.get("repaint"), (str, PngImagePlugin.iTXt))


def test_fuzz_image_round_trips():
    examples = [0]

    @given(case=cases())
    def image_round_trip(case):
        examples[0] += 1
        check(case)

    run_fuzz(image_round_trip, share=0.5, examples=examples)
