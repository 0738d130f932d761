"""Issue 32: masks paired by their path (S2, S12, the -r fallback), early refusals before the model loads (N5),
the convention question (N6), stdin's names (N8 -0, L1) and the unquoted glob in one line (N9)."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import write_png
from repaint_cli.cli.app import app

runner = CliRunner()
FAST = ["--t-T", 5, "--jump-n-sample", 1]


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def image(path, size=(16, 16), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.random.default_rng(seed).integers(0, 256, (*size, 3)))
    return path


def mask(path, box, size=(16, 16), white_is_keep=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.full(size, 255 if white_is_keep else 0, np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 0 if white_is_keep else 255
    write_png(path, m)
    return path


def records(r):
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def model_args(small_checkpoint):
    return ["--model", small_checkpoint, *FAST]


def test_a_recursive_mask_glob_pairs_by_relative_path(tmp_path, model_args, monkeypatch):
    """S2: 'masks/**/*.png' indexed masks by bare stem: in/x/a.png got masks/y/a.png."""
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "in/x/a.png"), image(tmp_path / "in/y/a.png", seed=1)
    mask(tmp_path / "masks/x/a.png", (2, 6, 2, 6)), mask(tmp_path / "masks/y/a.png", (8, 12, 8, 12))
    r = invoke("inpaint", "-r", "in", "--mask", "masks/**/*.png", "--out", "out", "--json", *model_args)
    assert r.exit_code == 0, r.output
    assert {rec["input"]: rec["mask"] for rec in records(r)} == {"in/x/a.png": "masks/x/a.png",
                                                                  "in/y/a.png": "masks/y/a.png"}


def test_a_missing_mirrored_mask_is_not_replaced_by_another_folders(tmp_path, model_args, monkeypatch):
    """The documented -r risk, decided: where the masks mirror the images' folders, an image takes only its own."""
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "in/x/a.png"), image(tmp_path / "in/y/b.png", seed=1)
    mask(tmp_path / "masks/a.png", (2, 6, 2, 6)), mask(tmp_path / "masks/y/b.png", (8, 12, 8, 12))
    r = invoke("inpaint", "-r", "in", "--mask", "masks", "--out", "out", "--json", *model_args)
    assert r.exit_code == 1, r.output
    by_input = {rec["input"]: rec for rec in records(r)}
    assert by_input["in/y/b.png"]["mask"] == "masks/y/b.png"
    assert by_input["in/x/a.png"]["status"] == "failed" and "no mask named x/a.*" in by_input["in/x/a.png"]["error"]


def test_a_flat_mask_folder_serves_a_recursive_scan_and_says_so(tmp_path, model_args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image(tmp_path / "in/x/a.png")
    mask(tmp_path / "flat/a.png", (2, 6, 2, 6))
    r = invoke("inpaint", "-r", "in", "--mask", "flat", "--out", "out", "--json", *model_args)
    assert r.exit_code == 0, r.output
    assert records(r)[0]["mask"] == "flat/a.png"
    assert ("1 image(s) in sub-folders take the top-level mask of their stem, as flat has no sub-folders "
            "(first: in/x/a.png <- flat/a.png)") in r.stderr


def test_a_previous_out_with_save_mask_pairs_each_image_with_its_mask_not_its_output(tmp_path, model_args):
    """S12: --mask OUT (written with --save-mask) paired a.png with the inpainted OUT/a.png."""
    image(tmp_path / "in/a.png")
    mask(tmp_path / "m/a.png", (2, 6, 2, 6))
    first = tmp_path / "first"
    r = invoke("inpaint", tmp_path / "in", "--mask", tmp_path / "m", "--out", first, "--save-mask", *model_args)
    assert r.exit_code == 0, r.output
    r = invoke("inpaint", tmp_path / "in", "--mask", first, "--out", tmp_path / "second", "--json", *model_args)
    assert r.exit_code == 0, r.output
    assert records(r)[0]["mask"] == str(first / "a_mask.png")
    assert "the one named as a mask is used" in r.stderr and "not binary" not in r.stderr


def test_no_image_with_a_mask_stops_before_the_model_loads(tmp_path, monkeypatch):
    """N5: 'masks generate' names masks thick_00000.png; --mask genmasks/ loaded the model, then failed every image."""
    image(tmp_path / "photos/cat.png"), image(tmp_path / "photos/dog.png", seed=1)
    r = invoke("masks", "generate", "--count", 2, "--size", 16, "--out", tmp_path / "gen")
    assert r.exit_code == 0, r.output
    _forbid_model_load(monkeypatch)
    r = invoke("inpaint", tmp_path / "photos", "--mask", tmp_path / "gen", "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: --mask {tmp_path / 'gen'}: no image has a mask there (it holds thick_00000.png, "
                           "thick_00001.png); masks pair by name")
    assert "repaint masks generate --for IMAGES" in line and not (tmp_path / "o").exists()


def _forbid_model_load(monkeypatch):
    import repaint_cli.images.setup as setup

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(setup, "load_for_run", boom)


def test_masks_generate_for_images_pairs_and_matches_inpaints_own_masks(tmp_path, small_checkpoint):
    """N5: --for IMAGES names each mask after its image, at its size, and draws what inpaint --mask KIND draws."""
    image(tmp_path / "photos/cat.png", size=(16, 20)), image(tmp_path / "photos/dog.png", seed=1)
    r = invoke("masks", "generate", "--for", tmp_path / "photos", "--kind", "box", "--seed", 3,
               "--out", tmp_path / "gen")
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [str(tmp_path / "gen/cat_mask.png"), str(tmp_path / "gen/dog_mask.png")]
    assert Image.open(tmp_path / "gen/cat_mask.png").size == (20, 16)
    r = invoke("inpaint", tmp_path / "photos", "--mask", tmp_path / "gen", "--out", tmp_path / "a", "--json",
               "--model", small_checkpoint, *FAST)
    assert r.exit_code == 0, r.output
    assert sorted(rec["mask"] for rec in records(r)) == [str(tmp_path / "gen/cat_mask.png"),
                                                         str(tmp_path / "gen/dog_mask.png")]
    r = invoke("inpaint", tmp_path / "photos", "--mask", "box", "--seed", 3, "--save-mask", "--out", tmp_path / "b",
               "--model", small_checkpoint, *FAST)
    assert r.exit_code == 0, r.output
    for stem in ("cat", "dog"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"gen/{stem}_mask.png")),
                              np.asarray(Image.open(tmp_path / f"b/{stem}_mask.png")))
    r = invoke("masks", "generate", "--for", tmp_path / "photos", "--count", 3, "--out", tmp_path / "c")
    assert r.exit_code == 2 and "--count: --for draws one mask per image" in r.stderr


def test_an_unreadable_single_mask_stops_before_the_model_loads(tmp_path, monkeypatch):
    image(tmp_path / "a.png")
    (tmp_path / "m").mkdir()
    (tmp_path / "m/hole.png").write_bytes(b"not a png")
    _forbid_model_load(monkeypatch)
    r = invoke("inpaint", tmp_path / "a.png", "--mask", tmp_path / "m/hole.png", "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'm/hole.png'}: not a readable mask")


def test_fit_pad_that_no_image_allows_stops_before_the_model_loads(tmp_path, small_checkpoint, monkeypatch):
    image(tmp_path / "big.png", size=(40, 30))
    import repaint_cli.images.setup as setup

    def boom(*a, **k):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(setup, "load_for_run", boom)
    r = invoke("inpaint", tmp_path / "big.png", "--fit", "pad", "--model", small_checkpoint, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: --fit pad: no image is at most 16x16, the model's size (first: {tmp_path / 'big.png'} is 30x40); "
        "use --fit crop or --fit resize")


@pytest.mark.parametrize("single", [True, False])
def test_a_white_is_hole_mask_read_as_keep_asks_about_the_convention(tmp_path, model_args, single):
    """N6: a LaMa-style mask without --mask-convention hole regenerated ~97% of the image silently."""
    image(tmp_path / "in/a.png")
    m = mask(tmp_path / ("hole.png" if single else "masks/a.png"), (2, 5, 2, 5), white_is_keep=False)
    r = invoke("inpaint", tmp_path / "in", "--mask", m if single else m.parent, "--out", tmp_path / "o", *model_args)
    assert r.exit_code == 0, r.output
    said = [line for line in r.stderr.splitlines() if "did you mean --mask-convention hole" in line]
    assert len(said) == 1 and "96% of the image is hole under --mask-convention keep" in said[0]
    r = invoke("inpaint", tmp_path / "in", "--mask", m if single else m.parent, "--mask-convention", "hole",
               "--out", tmp_path / "o2", *model_args)
    assert r.exit_code == 0 and "did you mean" not in r.stderr, r.output


def test_nul_separated_stdin_needs_null_and_works_with_it(tmp_path, model_args):
    """N8: 'find -print0 | repaint inpaint -' read every name as one path."""
    a, b = image(tmp_path / "a.png"), image(tmp_path / "b.png", seed=1)
    listing = f"{a}\0{b}\0"
    r = invoke("inpaint", "-", "--out", tmp_path / "o", *model_args, input=listing)
    assert r.exit_code == 2 and "stdin holds NUL-separated names (find -print0, xargs -0): pass -0 (--null)" in r.stderr
    r = invoke("inpaint", "-", "-0", "--out", tmp_path / "o", *model_args, input=listing)
    assert r.exit_code == 0, r.output
    assert sorted(r.stdout.split()) == [str(tmp_path / "o/a.png"), str(tmp_path / "o/b.png")]


def test_stdin_paths_under_out_are_said_not_dropped_silently(tmp_path, model_args):
    """L1: the run said 'no input path given' when every path on stdin lay under --out."""
    out = tmp_path / "o"
    inside = image(out / "a.png")
    r = invoke("inpaint", "-", "--out", out, *model_args, input=f"{inside}\n")
    assert r.exit_code == 2
    assert (f"error: no images to inpaint: 1 path(s) read from stdin lie under the --out or --mask folder (first: "
            f"{inside}) and are left out") in r.stderr
    b = image(tmp_path / "b.png")
    r = invoke("inpaint", "-", "--out", out, *model_args, input=f"{inside}\n{b}\n")
    assert r.exit_code == 0, r.output
    assert "warning: 1 path(s) read from stdin lie under the --out or --mask folder" in r.stderr


def test_an_unquoted_mask_glob_is_refused_in_one_line(tmp_path):
    """N9: '--mask mk/*.png' expanded by the shell printed one error line per expanded name."""
    image(tmp_path / "in/a.png")
    for name in ("a", "b", "c", "d", "e"):
        mask(tmp_path / f"mk/{name}.png", (2, 6, 2, 6))
    names = [tmp_path / f"mk/{n}.png" for n in "abcde"]
    r = invoke("inpaint", tmp_path / "in", "--mask", *names, "--out", tmp_path / "o")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {names[1]}, {names[2]}, {names[3]} and 1 more: 4 inputs in the folder of "
                               f"the --mask file {names[0]}: was a --mask glob expanded by the shell?")


def test_the_python_apis_run_wide_warnings_reach_the_caller(tmp_path, small_checkpoint, caplog):
    """N9: inpaint() without a reporter of the caller's dropped its run-wide warnings."""
    import logging

    from repaint_cli.images.inpaint import inpaint
    from repaint_cli.images.options import InpaintOptions

    image(tmp_path / "in/a.png")
    hole = mask(tmp_path / "hole.png", (2, 5, 2, 5), white_is_keep=False)
    opts = InpaintOptions(mask=str(hole), out_dir=tmp_path / "o", model=str(small_checkpoint), t_T=5,
                          jump_n_sample=1, threads=1)
    with caplog.at_level(logging.WARNING, logger="repaint_cli"):
        summary = inpaint([str(tmp_path / "in")], opts)
    assert summary.done == 1
    asked = [w for w in summary.warnings if "did you mean --mask-convention hole" in w]
    assert len(asked) == 1
    assert any("did you mean --mask-convention hole" in rec.getMessage() for rec in caplog.records)


def test_inpaints_progress_count_is_labelled_as_schedule_steps():
    """N9: '140/140' stood unlabelled beside '95 UNet calls per image'."""
    from rich.progress import TextColumn

    from repaint_cli.cli.output import STEPS_LABEL, rich_reporter

    reporter = rich_reporter(False, quiet=True)
    texts = [c.text_format for c in reporter.progress.columns if isinstance(c, TextColumn)]
    assert STEPS_LABEL == "schedule steps" and STEPS_LABEL in texts
