"""images/inpaint.py: nothing lost. Interruption, out-of-memory splits, fp16 NaN retries, flat memory; a NaN or
Inf sample fails its image alone, and a writer error never hides the first error nor stops the other images.
From issues 14, 21 and 25."""
import os
import signal
import subprocess
import sys
import time

import torch
from PIL import Image

from conftest import make_images, oom_over_one_image
from repaint_cli.images import inpaint as inpaint_mod
from repaint_cli.files import is_atomic_temp
from repaint_cli.images.inpaint import InpaintOptions, Reporter, inpaint
import json
import threading
from pathlib import Path
import pytest
from typer.testing import CliRunner
from repaint_cli.images import image_files as imageio
from repaint_cli.images import inpaint as pipeline
from repaint_cli.cli.app import app
from repaint_cli.images.provenance import RUN_RECORD


def opts(ckpt, out, **kw):
    base = dict(mask="box", model=str(ckpt), t_T=6, jump_length=2, jump_n_sample=2, out_dir=out)
    base.update(kw)
    return InpaintOptions(**base)


def read_all(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_out_of_memory_splits_the_batch_and_loses_nothing(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 4)
    inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "ref", batch_size=1))
    monkeypatch.setattr(inpaint_mod, "sample_batch", oom_over_one_image(inpaint_mod.sample_batch))
    rep = Reporter()
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "split", batch_size=4), rep)
    assert summary.done == 4 and summary.failed == 0
    assert any("out of memory at batch 4" in line for line in rep.lines)
    assert read_all(tmp_path / "ref") == read_all(tmp_path / "split")


def test_non_finite_half_precision_batch_is_retried_in_fp32(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 2)
    inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "ref", batch_size=2))
    real_prepare = inpaint_mod.prepare_model

    class Overflowing(torch.nn.Module):  # stands in for an fp16 UNet that overflows
        dtype = torch.float16

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t, **kw):
            return self.inner(x, t, **kw) * float("inf")

    def prepare(model, device, engine_opts):
        wrapped = real_prepare(model, device, engine_opts)
        return wrapped if engine_opts.precision == "fp32" else Overflowing(wrapped)

    monkeypatch.setattr(inpaint_mod, "prepare_model", prepare)
    rep = Reporter()
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "retry", batch_size=2), rep)
    assert summary.done == 2
    assert any("NaN/Inf" in line and "fp32" in line for line in rep.lines)
    assert read_all(tmp_path / "ref") == read_all(tmp_path / "retry")


def _cli(*args):
    return [sys.executable, "-m", "repaint_cli", *[str(a) for a in args]]


def test_ctrl_c_stops_after_the_batch_and_a_rerun_finishes(tmp_path, small_checkpoint):
    imgs = make_images(tmp_path / "imgs", 12)
    out = tmp_path / "out"
    cmd = _cli("inpaint", imgs, "--mask", "box", "--model", small_checkpoint, "--t-T", 20, "--jump-length", 5,
               "--jump-n-sample", 3, "--batch-size", 1, "--out", out, "--threads", 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(out.glob("*.png"))):
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr[-2000:]
    assert "rerun the same command" in stderr
    first = sorted(out.glob("img*.png"))
    assert 0 < len(first) < 12
    assert not [f for f in out.iterdir() if is_atomic_temp(f)]  # no temp files
    for f in first:  # every written output is complete
        Image.open(f).load()
    p2 = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=env, timeout=600)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert len(list(out.glob("img*.png"))) == 12
    assert p2.stdout.count('"skipped"') == len(first)


def test_second_ctrl_c_stops_at_once(tmp_path, small_checkpoint):
    imgs = make_images(tmp_path / "imgs", 3)
    out = tmp_path / "out"
    # the paper schedule on 3 images takes minutes here: stopping in seconds means "at once"
    cmd = _cli("inpaint", imgs, "--mask", "box", "--model", small_checkpoint, "--preset", "paper",
               "--batch-size", 3, "--out", out, "--threads", 1)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and not out.is_dir():  # created after the handler is installed
        time.sleep(0.02)
    time.sleep(1.0)
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr[-2000:]
    assert time.time() - t0 < 15
    assert "stopping after the current batch" in stderr and "interrupted" in stderr
    assert not list(out.iterdir())  # the batch never finished: nothing written, no temp files


def test_memory_stays_flat_over_a_long_run(tmp_path, small_checkpoint):
    code = ("import resource,sys;from repaint_cli.images.inpaint import InpaintOptions,inpaint;"
            "s=inpaint([sys.argv[1]],InpaintOptions(mask='box',model=sys.argv[2],t_T=2,jump_length=1,jump_n_sample=1,"
            "out_dir=sys.argv[3],batch_size=4));assert s.done==int(sys.argv[4]),s;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peaks = {}
    for n in (40, 320):
        imgs = make_images(tmp_path / f"imgs{n}", n, size=24, seed=n)
        r = subprocess.run([sys.executable, "-c", code, str(imgs), str(small_checkpoint), str(tmp_path / f"out{n}"), str(n)],
                           capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr[-2000:]
        peaks[n] = int(r.stdout.split()[-1]) / 1024  # MiB
    assert peaks[320] < peaks[40] + 25, peaks  # 8x the images, (almost) the same peak


def test_only_the_non_finite_images_are_redone_in_fp32_with_their_own_split_state(tmp_path, small_checkpoint,
                                                                                   monkeypatch):
    """Issue 37.3: one NaN image redid its whole batch in fp32, and an out-of-memory in that retry shrank every
    later fp16 batch. Now only the flagged images are redone (their noise is keyed to them: the same bytes as
    in any batch) and the retry's splits stay its own."""
    imgs = make_images(tmp_path / "imgs", 8)
    inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "ref", batch_size=4))
    real_prepare, real_sample = inpaint_mod.prepare_model, inpaint_mod.sample_batch

    class Half(torch.nn.Module):  # stands in for the fp16 UNet (same numbers: the NaN comes from below)
        dtype = torch.float16

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t, **kw):
            return self.inner(x, t, **kw)

    def prepare(model, device, engine_opts):
        wrapped = real_prepare(model, device, engine_opts)
        return wrapped if engine_opts.precision == "fp32" else Half(wrapped)

    calls = []

    def sample(model, st, batch, *a, **k):
        half = getattr(model, "dtype", None) == torch.float16
        calls.append(("fp16" if half else "fp32", [p.job.stem for p in batch]))
        if not half and len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated, fp32 retry)")
        x = real_sample(model, st, batch, *a, **k)
        for i, p in enumerate(batch):
            if half and p.job.stem in ("img0001", "img0002"):
                x[i] = float("nan")
        return x

    monkeypatch.setattr(inpaint_mod, "prepare_model", prepare)
    monkeypatch.setattr(inpaint_mod, "sample_batch", sample)
    rep = Reporter()
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "retry", batch_size=4), rep)
    assert summary.done == 8 and summary.failed == 0
    assert calls == [("fp16", ["img0000", "img0001", "img0002", "img0003"]),
                     ("fp32", ["img0001", "img0002"]), ("fp32", ["img0001"]), ("fp32", ["img0002"]),
                     ("fp16", ["img0004", "img0005", "img0006", "img0007"])]  # still 4 at a time
    assert any("NaN/Inf" in line and "2 image(s)" in line for line in rep.lines)
    assert read_all(tmp_path / "ref") == read_all(tmp_path / "retry")  # the retried images bit for bit


def test_an_inf_in_the_models_eps_fails_the_image_instead_of_being_clipped_away(tmp_path, small_checkpoint,
                                                                                monkeypatch):
    """Issue 37.5: an Inf eps became x0 = -1 after the clip and the image was written as if nothing happened."""
    imgs = make_images(tmp_path / "imgs", 2)
    real_prepare = inpaint_mod.prepare_model

    class InfOnce(torch.nn.Module):  # the first call of the run (the first image's first step) gives eps = Inf
        dtype = torch.float32

        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x, t, **kw):
            out = self.inner(x, t, **kw)
            self.calls += 1
            return torch.cat([torch.full_like(out[:, :3], float("inf")), out[:, 3:]], 1) if self.calls == 1 else out

    monkeypatch.setattr(inpaint_mod, "prepare_model", lambda *a: InfOnce(real_prepare(*a)))
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out", batch_size=1))
    assert (summary.done, summary.failed) == (1, 1)
    failed = [r for r in summary.results if r.status == "failed"]
    assert "img0000.png" in failed[0].error and "NaN/Inf" in failed[0].error


runner = CliRunner()


FAST = dict(mask="box", t_T=4, jump_length=2, jump_n_sample=1)


def opts_resume(ckpt, out, **kw):
    return InpaintOptions(**{**FAST, "model": str(ckpt), "out_dir": out, **kw})


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def leftovers(folder):
    """Temporary or lock files left in a folder."""
    return [p.name for p in Path(folder).iterdir() if is_atomic_temp(p) or p.name.endswith(".lock")]


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
    ref = inpaint([str(imgs)], opts_resume(small_checkpoint, tmp_path / "ref", batch_size=3))
    assert ref.done == 3
    monkeypatch.setattr(pipeline, "sample_batch", nan_for("img0001", pipeline.sample_batch))
    rep, out = Reporter(), tmp_path / "out"
    summary = inpaint([str(imgs)], opts_resume(small_checkpoint, out, batch_size=3), rep)
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
        inpaint([str(imgs)], opts_resume(small_checkpoint, out, batch_size=1, manifest=str(tmp_path / "m.jsonl")))
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
    summary = inpaint([str(imgs)], opts_resume(small_checkpoint, tmp_path / "out", batch_size=1), rep)
    assert (summary.done, summary.failed) == (1, 1)
    assert any("img0000.png: cannot write (ValueError: writer bug)" in line for line in rep.lines)
