"""Training: a few steps on a folder of images, resume after a stop, export that loads as a model."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_png
from repaint_cli.cli.app import app
from repaint_cli.models.checkpoints import load
from repaint_cli.training.train import TrainConfig, export, train


@pytest.fixture
def image_folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        write_png(d / f"x{i}.png", rng.integers(0, 256, (20 + i, 24, 3)))  # any size: centre-cropped
    return d


def small_cfg(steps):
    return TrainConfig(size=16, steps=steps, batch_size=4, save_every=2, eval_every=2, sample_every=4, warmup=2)


def test_train_resume_and_export(image_folder, tmp_path):
    run = tmp_path / "run"
    best = train(image_folder, run, small_cfg(4), log=lambda m: None)
    assert best.is_file() and (run / "state.pt").is_file() and (run / "samples_000004.png").is_file()
    first = torch.load(run / "state.pt", weights_only=True)
    assert first["step"] == 4
    lines = []
    train(image_folder, run, small_cfg(6), log=lines.append)  # resumes, does not restart
    assert any("resumed" in l and "step 4" in l for l in lines)
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 6
    evals = [json.loads(l)["step"] for l in (run / "eval.jsonl").read_text().splitlines()]
    assert evals == [2, 4, 6]
    out = export(run, tmp_path / "w" / "mine.safetensors")
    loaded = load(str(out))  # the sidecar YAML makes it a usable --model
    assert loaded.model.cfg.image_size == 16 and loaded.hparams["noise_schedule"] == "cosine"
    assert next(iter(loaded.model.parameters())).dtype == torch.float32


def test_train_command_and_bad_data(image_folder, tmp_path):
    r = CliRunner().invoke(app, ["train", str(image_folder), "--out", str(tmp_path / "r"), "--size", "16",
                                 "--steps", "2", "--batch-size", "2", "--sample-every", "100",
                                 "--export", str(tmp_path / "m.safetensors")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.safetensors").is_file()  # the last step always evaluates, so best EMA weights exist
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["train", str(empty), "--out", str(tmp_path / "r2"), "--size", "16", "--steps", "1"])
    assert r.exit_code == 2 and "no images found" in r.stderr
