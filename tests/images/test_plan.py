"""images/plan.py: one plan of what a run writes (issue 32, item 2). Every path a run will write is listed before
any model loads; two that collide, one that is an input, one that is not a regular file are refused with one
line (exit 2); an output is never written onto an input or a mask (issue 12)."""
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_images
from repaint_cli.images import inpaint as pipeline
from repaint_cli.images.frames import FrameHook
from repaint_cli.images.jobs import Job
from cli_helpers import hole_mask, invoke, md5s, one_line_exit_2, photo

runner = CliRunner()
FAST = ["--t-T", 4, "--jump-length", 2, "--jump-n-sample", 1, "--quiet"]


def inpaint_args(ckpt, out, *more):
    return ["--mask", "box", "--model", ckpt, "--out", out, *FAST, *more]


# ----------------------------------------------------------------------------- the plan itself (files.py)


# ----------------------------------------------------------------------------- inpaint: collisions (D3, D4, D5, N7)

@pytest.mark.parametrize("option,name", [("--save-mask", "a_mask.png"), ("--concat", "a_concat.png")])
def test_a_side_file_never_shadows_another_images_output(tmp_path, small_checkpoint, no_model_load, option, name):
    """D3: OUT/a_mask.png is both a's --save-mask and the output of the input a_mask.png."""
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / name, seed=1)
    out = tmp_path / "out"
    r = invoke("inpaint", tmp_path / "in", *inpaint_args(small_checkpoint, out, option))
    one_line_exit_2(r, str(out / name), option)
    assert not out.exists()


def test_the_sheet_never_replaces_an_output(tmp_path, small_checkpoint, no_model_load):
    """D4: an input named sheet.png has the output OUT/sheet.png, where --sheet writes."""
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "sheet.png", seed=1)
    out = tmp_path / "out"
    r = invoke("inpaint", tmp_path / "in", *inpaint_args(small_checkpoint, out, "--sheet"))
    one_line_exit_2(r, str(out / "sheet.png"), "--sheet")
    assert not out.exists()


@pytest.mark.parametrize("which", ["image", "mask"])
def test_the_manifest_is_never_an_input(tmp_path, small_checkpoint, no_model_load, which):
    """D5: --manifest a.png appended JSON to the input image."""
    a = photo(tmp_path / "in" / "a.png")
    m = photo(tmp_path / "masks" / "a.png", seed=2)
    before = a.read_bytes(), m.read_bytes()
    target = a if which == "image" else m
    r = invoke("inpaint", a, "--mask", tmp_path / "masks", "--model", small_checkpoint, "--out", tmp_path / "out",
               "--manifest", target, *FAST)
    one_line_exit_2(r, str(target), "--manifest")
    assert (a.read_bytes(), m.read_bytes()) == before


def test_the_manifest_and_the_run_record_do_not_collide(tmp_path, small_checkpoint, no_model_load):
    photo(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    r = invoke("inpaint", tmp_path / "in", *inpaint_args(small_checkpoint, out, "--manifest", out / ".repaint-run.jsonl"))
    one_line_exit_2(r, "--manifest", "run record")


def test_a_manifest_that_is_not_a_regular_file_is_refused(tmp_path, small_checkpoint, no_model_load):
    photo(tmp_path / "in" / "a.png")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = invoke("inpaint", tmp_path / "in", *inpaint_args(small_checkpoint, tmp_path / "out", "--manifest", fifo))
    one_line_exit_2(r, str(fifo), "not a regular file")


def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path, small_checkpoint, no_model_load):
    """Before, a FIFO named like an output counted as a finished output (it exists)."""
    photo(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "a.png")
    r = invoke("inpaint", tmp_path / "in", *inpaint_args(small_checkpoint, out))
    one_line_exit_2(r, str(out / "a.png"), "not a regular file")


def test_out_that_is_the_folder_of_an_input_file_is_refused(tmp_path, small_checkpoint, no_model_load):
    """N7: `photos/cat.jpg --out photos` wrote photos/cat.png beside it; the next run over photos/ failed on two
    files of one stem."""
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photos / "cat.jpg")
    r = invoke("inpaint", photos / "cat.jpg", *inpaint_args(small_checkpoint, photos))
    one_line_exit_2(r, "cat.jpg", "choose another --out")
    assert sorted(p.name for p in photos.iterdir()) == ["cat.jpg"]


def test_manifest_in_a_folder_that_does_not_exist_yet(tmp_path, small_checkpoint):
    """T1: --manifest nodir/m.jsonl was a traceback."""
    photo(tmp_path / "in" / "a.png")
    m = tmp_path / "nodir" / "m.jsonl"
    r = invoke("inpaint", tmp_path / "in", *inpaint_args(small_checkpoint, tmp_path / "out", "--manifest", m))
    assert r.exit_code == 0, r.output
    assert json.loads(m.read_text().splitlines()[0])["status"] == "done"


def test_sheet_of_outputs_whose_stems_look_like_side_files(tmp_path, small_checkpoint):
    """T5: --sheet failed (after all outputs were written) when every stem ends in _mask/_concat/_sheet."""
    for i, name in enumerate(["x_mask.png", "y_concat.png", "z_sheet.png"]):
        photo(tmp_path / "in" / name, seed=i)
    out = tmp_path / "out"
    r = invoke("inpaint", tmp_path / "in", *inpaint_args(small_checkpoint, out, "--sheet"))
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and (out / "sheet.png").is_file()


# ----------------------------------------------------------------------------- every path written is in the plan

def test_every_file_a_run_writes_is_in_its_plan(tmp_path, small_checkpoint, monkeypatch):
    make_images(tmp_path / "in", 2)
    out, manifest = tmp_path / "out", tmp_path / "logs" / "m.jsonl"
    plans = []
    real_plan_run = pipeline.plan_run

    def capture(*a, **k):
        plan = real_plan_run(*a, **k)
        plans.append(plan.writes)
        return plan

    monkeypatch.setattr(pipeline, "plan_run", capture)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    r = invoke("inpaint", tmp_path / "in", *inpaint_args(small_checkpoint, out, "--save-mask", "--concat", "--frames",
                                                          2, "--animate", "gif", "--sheet", "--manifest", manifest))
    assert r.exit_code == 0, r.output
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    planned = plans[0].entries
    files = {os.path.realpath(e.path) for e in planned if not e.folder}
    folders = [os.path.realpath(e.path) for e in planned if e.folder]

    def in_plan(p):
        r_ = os.path.realpath(p)
        return r_ in files or any(r_.startswith(f + os.sep) for f in folders)

    assert written and all(in_plan(p) for p in written), sorted(str(p) for p in written if not in_plan(p))
    # and the plan asked for nothing that did not appear (no file of the plan is missing)
    assert files <= {os.path.realpath(p) for p in written}, sorted(files - {os.path.realpath(p) for p in written})
    assert any(p.suffix == ".gif" for p in written) and (out / "sheet.png") in written and manifest in written


def test_an_mp4_animation_plans_its_gif_fallback(tmp_path):
    hook = FrameHook(tmp_path, 2, animate="mp4")
    job = Job(image=tmp_path / "a.png", stem="a", output=tmp_path / "a.png")
    names = [p.name for p, _, _ in hook.planned_files(job)]
    assert "a.mp4" in names and "a.gif" in names
    assert "a.gif" not in [p.name for p in hook.files_for(job)]  # what a rerun looks for: what it made


# ----------------------------------------------------------------------------- reruns: locks, stdout, settings


# ----------------------------------------------------------------------------- merge-manifests (D6, T7)


# ----------------------------------------------------------------------------- impute (D6, S11)

QUICK = ["--train-steps", 30, "--width", 16, "--blocks", 1, "--threads", 1, "--quiet"]


FAST_SETUP = ["--t-T", 6, "--jump-length", 2, "--jump-n-sample", 2, "--quiet"]


def test_output_onto_an_input_is_refused_before_the_model_loads(tmp_path, small_checkpoint, no_model_load):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "cat.png")
    before = md5s(photos)
    r = invoke("inpaint", photos / "cat.png", "--mask", "box", "--model", small_checkpoint, "--out", photos,
               "--overwrite", *FAST_SETUP)
    one_line_exit_2(r, "cat.png", "overwrite an input")
    assert md5s(photos) == before
    other = tmp_path / "other"  # another name of the same file (a hard link) is the same input
    other.mkdir()
    os.link(photos / "cat.png", other / "cat.png")
    r = invoke("inpaint", photos / "cat.png", "--mask", "box", "--model", small_checkpoint, "--out", other,
               "--overwrite", *FAST_SETUP)
    one_line_exit_2(r, "cat.png", "overwrite an input")
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
               "--overwrite", extra, *FAST_SETUP)
    one_line_exit_2(r, str(masks / victim), "overwrite an input or mask")
    assert md5s(masks) == before
