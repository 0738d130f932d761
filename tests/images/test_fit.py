"""images/fit.py: an image fitted to the model's size (scale, pad, crop) and back."""
from __future__ import annotations
import numpy as np
from repaint_cli import choices
import pytest
from repaint_cli.files import InputError
from repaint_cli.images.fit import apply_fit, plan_fit, unfit


def test_fitting_geometry_lives_in_images_fit():
    from repaint_cli.images import fit, image_files

    for name in ("FitPlan", "plan_fit", "apply_fit", "unfit"):
        assert getattr(fit, name).__module__ == "repaint_cli.images.fit"
    assert fit.FIT_MODES is choices.FIT_MODES
    keep = np.ones((40, 60), bool)
    keep[10:14, 20:30] = False
    plan = fit.plan_fit(keep, 32, "crop")
    rgb_S, keep_S = fit.apply_fit(plan, np.zeros((40, 60, 3), np.uint8), keep)
    assert rgb_S.shape == (32, 32, 3) and not keep_S.all()
    for name in ("_hole_bbox", "_window", "_square_pad", "_pad_reflect", "_hole_at_S", "_check_image"):
        assert not hasattr(image_files, name), name


RNG = np.random.default_rng(1234)


def noise(h, w, c=3):
    return RNG.integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


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
