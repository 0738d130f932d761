"""images/resume.py: reruns keep finished images, and the locks of images being made let two runs on one --out
share the work (a killed run's lock never blocks; a finished rerun loads no model). From issues 21, 25 and 32."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from conftest import ROOT, make_images
from repaint_cli.images import inpaint as pipeline
from repaint_cli.images import resume
from repaint_cli.models import checkpoints
from repaint_cli.cli.app import app
from repaint_cli.files import is_atomic_temp
from repaint_cli.images.inpaint import InpaintOptions, Reporter, inpaint

runner = CliRunner()
FAST = dict(mask="box", t_T=4, jump_length=2, jump_n_sample=1)


def opts(ckpt, out, **kw):
    return InpaintOptions(**{**FAST, "model": str(ckpt), "out_dir": out, **kw})


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def leftovers(folder):
    """Temporary or lock files left in a folder."""
    return [p.name for p in Path(folder).iterdir() if is_atomic_temp(p) or p.name.endswith(".lock")]


# ----------------------------------------------------------------------------- B1: a non-finite sample


# ----------------------------------------------------------------------------- B2: ICC profile and DPI


# ----------------------------------------------------------------------------- B3: device and model file


# ----------------------------------------------------------------------------- B4: cleanup never hides the error


# ----------------------------------------------------------------------------- B5: MP4 probe, rank timeout


RANK_SCRIPT = textwrap.dedent("""
    import sys, time
    from repaint_cli.runtime import torchrun as dist
    rank = dist.from_env()
    dist.init(rank, "cpu")
    if rank.rank == 1:  # outside torchrun no agent ends the job when a rank dies or hangs
        sys.exit(0) if sys.argv[1] == "dies" else time.sleep(600)
    t = time.time()
    parts = dist.gather(("summary", rank.rank), rank)
    dist.finish(rank)
    print(len(parts), round(time.time() - t))
""")


# ----------------------------------------------------------------------------- B6: the default model, far fills


# ----------------------------------------------------------------------------- B7: two runs on one --out

def test_an_output_another_run_is_making_is_skipped(tmp_path, small_checkpoint):
    imgs = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    out.mkdir()
    held = resume.lock_output(out / "img0000.png")  # as another run making it holds it
    assert held is not None and resume.lock_output(out / "img0000.png") is None
    rep = Reporter()
    try:
        summary = inpaint([str(imgs)], opts(small_checkpoint, out), rep)
    finally:
        held.release()
    assert (summary.done, summary.skipped) == (1, 1)
    skipped = [r for r in summary.results if r.status == "skipped"][0]
    assert skipped.input.endswith("img0000.png") and skipped.warnings == ["in progress by another run"]
    assert not (out / "img0000.png").exists() and (out / "img0001.png").is_file()
    assert any("1 image(s) skipped, in progress by another run" in line for line in rep.lines)
    assert not leftovers(out)  # this run's lock removed once written, the other's on release


def test_an_output_finished_by_another_run_meanwhile_is_not_redone(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    real_take = pipeline.OutputLocks.take

    def take(self, job, overwrite):  # the other run writes img0000 after this one listed its jobs
        if job.stem == "img0000":
            job.output.write_bytes(b"made by the other run")
        return real_take(self, job, overwrite)

    monkeypatch.setattr(pipeline.OutputLocks, "take", take)
    summary = inpaint([str(imgs)], opts(small_checkpoint, out))
    assert (summary.done, summary.skipped) == (1, 1)
    assert (out / "img0000.png").read_bytes() == b"made by the other run"


def test_a_lock_of_a_killed_run_does_not_block(tmp_path):
    target = tmp_path / "a.png"
    code = (f"import os, sys; from repaint_cli.images.resume import lock_output; l = lock_output({str(target)!r}); "
            f"os._exit(0 if l is not None else 3)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (tmp_path / ".a.png.lock").exists()  # left behind by the killed process...
    lock = resume.lock_output(target)
    assert lock is not None  # ...but not locked any more
    lock.release()
    assert not (tmp_path / ".a.png.lock").exists()


# ----------------------------------------------------------------------------- B8, B9: finished reruns, preset

def test_a_rerun_with_every_output_present_loads_no_model(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 3)
    out = tmp_path / "out"
    args = ["inpaint", imgs, "--mask", "box", "--model", small_checkpoint, "--t-T", 4, "--jump-length", 2,
            "--jump-n-sample", 1, "--out", out]
    assert invoke(*args, "--quiet").exit_code == 0

    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(checkpoints, "load", refuse)
    monkeypatch.setattr(pipeline, "prepare_model", refuse)
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert "all 3 outputs exist" in r.stderr and "images 0/0" not in r.stderr
    assert "done 0, failed 0, skipped 3" in r.stderr
    r = invoke(*args, "--seed", 1)  # and the settings are still compared
    assert r.exit_code == 0 and "3 existing output(s) were made with other settings (seed 0 -> 1)" in r.stderr


FAST_PLAN = ["--t-T", 4, "--jump-length", 2, "--jump-n-sample", 1, "--quiet"]


def invoke_plan(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def inpaint_args(ckpt, out, *more):
    return ["--mask", "box", "--model", ckpt, "--out", out, *FAST_PLAN, *more]


def test_a_rerun_removes_a_stale_lock_of_a_finished_output(tmp_path, small_checkpoint):
    """N10: a run killed after writing img0000.png but before removing its lock left the lock for good."""
    imgs = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    assert invoke_plan("inpaint", imgs, *inpaint_args(small_checkpoint, out)).exit_code == 0
    stale = out / ".img0000.png.lock"
    stale.write_bytes(b"")  # as the killed run left it: nobody holds it
    held = resume.lock_output(out / "img0001.png")  # a run still making img0001: its lock stays
    try:
        r = invoke_plan("inpaint", imgs, *inpaint_args(small_checkpoint, out))
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
        r = invoke_plan("inpaint", imgs, *inpaint_args(small_checkpoint, out))
    finally:
        held.release()
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [str(out / "img0001.png")]
