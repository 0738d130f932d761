"""images/jobs.py: inputs to jobs. Masks paired by their path (issue 32: S2, S12, the -r fallback), mask files
never taken as images, sub-folders and -r, early refusals before the model loads (N5), the convention question
(N6), stdin's names (N8 -0, L1) and the unquoted glob in one line (N9; issue 12)."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import write_png
from pathlib import Path
from repaint_cli.images.jobs import make_jobs
from cli_helpers import hole_mask, invoke, md5s, one_line_exit_2 as assert_one_line_exit_2, photo

runner = CliRunner()
FAST = ["--t-T", 5, "--jump-n-sample", 1]


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


FAST_SETUP = ["--t-T", 6, "--jump-length", 2, "--jump-n-sample", 2, "--quiet"]


def test_images_and_lama_masks_in_one_folder(tmp_path, small_checkpoint):
    d = tmp_path / "dir"
    d.mkdir()
    keeps = {}
    for i, stem in enumerate(("a", "b")):
        photo(d / f"{stem}.png", seed=i)
        keeps[stem] = hole_mask(d / f"{stem}_mask001.png", box=(2 + i, 9, 3, 12), convention="hole")
    out = tmp_path / "out"
    r = invoke("inpaint", d, "--mask", d, "--mask-convention", "hole", "--model", small_checkpoint, "--out", out,
               "--json", *FAST_SETUP)
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(Path(rec["input"]).name for rec in lines) == ["a.png", "b.png"]  # masks are not inpainted
    assert {Path(rec["input"]).stem: Path(rec["mask"]).name for rec in lines} == {"a": "a_mask001.png",
                                                                                   "b": "b_mask001.png"}
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]
    for stem, keep in keeps.items():
        src, res = np.asarray(Image.open(d / f"{stem}.png")), np.asarray(Image.open(out / f"{stem}.png"))
        assert np.array_equal(res[keep], src[keep]) and not np.array_equal(res[~keep], src[~keep])


def test_mask_folder_files_are_never_inputs_and_an_image_is_never_its_own_mask(tmp_path):
    data = tmp_path / "data"
    (data / "masks").mkdir(parents=True)
    photo(data / "a.png")
    hole_mask(data / "masks" / "a.png")
    jl = make_jobs([str(data)], str(data / "masks"), tmp_path / "out", mask_is_kind=False, recursive=True)
    assert not jl.errors and [j.image.name for j in jl.jobs] == ["a.png"]
    assert jl.jobs[0].mask_file == data / "masks" / "a.png"
    # with -r, masks mirror the sub-folders; where they do, a missing mirrored mask is an error for that image, never
    # the top-level mask of the same stem (issue 32: that was taken silently)
    (data / "sub").mkdir()
    photo(data / "sub" / "a.png")
    photo(data / "sub" / "b.png")
    (data / "masks" / "sub").mkdir()
    hole_mask(data / "masks" / "sub" / "a.png")
    hole_mask(data / "masks" / "b.png")
    jl = make_jobs([str(data)], str(data / "masks"), tmp_path / "out", mask_is_kind=False, recursive=True)
    assert not jl.errors
    assert {j.stem: j.mask_file and j.mask_file.relative_to(data).as_posix() for j in jl.jobs} == {
        "a": "masks/a.png", "sub/a": "masks/sub/a.png", "sub/b": None}
    assert "no mask named sub/b.*" in next(j for j in jl.jobs if j.stem == "sub/b").error
    # an explicit image inside the mask folder is an image, and it is not its own mask
    photo(data / "masks" / "c.png")
    hole_mask(data / "masks" / "c_mask.png")
    jl = make_jobs([str(data / "masks" / "c.png")], str(data / "masks"), tmp_path / "out", mask_is_kind=False)
    assert not jl.errors and jl.jobs[0].mask_file == data / "masks" / "c_mask.png"


def test_recursive_run_mirrors_sub_folders_and_reruns_cleanly(tmp_path, small_checkpoint):
    tree = tmp_path / "in"
    (tree / "sub").mkdir(parents=True)
    photo(tree / "x.png", seed=0)
    photo(tree / "sub" / "x.png", seed=1)  # the same stem in another folder
    photo(tree / "sub" / "y.png", seed=2)
    out = tree / "out"
    args = ["inpaint", tree, "-r", "--mask", "box", "--model", small_checkpoint, "--out", out, *FAST_SETUP]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    results = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert results == ["sub/x.png", "sub/y.png", "x.png"]
    before = md5s(out)
    r = invoke(*args, "--json")  # the rerun reads none of its outputs back as inputs
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["status"] for line in r.stdout.splitlines()] == ["skipped"] * 3
    assert md5s(out) == before
    # a top-level image keeps its noise key (its stem): the same bytes as a run without -r
    alone = tmp_path / "alone"
    assert invoke("inpaint", tree / "x.png", "--mask", "box", "--model", small_checkpoint, "--out", alone,
                  *FAST_SETUP).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(alone / "x.png")), np.asarray(Image.open(out / "x.png")))
    # an image in a sub-folder is keyed by its relative name
    jl = make_jobs([str(tree)], "box", out, mask_is_kind=True, recursive=True, overwrite=True)
    assert sorted(j.stem for j in jl.jobs) == ["sub/x", "sub/y", "x"]


def test_shell_expanded_mask_glob_is_refused_with_a_hint(tmp_path, small_checkpoint, no_model_load):
    masks = tmp_path / "masks"
    masks.mkdir()
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png", seed=1)
    hole_mask(masks / "a.png")
    hole_mask(masks / "b.png")
    out = tmp_path / "out"
    # what the shell makes of: repaint inpaint a.png b.png --mask masks/*.png
    r = invoke("inpaint", a, b, "--mask", masks / "a.png", masks / "b.png", "--model", small_checkpoint,
               "--out", out, *FAST_SETUP)
    assert_one_line_exit_2(r, "masks/b.png", "quote")
    assert not out.exists()
    # a photo beside its one mask is fine: nothing was expanded by the shell
    photo(masks / "photo.png")
    jl = make_jobs([str(masks / "photo.png")], str(masks / "a.png"), out, mask_is_kind=False)
    assert not jl.errors and jl.jobs[0].mask_file == masks / "a.png"


def _errors(inputs, mask, out, **kw):
    return make_jobs([str(i) for i in inputs], str(mask), out, mask_is_kind=False, **kw).errors


def test_an_image_named_like_a_mask_is_an_image_beside_a_single_mask(tmp_path):
    """D1: 'gas-mask.png' is a photo of a gas mask: the mask-name rule is for a mask source that is the
    inputs' own folder or glob, not for images given by name."""
    gas, hole = photo(tmp_path / "gas-mask.png"), tmp_path / "hole.png"
    hole_mask(hole)
    jl = make_jobs([str(gas)], str(hole), tmp_path / "out", mask_is_kind=False)
    assert not jl.errors and [j.image.name for j in jl.jobs] == ["gas-mask.png"]
    masks = tmp_path / "masks"  # also with a mask folder
    masks.mkdir()
    hole_mask(masks / "gas-mask.png")
    jl = make_jobs([str(gas)], str(masks), tmp_path / "out", mask_is_kind=False)
    assert not jl.errors and jl.jobs[0].mask_file == masks / "gas-mask.png"
    # but the mask of another input (b_mask.png beside b.png: `a.png b.png --mask *_mask.png` expanded) is refused
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png")
    hole_mask(tmp_path / "a_mask.png")
    hole_mask(tmp_path / "b_mask.png")
    errors = _errors([a, b, tmp_path / "b_mask.png"], tmp_path / "a_mask.png", tmp_path / "out")
    assert len(errors) == 1 and "b_mask.png" in errors[0] and "quote" in errors[0]


def _mask_glob_layout(tmp_path):
    imgs, mk = tmp_path / "imgs", tmp_path / "mk_keep"
    imgs.mkdir(), mk.mkdir()
    for i, stem in enumerate("abc"):
        photo(imgs / f"{stem}.png", seed=i)
        hole_mask(mk / f"{stem}.png")
    return imgs, mk


@pytest.mark.parametrize("first", ["folder", "glob", "stdin"])
def test_unquoted_mask_glob_is_refused_whatever_the_other_inputs(tmp_path, first):
    """D2: `repaint inpaint imgs --mask mk_keep/*.png` reaches us as inputs imgs, mk_keep/b.png, mk_keep/c.png."""
    imgs, mk = _mask_glob_layout(tmp_path)
    source = {"folder": imgs, "glob": imgs / "*.png", "stdin": "-"}[first]
    jl = make_jobs([str(source), str(mk / "b.png"), str(mk / "c.png")], str(mk / "a.png"), tmp_path / "out",
                   mask_is_kind=False, stdin=[f"{imgs / 'a.png'}\n"])
    # one line for all the expanded names (issue 32, N9: it was one line each)
    assert [e.split(": ")[0] for e in jl.errors] == [f"{mk / 'b.png'}, {mk / 'c.png'}"], jl.errors
    assert all("quote" in e and str(mk / "a.png") in e for e in jl.errors)


def test_unquoted_mask_glob_after_a_folder_stops_before_the_model(tmp_path, small_checkpoint, no_model_load):
    imgs, mk = _mask_glob_layout(tmp_path)
    out = tmp_path / "out"
    r = invoke("inpaint", imgs, "--mask", mk / "a.png", mk / "b.png", mk / "c.png", "--model", small_checkpoint,
               "--out", out, *FAST_SETUP)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "more problem" not in errors[0], r.stderr  # one line for all the expanded names
    assert "quote" in errors[0] and f"{mk / 'b.png'}, {mk / 'c.png'}: 2 inputs in the folder of" in errors[0]
    assert not out.exists()


def test_inputs_beside_a_single_mask_file_are_fine_when_all_are_named_there(tmp_path):
    """D2, the accepted cases: every input is a file named in the --mask file's folder (nothing to tell it from
    `photo.png --mask hole.png`), and the LaMa layout `dir --mask dir`."""
    d = tmp_path / "dir"
    d.mkdir()
    a, b = photo(d / "a.png"), photo(d / "b.png", seed=1)
    hole_mask(d / "a_mask.png")
    hole_mask(d / "hole.png")
    assert not _errors([a], d / "a_mask.png", tmp_path / "out")
    assert not _errors([a, b], d / "hole.png", tmp_path / "out")
    # beside other inputs, a file named in the mask's folder that sorts before the mask file cannot have come
    # from the shell's expansion of --mask dir/*.png (the first match is the --mask value, the rest follow it)
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "p.png")
    assert not _errors([photos, a], d / "hole.png", tmp_path / "out")
    photo(d / "zebra.png")
    assert "zebra.png" in " ".join(_errors([photos, d / "zebra.png"], d / "hole.png", tmp_path / "out"))
    (d / "hole.png").unlink(), (d / "zebra.png").unlink()
    jl = make_jobs([str(d)], str(d), tmp_path / "out", mask_is_kind=False)
    assert not jl.errors and [(j.image.name, j.mask_file and j.mask_file.name) for j in jl.jobs] == [
        ("a.png", "a_mask.png"), ("b.png", None)]  # b has no mask: its own error, later


def _tree_with_sub_folders(tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    photo(tree / "top.png")
    photo(tree / "sub" / "s1.png")
    photo(tree / "sub" / "deeper" / "s2.png")
    (tree / "out").mkdir()  # an --out inside the tree: its results are not inputs, nor counted
    photo(tree / "out" / "top.png")
    return tree


def test_images_in_sub_folders_left_out_without_r_get_one_warning(tmp_path):
    """D5: a folder with images at the top and in sub-folders, no -r: one warning counts those left out."""
    tree = _tree_with_sub_folders(tmp_path)
    jl = make_jobs([str(tree)], "box", tree / "out", mask_is_kind=True, overwrite=True)
    assert [j.image.name for j in jl.jobs] == ["top.png"]
    hints = [n for n in jl.ignored if "-r" in n]
    assert len(hints) == 1 and "2 image(s) in its sub-folders" in hints[0], jl.ignored
    jl = make_jobs([str(tree)], "box", tree / "out", mask_is_kind=True, recursive=True, overwrite=True)
    assert not [n for n in jl.ignored if "-r" in n] and len(jl.jobs) == 3


def test_sub_folder_warning_is_shown_by_the_cli(tmp_path, small_checkpoint):
    tree = _tree_with_sub_folders(tmp_path)
    r = invoke("inpaint", tree, "--mask", "box", "--model", small_checkpoint, "--out", tree / "out", "--overwrite",
               *FAST_SETUP)
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:") and "pass -r" in line]
    assert len(warnings) == 1 and "2 image(s)" in warnings[0], r.stderr
