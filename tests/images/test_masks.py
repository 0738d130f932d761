"""images/masks.py: the generated masks (extreme kinds, boxes, LaMa strokes), their presets and keys; the
`repaint masks` commands are in tests/cli/test_masks.py."""

from __future__ import annotations


import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from repaint_cli.images import masks as M
from repaint_cli.cli.masks import masks_app
from conftest import ROOT

REPO = ROOT
LAMA = ("thick", "medium", "thin")
N_STATS = 1000


# --------------------------------------------------------------------------- #
# Extreme kinds: exact geometry at 256
# --------------------------------------------------------------------------- #


def _kept(mask: np.ndarray) -> np.ndarray:
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 255}
    return mask == 255


def test_ex64_keeps_exactly_centre_64():
    keep = _kept(M.generate_mask("ex64", 256, 256, 0, 0))
    rows, cols = np.nonzero(keep)
    assert rows.min() == 96 and rows.max() == 159
    assert cols.min() == 96 and cols.max() == 159
    assert keep.sum() == 64 * 64
    assert M.hole_fraction(keep.astype(np.uint8) * 255) == pytest.approx(1 - 64 * 64 / 256**2)


def test_genhalf_keeps_left_half():
    keep = _kept(M.generate_mask("genhalf", 256, 256, 0, 0))
    assert keep[:, :128].all()
    assert not keep[:, 128:].any()


def test_nn2_keeps_odd_rows_and_odd_columns():
    keep = _kept(M.generate_mask("nn2", 256, 256, 0, 0))
    expected = np.zeros((256, 256), bool)
    expected[1::2, 1::2] = True
    np.testing.assert_array_equal(keep, expected)
    assert keep.sum() == 128 * 128


def test_ev2li_keeps_odd_rows():
    keep = _kept(M.generate_mask("ev2li", 256, 256, 0, 0))
    assert keep[1::2, :].all()
    assert not keep[0::2, :].any()


@pytest.mark.parametrize("kind", ["ex64", "genhalf", "nn2", "ev2li"])
def test_extreme_kinds_do_not_depend_on_seed(kind):
    a = M.generate_mask(kind, 256, 256, 0, 0)
    b = M.generate_mask(kind, 256, 256, 7, 3)
    np.testing.assert_array_equal(a, b)


def test_box_is_one_rectangle_in_size_range():
    for i in range(50):
        hole = M.generate_mask("box", 256, 256, 0, i) == 0
        rows, cols = np.nonzero(hole)
        h = rows.max() - rows.min() + 1
        w = cols.max() - cols.min() + 1
        assert hole.sum() == h * w  # one solid rectangle
        assert 64 <= h <= 128 and 64 <= w <= 128  # 0.25..0.5 of 256


# --------------------------------------------------------------------------- #
# LaMa kinds: statistics over 1,000 masks at 256
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def lama_fractions():
    return {
        kind: np.array([M.hole_fraction(M.generate_mask(kind, 256, 256, 0, i)) for i in range(N_STATS)])
        for kind in LAMA
    }


@pytest.mark.parametrize("kind,target", [("thick", 0.25), ("thin", 0.30)])
def test_lama_mean_hole_fraction(lama_fractions, kind, target):
    assert abs(lama_fractions[kind].mean() - target) <= 0.03


@pytest.mark.parametrize("kind", LAMA)
def test_lama_holes_within_bounds(lama_fractions, kind):
    fr = lama_fractions[kind]
    assert fr.max() <= 0.5
    assert fr.min() > 0.0


def test_medium_mean_between_sensible_bounds(lama_fractions):
    assert 0.12 < lama_fractions["medium"].mean() < 0.35


def test_thick_mixes_strokes_and_boxes():
    # Box masks are unions of axis-aligned rectangles, so their outer contours
    # have only horizontal/vertical edges; stroke masks (round caps, slanted
    # segments) do not.  Count the box masks among the first 200.
    n_box = 0
    for i in range(200):
        hole = (M.generate_mask("thick", 256, 256, 0, i) == 0).astype(np.uint8)
        contours, _ = cv2.findContours(hole, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        approx = [cv2.approxPolyDP(c, 0, True) for c in contours]
        axis_aligned = all(
            all(p[0][0] == q[0][0] or p[0][1] == q[0][1] for p, q in zip(a, np.roll(a, 1, axis=0))) for a in approx
        )
        n_box += axis_aligned
    # p(boxes) = 0.3 / 1.3 ~ 0.23 -> ~46 of 200
    assert 25 <= n_box <= 70


# --------------------------------------------------------------------------- #
# Determinism
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", list(M.MASK_KINDS))
def test_same_seed_same_mask(kind):
    a = M.generate_mask(kind, 128, 96, 3, 11)
    b = M.generate_mask(kind, 128, 96, 3, 11)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["thick", "medium", "thin", "box"])
def test_different_seeds_and_indices_differ(kind):
    masks = [M.generate_mask(kind, 256, 256, seed, 0).tobytes() for seed in range(5)]
    assert len(set(masks)) == 5
    masks = [M.generate_mask(kind, 256, 256, 0, i).tobytes() for i in range(5)]
    assert len(set(masks)) == 5


def test_prefix_property_via_cli(tmp_path):
    runner = CliRunner()
    r5 = runner.invoke(masks_app, ["generate", "--kind", "thin", "--count", "5", "--out", str(tmp_path / "a")])
    r40 = runner.invoke(masks_app, ["generate", "--kind", "thin", "--count", "40", "--out", str(tmp_path / "b")])
    r_start = runner.invoke(
        masks_app, ["generate", "--kind", "thin", "--count", "3", "--start", "2", "--out", str(tmp_path / "c")]
    )
    assert r5.exit_code == r40.exit_code == r_start.exit_code == 0
    for i in range(5):
        a = (tmp_path / "a" / f"thin_{i:05d}.png").read_bytes()
        b = (tmp_path / "b" / f"thin_{i:05d}.png").read_bytes()
        assert a == b
    for i in range(2, 5):
        assert (tmp_path / "c" / f"thin_{i:05d}.png").read_bytes() == (tmp_path / "a" / f"thin_{i:05d}.png").read_bytes()


def test_known_values_are_stable():
    # Guards against accidental changes to the seeding scheme or the recipe:
    # a change here changes every mask set users have already generated.
    thick = [M.hole_fraction(M.generate_mask("thick", 256, 256, 0, i)) for i in range(3)]
    thin = [M.hole_fraction(M.generate_mask("thin", 256, 256, 0, i)) for i in range(3)]
    assert thick == pytest.approx([0.430573, 0.25174, 0.445496], abs=1e-6)
    assert thin == pytest.approx([0.426636, 0.297928, 0.195129], abs=1e-6)


def test_mask_for_image_is_keyed_by_seed_and_stem():
    from repaint_cli.core.keys import ImageKeys

    a = M.mask_for_image("thick", 256, 256, ImageKeys.of(0, "img_001").mask)
    b = M.mask_for_image("thick", 256, 256, ImageKeys.of(0, "img_001").mask)
    np.testing.assert_array_equal(a, b)
    c = M.mask_for_image("thick", 256, 256, ImageKeys.of(0, "img_002").mask)
    d = M.mask_for_image("thick", 256, 256, ImageKeys.of(1, "img_001").mask)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert a.dtype == np.uint8 and a.shape == (256, 256)
    # Works with a preset path and a params dict too.
    e = M.mask_for_image(str(REPO / "masks" / "thick.yaml"), 256, 256, ImageKeys.of(0, "img_001").mask)
    f = M.mask_for_image({"kind": "thick"}, 256, 256, ImageKeys.of(0, "img_001").mask)
    np.testing.assert_array_equal(a, e)
    np.testing.assert_array_equal(a, f)


# --------------------------------------------------------------------------- #
# Sizes, conventions, presets
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", list(M.MASK_KINDS))
@pytest.mark.parametrize("shape", [(128, 384), (300, 200), (64, 64), (512, 512)])
def test_non_square_sizes(kind, shape):
    h, w = shape
    m = M.generate_mask(kind, h, w, 0, 1)
    assert m.shape == (h, w) and m.dtype == np.uint8
    assert 0.0 < M.hole_fraction(m) < 1.0
    if kind in LAMA:
        assert M.hole_fraction(m) <= 0.5


def test_extreme_kinds_non_square_fractions():
    h, w = 200, 300
    keep = M.generate_mask("ex64", h, w, 0, 0) == 255
    rows, cols = np.nonzero(keep)
    assert (rows.min(), rows.max()) == (75, 124)  # int(200/4) = 50 rows, centred
    assert (cols.min(), cols.max()) == (112, 186)  # int(300/4) = 75 cols from (300-75)//2
    keep = M.generate_mask("genhalf", h, w, 0, 0) == 255
    assert keep[:, :150].all() and not keep[:, 150:].any()
    keep = M.generate_mask("nn2", 5, 7, 0, 0) == 255
    assert keep.sum() == 2 * 3 and keep[1, 1] and keep[3, 5]
    keep = M.generate_mask("ev2li", 5, 7, 0, 0) == 255
    assert keep[[1, 3]].all() and not keep[[0, 2, 4]].any()


def test_lama_scales_with_size():
    # Same seed/index at 512 covers about the same fraction as at 256
    # (geometry scales with min(h, w) / 256).
    f256 = np.mean([M.hole_fraction(M.generate_mask("thick", 256, 256, 0, i)) for i in range(100)])
    f512 = np.mean([M.hole_fraction(M.generate_mask("thick", 512, 512, 0, i)) for i in range(100)])
    assert abs(f256 - f512) < 0.03


def test_to_convention_inverts():
    keep = M.generate_mask("genhalf", 16, 16, 0, 0)
    np.testing.assert_array_equal(M.to_convention(keep, "keep"), keep)
    hole = M.to_convention(keep, "hole")
    np.testing.assert_array_equal(hole, 255 - keep)
    assert hole[:, 8:].min() == 255 and hole[:, :8].max() == 0
    np.testing.assert_array_equal(M.to_convention(hole, "hole"), keep)
    with pytest.raises(M.MaskError):
        M.to_convention(keep, "white")


def test_yaml_presets_match_code_defaults():
    folder = REPO / "masks"
    files = sorted(folder.glob("*.yaml"))
    assert {f.stem for f in files} == set(M.MASK_KINDS)
    for f in files:
        data = yaml.safe_load(f.read_text())
        assert data == M.DEFAULT_PARAMS[f.stem], f.name
        assert M.load_preset(str(f)) == M.DEFAULT_PARAMS[f.stem]
        assert M.load_preset(f.stem) == M.DEFAULT_PARAMS[f.stem]


def test_every_kind_has_description():
    assert set(M.MASK_KINDS) == set(M.DEFAULT_PARAMS)
    assert all(isinstance(v, str) and v and "\n" not in v for v in M.MASK_KINDS.values())


def test_partial_preset_overrides_defaults(tmp_path):
    p = tmp_path / "wide.yaml"
    p.write_text("kind: thin\nstrokes:\n  max_width: 20\n")
    params = M.load_preset(str(p))
    assert params["strokes"]["max_width"] == 20
    assert params["strokes"]["max_times"] == 50
    wider = np.mean([M.hole_fraction(M.generate_mask(params, 256, 256, 0, i)) for i in range(50)])
    thin = np.mean([M.hole_fraction(M.generate_mask("thin", 256, 256, 0, i)) for i in range(50)])
    assert wider > thin


@pytest.mark.parametrize(
    "text",
    [
        "kind: nope\n",
        "strokes: {max_width: 3}\n",
        "kind: thin\nstrokes:\n  max_widht: 20\n",
        "kind: box\nmin_frac: 0.6\nmax_frac: 0.5\n",
        "- just a list\n",
    ],
)
def test_bad_presets_raise_mask_error(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(M.MaskError):
        M.load_preset(str(p))


def test_unknown_kind_and_missing_file():
    with pytest.raises(M.UnknownKindError, match="valid kinds: thick"):
        M.generate_mask("nope", 64, 64, 0, 0)
    with pytest.raises(M.MaskError, match="not found"):
        M.load_preset("no/such/preset.yaml")


def test_impossible_preset_fails_cleanly():
    with pytest.raises(M.MaskError, match="max_hole"):
        M.generate_mask({"kind": "thick", "max_hole": 0.001, "boxes": {"weight": 0}}, 64, 64, 0, 0)


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


# --------------------------------------------------------------------------- #
# Issue 25 D4: no silent overwrite, one error style
# --------------------------------------------------------------------------- #
