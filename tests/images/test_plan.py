"""Issue 32, item 2: one plan of what a run writes. Every path a run will write is listed before any model loads;
two that collide, one that is an input, one that is not a regular file are refused with one line (exit 2); the
atomic writer never renames over a file that is not a regular file; reruns notice replaced inputs and changed
settings, clean up stale locks, and print only outputs that exist."""
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_images, write_png
from repaint_cli.cli.app import app
from repaint_cli.files import InputError, write_bytes_atomic
from repaint_cli.images import image_files
from repaint_cli.images import inpaint as pipeline
from repaint_cli.images import resume
from repaint_cli.images.frames import FrameHook
from repaint_cli.images.jobs import Job
from repaint_cli.models import checkpoints

runner = CliRunner()
FAST = ["--t-T", 4, "--jump-length", 2, "--jump-n-sample", 1, "--quiet"]


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def photo(path, h=16, w=16, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3)))
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(checkpoints, "load", refuse)


def one_line_exit_2(r, *fragments):
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)
    assert "Traceback" not in r.output


def inpaint_args(ckpt, out, *more):
    return ["--mask", "box", "--model", ckpt, "--out", out, *FAST, *more]


# ----------------------------------------------------------------------------- the plan itself (files.py)

def test_write_plan_refuses_collisions_inputs_and_non_regular_files(tmp_path):
    from repaint_cli.files import WritePlan

    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    plan = WritePlan()
    plan.read(a, "the input a.png")
    plan.write(tmp_path / "out" / "a.png", "the output of a.png")
    plan.write(tmp_path / "out" / "a_mask.png", "--save-mask of a.png")
    assert plan.problems() == []
    plan.write(tmp_path / "out" / "a_mask.png", "the output of a_mask.png")
    plan.write(a, "--manifest")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plan.write(fifo, "--out")
    problems = plan.problems()
    assert len(problems) == 3, problems
    assert "--save-mask of a.png" in problems[0] and "the output of a_mask.png" in problems[0]
    assert "--manifest" in problems[1] and "the input a.png" in problems[1]
    assert "not a regular file" in problems[2] and "FIFO" in problems[2]
    with pytest.raises(InputError, match="and 2 more"):
        plan.check()


def test_a_file_and_a_folder_of_one_name_collide(tmp_path):
    from repaint_cli.files import WritePlan

    plan = WritePlan()
    plan.write(tmp_path / "frames", "the output of frames")
    plan.write(tmp_path / "frames" / "a", "--frames of a.png", folder=True)
    assert len(plan.problems()) == 1


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/null", "folder"])
def test_the_atomic_writer_never_renames_over_a_non_regular_file(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(os.devnull)
    with pytest.raises(InputError, match="not a regular file|a folder"):
        write_bytes_atomic(target, b"data")
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(target).st_mode)
    elif kind == "folder":
        assert target.is_dir()
    else:
        assert target.is_symlink() and os.readlink(target) == os.devnull
    assert [p.name for p in tmp_path.iterdir()] == ["target"]  # no temporary left behind


def test_the_atomic_writer_still_replaces_regular_files_and_links_to_them(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("old")
    write_bytes_atomic(f, b"new")
    assert f.read_text() == "new"


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

def test_a_rerun_removes_a_stale_lock_of_a_finished_output(tmp_path, small_checkpoint):
    """N10: a run killed after writing img0000.png but before removing its lock left the lock for good."""
    imgs = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    assert invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out)).exit_code == 0
    stale = out / ".img0000.png.lock"
    stale.write_bytes(b"")  # as the killed run left it: nobody holds it
    held = resume.lock_output(out / "img0001.png")  # a run still making img0001: its lock stays
    try:
        r = invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out))
        assert r.exit_code == 0, r.output
        assert not stale.exists()
        assert (out / ".img0001.png.lock").exists()
    finally:
        held.release()


def test_stdout_never_lists_an_output_another_run_is_still_making(tmp_path, small_checkpoint):
    """L3, N1: a pipeline reading stdout got the path of a file that did not exist yet."""
    imgs = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    out.mkdir()
    held = resume.lock_output(out / "img0000.png")
    try:
        r = invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out))
    finally:
        held.release()
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [str(out / "img0001.png")]


def test_a_rerun_with_another_guidance_says_so(tmp_path, small_checkpoint):
    """S1: guidance was not among the compared settings."""
    imgs = make_images(tmp_path / "imgs", 1)
    out = tmp_path / "out"
    assert invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out, "--guidance", 2)).exit_code == 0
    r = invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out, "--guidance", 0))
    assert r.exit_code == 0, r.output
    assert "guidance 2.0 -> 0.0" in r.stderr, r.stderr


def test_every_setting_an_output_records_is_compared_or_named_as_not_changing_pixels(tmp_path, small_checkpoint):
    """S1: the next setting added to the record must be compared on a rerun, or said not to change pixels."""
    imgs = make_images(tmp_path / "imgs", 1)
    out = tmp_path / "out"
    assert invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out, "--guidance", 2)).exit_code == 0
    from repaint_cli.images.provenance import COMPARED, NOT_COMPARED, recorded_settings
    recorded = recorded_settings(out / "img0000.png")
    assert "guidance" in recorded and "image_sha256" in recorded
    assert set(recorded) <= set(COMPARED) | set(NOT_COMPARED), set(recorded) - set(COMPARED) - set(NOT_COMPARED)


def test_an_input_replaced_between_runs_is_noticed(tmp_path, small_checkpoint):
    imgs = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    assert invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out)).exit_code == 0
    kept = (out / "img0000.png").read_bytes()
    photo(imgs / "img0000.png", seed=99)  # another picture under the same name
    r = invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out))
    assert r.exit_code == 0, r.output
    assert "1 existing output(s) were made with other settings" in r.stderr
    assert "image " in r.stderr and "other content" in r.stderr
    assert (out / "img0000.png").read_bytes() == kept  # kept, as for any other setting; --overwrite redoes it


def test_json_lines_come_in_input_order(tmp_path, small_checkpoint):
    """N9: skipped images' lines came first, then the sampled ones."""
    imgs = make_images(tmp_path / "imgs", 4)
    out = tmp_path / "out"
    assert invoke("inpaint", imgs / "img0001.png", imgs / "img0003.png", *inpaint_args(small_checkpoint, out)).exit_code == 0
    r = invoke("inpaint", imgs, *inpaint_args(small_checkpoint, out, "--json", "--batch-size", 1))
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(l["input"]).name for l in lines] == [f"img000{i}.png" for i in range(4)]
    assert [l["status"] for l in lines] == ["done", "skipped", "done", "skipped"]


# ----------------------------------------------------------------------------- merge-manifests (D6, T7)

def test_merge_manifests_given_the_run_record_is_one_line(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"input": "a.png", "status": "done"}) + "\n")
    record = tmp_path / ".repaint-run.jsonl"
    record.write_text(json.dumps({"done": 1, "failed": 0, "settings": {}}) + "\n")
    r = invoke("merge-manifests", m, record)
    one_line_exit_2(r, str(record), "run record")


def test_merge_manifests_never_writes_over_a_fifo_or_an_input(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"input": "a.png", "status": "done"}) + "\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_line_exit_2(invoke("merge-manifests", m, "--out", fifo), str(fifo), "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    before = m.read_bytes()
    one_line_exit_2(invoke("merge-manifests", m, "--out", m), str(m), "input")
    assert m.read_bytes() == before


def test_sheet_command_never_writes_over_a_result(tmp_path):
    out = tmp_path / "out"
    photo(out / "a.png")
    photo(out / "b.png", seed=1)
    before = (out / "a.png").read_bytes()
    one_line_exit_2(invoke("sheet", out, "--out", out / "a.png"), str(out / "a.png"))
    assert (out / "a.png").read_bytes() == before
    assert invoke("sheet", out, "--out", out / "contact.png").exit_code == 0
    assert invoke("sheet", out, "--out", out / "contact.png").exit_code == 0  # its own sheet: replaced on a rerun


# ----------------------------------------------------------------------------- impute (D6, S11)

QUICK = ["--train-steps", 30, "--width", 16, "--blocks", 1, "--threads", 1, "--quiet"]


def small_table(path):
    rng = np.random.default_rng(0)
    rows = ["a,b"] + [f"{x:.2f},{'' if i % 5 == 0 else f'{2 * x:.2f}'}" for i, x in enumerate(rng.normal(size=30))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_impute_refuses_an_out_that_is_not_a_regular_file(tmp_path):
    """D6: --out /dev/null --overwrite (as root) replaced the device node with a regular file."""
    t = small_table(tmp_path / "t.csv")
    link = tmp_path / "null.csv"
    link.symlink_to(os.devnull)
    one_line_exit_2(invoke("impute", t, "--out", link, "--overwrite", *QUICK), str(link), "not a regular file")
    assert link.is_symlink()
    fifo = tmp_path / "f.csv"
    os.mkfifo(fifo)
    one_line_exit_2(invoke("impute", t, "--out", fifo, "--overwrite", *QUICK), str(fifo), "not a regular file")


def test_impute_outputs_that_collide_are_refused(tmp_path):
    t = small_table(tmp_path / "t.csv")
    r = invoke("impute", t, "--out", tmp_path / "m.yaml", "--save-model", tmp_path / "m", *QUICK)
    one_line_exit_2(r, str(tmp_path / "m.yaml"), "--save-model")
    r = invoke("impute", t, "--out", t, *QUICK)  # onto the input: said so, not "--overwrite replaces it"
    one_line_exit_2(r, "would overwrite the input")


def test_draws_of_two_runs_never_mix(tmp_path):
    """S11: -n 3 then -n 10 into one --draws left t_draw01..10 beside t_draw1..3."""
    t = small_table(tmp_path / "t.csv")
    draws = tmp_path / "draws"
    assert invoke("impute", t, "--out", tmp_path / "o.csv", "-n", 3, "--draws", draws, *QUICK).exit_code == 0
    assert sorted(p.name for p in draws.iterdir()) == ["t_draw1.csv", "t_draw2.csv", "t_draw3.csv"]
    r = invoke("impute", t, "--out", tmp_path / "o2.csv", "-n", 10, "--draws", draws, *QUICK)
    one_line_exit_2(r, "t_draw1.csv", "--overwrite")
    assert sorted(p.name for p in draws.iterdir()) == ["t_draw1.csv", "t_draw2.csv", "t_draw3.csv"]
    r = invoke("impute", t, "--out", tmp_path / "o2.csv", "-n", 10, "--draws", draws, "--overwrite", *QUICK)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in draws.iterdir()) == [f"t_draw{k:02d}.csv" for k in range(1, 11)]
