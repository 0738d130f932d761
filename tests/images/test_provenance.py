"""images/provenance.py: the settings each output records, the run record, and what a rerun compares."""
import json
import numpy as np
from PIL import Image
from typer.testing import CliRunner
from repaint_cli.images import inpaint as pipeline
from repaint_cli.images.image_files import read_png_text
from repaint_cli.images.provenance import RUN_RECORD, SETTINGS_KEY
import hashlib
import os
import subprocess
import sys
import torch
import yaml
from conftest import ROOT, make_images
from repaint_cli.images import image_files as imageio
from repaint_cli.images import setup as setup_mod
from repaint_cli.images.inpaint import InpaintOptions, Reporter, inpaint
from repaint_cli.images.provenance import recorded_settings, settings_changes
from cli_helpers import invoke, md5s, photo


runner = CliRunner()


FAST = ["--t-T", 6, "--jump-length", 2, "--jump-n-sample", 2, "--quiet"]


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


FAST_RESUME = dict(mask="box", t_T=4, jump_length=2, jump_n_sample=1)


def opts(ckpt, out, **kw):
    return InpaintOptions(**{**FAST_RESUME, "model": str(ckpt), "out_dir": out, **kw})


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
    inpaint([str(imgs)], InpaintOptions(**FAST_RESUME, out_dir=tmp_path / "out"))
    rec = json.loads(imageio.read_png_text(tmp_path / "out" / "a.png", SETTINGS_KEY))
    assert rec["model"] == "emoji32" and rec["preset"] == "fast"  # emoji32's card: sampling: {preset: fast}


FAST_PLAN = ["--t-T", 4, "--jump-length", 2, "--jump-n-sample", 1, "--quiet"]


def inpaint_args(ckpt, out, *more):
    return ["--mask", "box", "--model", ckpt, "--out", out, *FAST_PLAN, *more]


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
