"""Issues 21 and 25: no silent wrong answers, and what a new user hit.

NaN samples fail their image alone, ICC and DPI survive, reruns compare the device and the file actually
loaded, cleanup never hides the first error, the MP4 probe leaves stderr alone, ranks do not wait for days,
the default model says what it is for, a fill far off the hole's colour is named, two runs on one --out share
the work, a finished rerun loads no model, the preset used is recorded."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageCms
from typer.testing import CliRunner

from conftest import ROOT, make_images, write_png
from repaint_cli.runtime import torchrun as dist
from repaint_cli.images import image_files as imageio
from repaint_cli.images import inpaint as pipeline
from repaint_cli.images import resume
from repaint_cli.images import setup as setup_mod
from repaint_cli.models import checkpoints
from repaint_cli.cli.app import app
from repaint_cli.files import is_atomic_temp
from repaint_cli.images.inpaint import InpaintOptions, Reporter, inpaint
from repaint_cli.images.provenance import RUN_RECORD, SETTINGS_KEY, recorded_settings, settings_changes

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

def nan_for(stem, sample_batch):
    """Wraps pipeline.sample_batch: the image named ``stem`` comes back NaN (in fp32, the default precision)."""
    def wrapped(model, st, batch, *a, **k):
        x = sample_batch(model, st, batch, *a, **k)
        for i, p in enumerate(batch):
            if p.job.stem == stem:
                x[i] = float("nan")
        return x
    return wrapped


def test_a_nan_sample_in_fp32_fails_its_image_alone(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 3)
    ref = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "ref", batch_size=3))
    assert ref.done == 3
    monkeypatch.setattr(pipeline, "sample_batch", nan_for("img0001", pipeline.sample_batch))
    rep, out = Reporter(), tmp_path / "out"
    summary = inpaint([str(imgs)], opts(small_checkpoint, out, batch_size=3), rep)
    assert (summary.done, summary.failed) == (2, 1)
    failed = [r for r in summary.results if r.status == "failed"]
    assert "img0001.png" in failed[0].error and "NaN/Inf" in failed[0].error
    assert sorted(p.name for p in out.glob("*.png")) == ["img0000.png", "img0002.png"]  # no black image recorded done
    for name in ("img0000.png", "img0002.png"):  # the others are exactly what they would be
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    assert not leftovers(out)


def test_a_nan_sample_exits_1_naming_the_file(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 2)
    monkeypatch.setattr(pipeline, "sample_batch", nan_for("img0000", pipeline.sample_batch))
    r = invoke("inpaint", imgs, "--mask", "box", "--model", small_checkpoint, "--t-T", 4, "--jump-length", 2,
               "--jump-n-sample", 1, "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 1, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "img0000.png" in errors[0]
    assert (tmp_path / "out" / "img0001.png").is_file() and not (tmp_path / "out" / "img0000.png").exists()


# ----------------------------------------------------------------------------- B2: ICC profile and DPI

def test_icc_profile_and_dpi_are_kept(tmp_path, small_checkpoint):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(imgs / "managed.png", icc_profile=icc, dpi=(300, 300))
    Image.fromarray(rgb).save(imgs / "photo.jpg", icc_profile=icc, dpi=(72, 72), quality=95)
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out"))
    assert summary.done == 2
    for name in ("managed.png", "photo.png"):
        with Image.open(tmp_path / "out" / name) as out:
            assert out.info.get("icc_profile") == icc, name
        assert imageio.read_image(tmp_path / "out" / name).dpi == pytest.approx(
            (300, 300) if name == "managed.png" else (72, 72), abs=0.01)


def test_an_image_without_profile_or_dpi_gets_none(tmp_path):
    write_png(tmp_path / "plain.png", np.zeros((4, 4, 3)))
    img = imageio.read_image(tmp_path / "plain.png")
    assert img.icc_profile is None and img.dpi is None
    imageio.write_image_atomic(tmp_path / "copy.png", img.rgb, icc_profile=img.icc_profile, dpi=img.dpi)
    with Image.open(tmp_path / "copy.png") as out:
        assert "icc_profile" not in out.info and "dpi" not in out.info


# ----------------------------------------------------------------------------- B3: device and model file

def test_a_rerun_on_another_device_says_so():
    assert settings_changes({"device": "cpu"}, {"device": "cuda"}) == ["device cpu -> cuda"]


def test_rerun_on_another_device_keeps_outputs_and_names_the_device(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 2)
    inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out"))
    assert recorded_settings(tmp_path / "out" / "img0000.png")["device"] == "cpu"
    monkeypatch.setattr(setup_mod, "pick_device", lambda name: torch.device("cuda"))  # no sampling happens
    rep = Reporter()
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out"), rep)
    assert summary.skipped == 2
    assert any("2 existing output(s) were made with other settings (device cpu -> cuda)" in line for line in rep.lines)


def test_the_file_actually_loaded_is_hashed_not_the_card_trusted(tmp_path, small_checkpoint, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "small.pt").write_bytes(small_checkpoint.read_bytes())
    hp = yaml.safe_load(small_checkpoint.with_suffix(".yaml").read_text())
    (weights / "mine.yaml").write_text(yaml.safe_dump({"name": "mine", "file": "small.pt", "sha256": "0" * 64,
                                                       "hparams": hp}))
    monkeypatch.setenv("REPAINT_WEIGHTS", str(weights))
    imgs = make_images(tmp_path / "imgs", 1)
    rep = Reporter()
    assert inpaint([str(imgs)], opts("mine", tmp_path / "out"), rep).done == 1
    rec = recorded_settings(tmp_path / "out" / "img0000.png")
    assert rec["model"] == "mine"
    assert rec["model_sha256"] == hashlib.sha256(small_checkpoint.read_bytes()).hexdigest()
    assert any("differs from model card mine's" in line for line in rep.lines)


def test_records_loads_neither_torch_nor_opencv():
    code = "import sys, repaint_cli.images.provenance; print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- B4: cleanup never hides the error

def test_a_writer_error_in_cleanup_does_not_hide_the_first_error(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 3)
    real_write, real_sample = imageio.write_image_atomic, pipeline.sample_batch
    sampling_failed = threading.Event()
    calls = []

    def write(path, *a, **k):
        if Path(path).name == "img0001.png":  # a writer bug, seen only once the cleanup collects it
            sampling_failed.wait(30)
            raise ValueError("writer bug")
        return real_write(path, *a, **k)

    def sample(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            sampling_failed.set()
            raise RuntimeError("boom")
        return real_sample(*a, **k)

    monkeypatch.setattr(imageio, "write_image_atomic", write)
    monkeypatch.setattr(pipeline, "sample_batch", sample)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        inpaint([str(imgs)], opts(small_checkpoint, out, batch_size=1, manifest=str(tmp_path / "m.jsonl")))
    assert not [t for t in threading.enumerate() if t.name.startswith("repaint-writer")]  # the writer was shut down
    runs = [json.loads(line) for line in (out / RUN_RECORD).read_text().splitlines()]
    assert (runs[0]["done"], runs[0]["failed"]) == (1, 1)
    statuses = {Path(r["input"]).name: r["status"] for r in map(json.loads, (tmp_path / "m.jsonl").open())}
    assert statuses == {"img0000.png": "done", "img0001.png": "failed"}
    assert not leftovers(out)


def test_a_writer_bug_fails_its_image_and_the_run_goes_on(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 2)
    real_write = imageio.write_image_atomic

    def write(path, *a, **k):
        if Path(path).name == "img0000.png":
            raise ValueError("writer bug")
        return real_write(path, *a, **k)

    monkeypatch.setattr(imageio, "write_image_atomic", write)
    rep = Reporter()
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out", batch_size=1), rep)
    assert (summary.done, summary.failed) == (1, 1)
    assert any("img0000.png: cannot write (ValueError: writer bug)" in line for line in rep.lines)


# ----------------------------------------------------------------------------- B5: MP4 probe, rank timeout

def test_the_mp4_probe_leaves_this_process_stderr_alone(capfd):
    """Another thread's messages while the probe runs all reach stderr (the probe once pointed the whole
    process's file descriptor 2 at the null device), and the probe's own complaints do not."""
    from repaint_cli.images import frames

    probing, written = threading.Event(), []

    def other_thread():
        while probing.is_set():
            os.write(2, b"other thread\n")
            written.append(1)
            time.sleep(0.001)

    frames.mp4_codec.cache_clear()
    probing.set()
    t = threading.Thread(target=other_thread)
    t.start()
    try:
        codec = frames.mp4_codec()
    finally:
        probing.clear()
        t.join()
        frames.mp4_codec.cache_clear()
    assert codec is None or codec in frames.MP4_CODECS
    err = capfd.readouterr().err
    assert err.splitlines() == ["other thread"] * len(written)


def test_rank_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(dist.TIMEOUT_ENV, raising=False)
    assert timedelta(hours=1) <= dist.summary_timeout() <= timedelta(days=1)
    for text, seconds in (("90", 90), ("90m", 5400), ("12h", 43200), ("1.5d", 129600)):
        monkeypatch.setenv(dist.TIMEOUT_ENV, text)
        assert dist.summary_timeout() == timedelta(seconds=seconds)
    for bad in ("soon", "-5", "0", "5 weeks"):
        monkeypatch.setenv(dist.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=dist.TIMEOUT_ENV):
            dist.summary_timeout()


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


@pytest.mark.parametrize("other", ["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_is_not_waited_for_for_days(tmp_path, other):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "REPAINT_DIST_TIMEOUT": "5", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, other], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        out, err = procs[0].communicate(timeout=60)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert procs[0].returncode == 0, err
    assert out.split()[0] == "1"  # its own summary only
    assert "no summary from the other ranks" in err and "REPAINT_DIST_TIMEOUT" in err


# ----------------------------------------------------------------------------- B6: the default model, far fills

def test_the_default_model_says_what_it_is_for_once(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (230, 230, 250)).save(imgs / f"lavender{i}.png")
    rep = Reporter()
    summary = inpaint([str(imgs)], InpaintOptions(**FAST, out_dir=tmp_path / "out"), rep)
    assert summary.done == 2
    notes = [line for line in rep.lines if "trained on 32x32 emoji only" in line]
    assert len(notes) == 1 and rep.lines.index(notes[0]) <= 1 and "--model celeba256" in notes[0]
    assert "preset" in recorded_settings(tmp_path / "out" / "lavender0.png")


def dark_fill(sample_batch):
    """Wraps pipeline.sample_batch: every sample comes back near-black (as the default model on photos)."""
    def wrapped(*a, **k):
        return torch.full_like(sample_batch(*a, **k), -0.75)
    return wrapped


def test_a_fill_far_from_the_hole_border_colour_is_named(tmp_path, small_checkpoint, monkeypatch):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (230, 230, 250)).save(imgs / f"flat{i}.png")
    monkeypatch.setattr(pipeline, "sample_batch", dark_fill(pipeline.sample_batch))
    rep = Reporter()
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out"), rep)
    assert summary.done == 3
    far = [line for line in rep.lines if "far from their hole border's colour" in line]
    assert len(far) == 1 and far[0].startswith("3 image(s)") and "flat0.png" in far[0], rep.lines  # one line per run
    per_image = [w for r in summary.results for w in r.warnings if w.startswith("fill colour")]
    assert len(per_image) == 3 and "(32,32,32) far from the hole border's (230,230,250)" in per_image[0]


def test_a_fill_close_to_its_border_is_not_named(tmp_path):
    rgb = np.full((16, 16, 3), 200, np.uint8)
    keep = np.ones((16, 16), bool)
    keep[4:10, 4:10] = False
    rgb[~keep] = (190, 210, 205)
    fill, border = imageio.fill_and_border_colours(rgb, keep)
    assert fill.tolist() == [190, 210, 205] and border.tolist() == [200, 200, 200]
    assert imageio.fill_and_border_colours(rgb, np.ones((16, 16), bool)) is None


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


def test_the_preset_used_is_recorded(tmp_path, small_checkpoint):
    imgs = make_images(tmp_path / "imgs", 1)
    inpaint([str(imgs)], InpaintOptions(mask="box", model=str(small_checkpoint), t_T=4, out_dir=tmp_path / "a"))
    assert recorded_settings(tmp_path / "a" / "img0000.png")["preset"] == "paper"  # the schedule's base
    inpaint([str(imgs)], InpaintOptions(mask="box", model=str(small_checkpoint), preset="draft", t_T=4,
                                        out_dir=tmp_path / "b"))
    assert recorded_settings(tmp_path / "b" / "img0000.png")["preset"] == "draft"


def test_the_default_models_own_preset_is_recorded(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(imgs / "a.png")
    inpaint([str(imgs)], InpaintOptions(**FAST, out_dir=tmp_path / "out"))
    rec = json.loads(imageio.read_png_text(tmp_path / "out" / "a.png", SETTINGS_KEY))
    assert rec["model"] == "emoji32" and rec["preset"] == "fast"  # emoji32's card: sampling: {preset: fast}
