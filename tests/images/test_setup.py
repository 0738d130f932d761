"""Issue 12: safe by default. No input overwritten, masks never inpainted as images, -r reruns that
work, unknown conf keys refused, validation before the model loads, outputs that record their settings,
stdout listing every result, a warning when the fill is upscaled."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from conftest import FIXTURES, write_png
from repaint_cli.images import inpaint as pipeline
from repaint_cli.models import checkpoints
from repaint_cli.cli.app import app
from repaint_cli.images.image_files import read_png_text
from repaint_cli.images.jobs import make_jobs
from repaint_cli.models.checkpoints import REPAINT_CONF_KEYS, ModelError, check_conf_keys
from repaint_cli.images.inpaint import InpaintOptions, Reporter, inpaint
from repaint_cli.images.provenance import RUN_RECORD, SETTINGS_KEY

runner = CliRunner()
FAST = ["--t-T", 6, "--jump-length", 2, "--jump-n-sample", 2, "--quiet"]


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def md5s(folder):
    import hashlib
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def photo(path, h=16, w=16, seed=0):
    write_png(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3)))
    return path


def hole_mask(path, h=16, w=16, box=(4, 10, 4, 10), convention="keep"):
    keep = np.full((h, w), 255, np.uint8)
    y0, y1, x0, x1 = box
    keep[y0:y1, x0:x1] = 0
    write_png(path, keep if convention == "keep" else 255 - keep)
    return keep > 127


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the model is loaded: run-wide mistakes must be found before."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(checkpoints, "load", refuse)


def assert_one_line_exit_2(r, *fragments):
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)
    assert "Traceback" not in r.output


# ----------------------------------------------------------------------------- 1. inputs never overwritten

def test_output_onto_an_input_is_refused_before_the_model_loads(tmp_path, small_checkpoint, no_model_load):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "cat.png")
    before = md5s(photos)
    r = invoke("inpaint", photos / "cat.png", "--mask", "box", "--model", small_checkpoint, "--out", photos,
               "--overwrite", *FAST)
    assert_one_line_exit_2(r, "cat.png", "overwrite an input")
    assert md5s(photos) == before
    other = tmp_path / "other"  # another name of the same file (a hard link) is the same input
    other.mkdir()
    os.link(photos / "cat.png", other / "cat.png")
    r = invoke("inpaint", photos / "cat.png", "--mask", "box", "--model", small_checkpoint, "--out", other,
               "--overwrite", *FAST)
    assert_one_line_exit_2(r, "cat.png", "overwrite an input")
    assert md5s(photos) == before


@pytest.mark.parametrize("extra,victim", [("--save-mask", "cat_mask.png"), ("--concat", "cat_concat.png")])
def test_side_outputs_onto_a_mask_file_are_refused(tmp_path, small_checkpoint, no_model_load, extra, victim):
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir(), masks.mkdir()
    photo(photos / "cat.png")
    hole_mask(masks / "cat_mask.png")  # cat's mask (LaMa's naming)
    hole_mask(masks / victim)  # a file of the mask folder that a side output of cat.png would replace
    before = md5s(masks)
    r = invoke("inpaint", photos / "cat.png", "--mask", masks, "--model", small_checkpoint, "--out", masks,
               "--overwrite", extra, *FAST)
    assert_one_line_exit_2(r, str(masks / victim), "overwrite an input or mask")
    assert md5s(masks) == before


# ----------------------------------------------------------------------------- 2. LaMa-style folders

def test_images_and_lama_masks_in_one_folder(tmp_path, small_checkpoint):
    d = tmp_path / "dir"
    d.mkdir()
    keeps = {}
    for i, stem in enumerate(("a", "b")):
        photo(d / f"{stem}.png", seed=i)
        keeps[stem] = hole_mask(d / f"{stem}_mask001.png", box=(2 + i, 9, 3, 12), convention="hole")
    out = tmp_path / "out"
    r = invoke("inpaint", d, "--mask", d, "--mask-convention", "hole", "--model", small_checkpoint, "--out", out,
               "--json", *FAST)
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


# ----------------------------------------------------------------------------- 3. -r with --out inside the tree

def test_recursive_run_mirrors_sub_folders_and_reruns_cleanly(tmp_path, small_checkpoint):
    tree = tmp_path / "in"
    (tree / "sub").mkdir(parents=True)
    photo(tree / "x.png", seed=0)
    photo(tree / "sub" / "x.png", seed=1)  # the same stem in another folder
    photo(tree / "sub" / "y.png", seed=2)
    out = tree / "out"
    args = ["inpaint", tree, "-r", "--mask", "box", "--model", small_checkpoint, "--out", out, *FAST]
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
                  *FAST).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(alone / "x.png")), np.asarray(Image.open(out / "x.png")))
    # an image in a sub-folder is keyed by its relative name
    jl = make_jobs([str(tree)], "box", out, mask_is_kind=True, recursive=True, overwrite=True)
    assert sorted(j.stem for j in jl.jobs) == ["sub/x", "sub/y", "x"]


# ----------------------------------------------------------------------------- 4. a shell-expanded mask glob

def test_shell_expanded_mask_glob_is_refused_with_a_hint(tmp_path, small_checkpoint, no_model_load):
    masks = tmp_path / "masks"
    masks.mkdir()
    a, b = photo(tmp_path / "a.png"), photo(tmp_path / "b.png", seed=1)
    hole_mask(masks / "a.png")
    hole_mask(masks / "b.png")
    out = tmp_path / "out"
    # what the shell makes of: repaint inpaint a.png b.png --mask masks/*.png
    r = invoke("inpaint", a, b, "--mask", masks / "a.png", masks / "b.png", "--model", small_checkpoint,
               "--out", out, *FAST)
    assert_one_line_exit_2(r, "masks/b.png", "quote")
    assert not out.exists()
    # a photo beside its one mask is fine: nothing was expanded by the shell
    photo(masks / "photo.png")
    jl = make_jobs([str(masks / "photo.png")], str(masks / "a.png"), out, mask_is_kind=False)
    assert not jl.errors and jl.jobs[0].mask_file == masks / "a.png"


# ----------------------------------------------------------------------------- 5. --config keys

def test_misspelled_config_key_is_refused_with_the_closest_key(tmp_path, small_checkpoint, no_model_load):
    photo(tmp_path / "a.png")
    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"schedule_jump_param": {"t_T": 6, "n_sample": 1, "jump_length": 2,
                                                            "jump_n_sample": 2}}))
    r = invoke("inpaint", tmp_path / "a.png", "--mask", "box", "--model", small_checkpoint, "--config", conf,
               "--out", tmp_path / "out", "--quiet")
    assert_one_line_exit_2(r, "'schedule_jump_param'", "'schedule_jump_params'")
    with pytest.raises(ModelError, match="schedule_jump_params.jump_length"):
        check_conf_keys({"schedule_jump_params": {"jump_lenght": 5}}, "conf.yml")


def test_every_repaint_conf_key_is_accepted():
    check_conf_keys({k: None for k in REPAINT_CONF_KEYS}, "all.yml")  # nothing raised


def test_conf_key_constant_covers_the_reference_key_list():
    listing = FIXTURES / "repaint_conf_keys.txt"
    if not listing.is_file():
        pytest.skip(f"{listing} not found (shared fixtures absent; set REPAINT_FIXTURES)")
    keys = {line.strip() for line in listing.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert keys and keys <= REPAINT_CONF_KEYS, sorted(keys - REPAINT_CONF_KEYS)


# ----------------------------------------------------------------------------- 6. validation before the model

def _case(tmp_path, name):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    photo(imgs / "a.png")
    if name == "missing":
        return [imgs / "a.png", tmp_path / "nope.png"], [], "nope.png"
    if name == "glob":
        return [str(tmp_path / "nothing" / "*.png")], [], "matches no file"
    if name == "empty":
        (tmp_path / "deep" / "sub").mkdir(parents=True)
        photo(tmp_path / "deep" / "sub" / "b.png")
        return [tmp_path / "deep"], [], "-r"
    if name == "kind":
        return [imgs], ["--mask", "thik"], "did you mean 'thick'"
    if name == "seed":
        return [imgs], ["--seed", "-1"], "--seed -1"
    if name == "mask-glob":
        return [imgs], ["--mask", str(tmp_path / "m" / "*.png")], "matches no file"
    raise ValueError(name)


@pytest.mark.parametrize("name", ["missing", "glob", "empty", "kind", "seed", "mask-glob"])
def test_run_wide_mistakes_stop_before_the_model_and_create_no_output_folder(tmp_path, small_checkpoint,
                                                                             no_model_load, name):
    inputs, extra, fragment = _case(tmp_path, name)
    out = tmp_path / "out"
    r = invoke("inpaint", *inputs, "--mask", "box", *extra, "--model", small_checkpoint, "--out", out, "--quiet")
    assert_one_line_exit_2(r, fragment)
    assert not out.exists()


# ----------------------------------------------------------------------------- 7. outputs record their settings

def test_outputs_record_settings_and_a_rerun_with_other_settings_says_so(tmp_path, small_checkpoint, monkeypatch):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        photo(imgs / f"im{i}.png", seed=i)
    out = tmp_path / "out"
    base = ["inpaint", imgs, "--mask", "box", "--model", small_checkpoint, "--out", out, *FAST]
    assert invoke(*base).exit_code == 0
    rec = json.loads(read_png_text(out / "im0.png", SETTINGS_KEY))
    assert rec["model"] == "small.pt" and len(rec["model_sha256"]) == 64 and rec["seed"] == 0
    assert rec["schedule"]["t_T"] == 6 and rec["mask"] == "box" and rec["mask_convention"] == "keep"
    assert rec["fit"] == "crop" and rec["paste"] is True and "version" in rec
    runs = [json.loads(line) for line in (out / RUN_RECORD).read_text().splitlines()]
    assert len(runs) == 1 and runs[0]["done"] == 3 and runs[0]["settings"]["seed"] == 0

    before = md5s(out)
    r = invoke(*base, "--seed", 1)
    assert r.exit_code == 0, r.output
    assert md5s(out) == before  # not redone silently...
    assert "3 existing output(s) were made with other settings (seed 0 -> 1)" in r.stderr  # ...nor skipped silently
    assert "--overwrite redoes them" in r.stderr

    # an output of an older version (no recorded settings) is unknown, and said so
    Image.open(out / "im1.png").save(out / "im1.png")
    r = invoke(*base)
    assert r.exit_code == 0 and "1 existing output(s) have no recorded settings" in r.stderr

    # extras asked for on a rerun: made from the files on disk, without sampling again
    def no_sampling(*a, **k):
        raise AssertionError("sampled again")
    monkeypatch.setattr(pipeline, "sample_batch", no_sampling)
    r = invoke(*base, "--concat", "--save-mask", "--frames", 2)
    assert r.exit_code == 0, r.output
    for i in range(3):
        assert (out / f"im{i}_concat.png").is_file() and (out / f"im{i}_mask.png").is_file()
    keep = np.asarray(Image.open(out / "im0_mask.png")) > 127
    assert 0 < (~keep).sum() < keep.size
    assert "--frames/--animate need the sampling again: not made for 3 finished image(s)" in r.stderr


# ----------------------------------------------------------------------------- 8. stdout lists every result

def test_stdout_lists_skipped_outputs_and_json_lists_every_file(tmp_path, small_checkpoint):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        photo(imgs / f"im{i}.png", seed=i)
    out = tmp_path / "out"
    base = ["inpaint", imgs, "--mask", "box", "--model", small_checkpoint, "--out", out, *FAST]
    r = invoke(*base, "--json", "--save-mask", "--concat")
    assert r.exit_code == 0, r.output
    for line in r.stdout.splitlines():
        rec = json.loads(line)
        stem = Path(rec["input"]).stem
        assert sorted(Path(f).name for f in rec["files"]) == sorted([f"{stem}.png", f"{stem}_mask.png",
                                                                     f"{stem}_concat.png"])
        assert all(Path(f).is_file() for f in rec["files"])
    photo(imgs / "im2.png", seed=2)
    r = invoke(*base)
    assert r.exit_code == 0
    assert sorted(r.stdout.split()) == sorted(str(out / f"im{i}.png") for i in range(3))  # 2 skipped + 1 done


# ----------------------------------------------------------------------------- 9. no silent quality loss

def test_enlarged_fill_warns_once_and_first_line_names_the_masks(tmp_path, small_checkpoint):
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    for i in range(2):
        photo(imgs / f"big{i}.png", 60, 80, seed=i)
        hole_mask(masks / f"big{i}.png", 60, 80, box=(10, 50, 10, 70))  # a 60x40 hole, model at 16 px
    rep = Reporter()
    summary = inpaint([str(imgs)], InpaintOptions(mask=str(masks), model=str(small_checkpoint), t_T=4, jump_length=2,
                                                  jump_n_sample=1, out_dir=tmp_path / "out"), rep)
    assert summary.done == 2
    assert rep.lines[0].startswith(f"masks: {masks}") and "--mask-convention keep" in rep.lines[0]
    ups = [line for line in rep.lines if line.startswith("hole region")]
    assert len(ups) == 1, rep.lines  # once per run, not per image
    assert ups[0].startswith("hole region 60x40 generated at 16 px, upscaled") and "larger size" in ups[0]


# ----------------------------------------------------------------------------- issue 21 D1, issue 25 D2/D5

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
               "--out", out, *FAST)
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
               *FAST)
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:") and "pass -r" in line]
    assert len(warnings) == 1 and "2 image(s)" in warnings[0], r.stderr


def test_option_values_are_checked_once_when_the_parts_are_made():
    """Issue 22: each value is checked where the option part is made (images/options.py), one line each; the
    code that reads the options trusts them."""
    from repaint_cli.images.options import InpaintOptions, ReadOptions, RunError, SampleOptions

    for make, fragment in [(lambda: ReadOptions(mask_convention="white"), "--mask-convention"),
                           (lambda: ReadOptions(fit="stretch"), "--fit"),
                           (lambda: ReadOptions(shard="5/2"), "--shard 5/2"),
                           (lambda: ReadOptions(context=float("nan")), "--context"),
                           (lambda: SampleOptions(method="ddpm"), "--method"),
                           (lambda: SampleOptions(method="ddim", eta=1.5), "--eta"),
                           (lambda: SampleOptions(eta=0.5), "--eta"),
                           (lambda: SampleOptions(guidance=-1.0), "--guidance"),
                           (lambda: InpaintOptions(fit="stretch"), "--fit")]:
        with pytest.raises(RunError, match=fragment.replace("-", r"\-")) as e:
            make()
        assert "\n" not in str(e.value)
    assert ReadOptions(shard="1/2").shard_part == (1, 2) and ReadOptions().shard_part is None
