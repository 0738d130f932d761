"""Issue 22's shared pieces: one atomic writer (repaint_cli.files) used by every writer, the fitting
geometry in images/fit.py, every choice list in choices.py, one error exit and reporter (cli/output.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from repaint_cli import choices, files
from repaint_cli.cli.app import app
from conftest import ROOT

runner = CliRunner()


class Boom(RuntimeError):
    pass


def leftovers(folder: Path) -> list[str]:
    """Every file in ``folder`` (temporaries are hidden: listed too)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def fsyncs(monkeypatch):
    """The paths the one atomic writer fsyncs (it fsyncs every file before renaming it)."""
    seen: list[str] = []
    real = files._fsync_path
    monkeypatch.setattr(files, "_fsync_path", lambda p: (seen.append(Path(p).name), real(p)))
    return seen


def umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# ----------------------------------------------------------------------------- files.atomic_paths


def test_atomic_paths_are_both_or_neither(tmp_path):
    a, b = tmp_path / "m.safetensors", tmp_path / "m.yaml"
    with pytest.raises(Boom):
        with files.atomic_paths(a, b) as (ta, tb):
            ta.write_bytes(b"weights")
            raise Boom("the card's encoder failed")
    assert leftovers(tmp_path) == []
    with files.atomic_paths(a, b) as (ta, tb):
        ta.write_bytes(b"weights")
        tb.write_text("card")
    assert a.read_bytes() == b"weights" and b.read_text() == "card" and leftovers(tmp_path) == ["m.safetensors", "m.yaml"]
    assert stat.S_IMODE(a.stat().st_mode) == umask_mode()


# ----------------------------------------------------------------------------- every writer


def test_write_table_uses_the_atomic_writer(tmp_path, monkeypatch, fsyncs):
    import pandas as pd

    from repaint_cli.tables.table_files import CsvStyle, write_table

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    out = tmp_path / "t.csv"
    write_table(frame, out, "csv", CsvStyle())
    assert out.read_text() == "a,b\n1,x\n2,y\n" and fsyncs == [n for n in fsyncs if n.startswith(".t.csv.")] != []
    assert stat.S_IMODE(out.stat().st_mode) == umask_mode() and leftovers(tmp_path) == ["t.csv"]

    def boom(self, path, *a, **k):
        Path(path).write_text("a,b\n1,")  # half a table, then the encoder fails
        raise Boom("encoder")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(Boom):
        write_table(frame, tmp_path / "u.csv", "csv", CsvStyle())
    assert leftovers(tmp_path) == ["t.csv"]


def test_table_model_is_saved_both_or_neither_through_the_atomic_writer(tmp_path, monkeypatch, fsyncs):
    from repaint_cli.tables.denoiser import TableDenoiser
    from repaint_cli.tables.model_config import TableModelConfig
    from repaint_cli.tables.model_files import save_table_model

    model = TableDenoiser(3, TableModelConfig(width=8, blocks=1, time_dim=4))
    weights, card = save_table_model(tmp_path / "m", model, [], {})
    assert sorted(fsyncs)[0].startswith(".m.safetensors.") and sorted(fsyncs)[1].startswith(".m.yaml.")
    assert leftovers(tmp_path) == ["m.safetensors", "m.yaml"]

    real_write_text = Path.write_text

    def card_fails(self, *a, **k):
        real_write_text(self, "format: half")
        raise Boom("card encoder")

    monkeypatch.setattr(Path, "write_text", card_fails)
    with pytest.raises(Boom):
        save_table_model(tmp_path / "n", model, [], {})
    assert leftovers(tmp_path) == ["m.safetensors", "m.yaml"]  # neither n.safetensors nor n.yaml, no temporary


def test_training_writers_leave_nothing_on_failure(tmp_path, monkeypatch, fsyncs):
    import safetensors.torch
    import torch
    from PIL import Image

    from repaint_cli.training import train

    model = torch.nn.Linear(2, 2)
    train._save_atomic({"step": 1}, tmp_path / "state.pt")
    train.save_weights(model, tmp_path / "best.safetensors")
    assert leftovers(tmp_path) == ["best.safetensors", "state.pt"] and len(fsyncs) == 2

    def half_then_fail(obj, path, *a, **k):
        Path(path).write_bytes(b"half")
        raise Boom("encoder")

    monkeypatch.setattr(torch, "save", half_then_fail)
    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: half_then_fail(None, fp))
    with pytest.raises(Boom):
        train._save_atomic({"step": 2}, tmp_path / "state2.pt")
    with pytest.raises(Boom):
        train.save_weights(model, tmp_path / "best2.safetensors")

    class Flat(torch.nn.Module):  # a model whose samples are zeros, for sample_grid
        cfg = type("Cfg", (), {"image_size": 4})()

        def forward(self, x, t):
            return torch.zeros(x.shape[0], 6, *x.shape[2:])

    with pytest.raises(Boom):
        train.sample_grid(Flat(), {"steps": 10}, 1, tmp_path / "samples.png", steps=2)
    assert leftovers(tmp_path) == ["best.safetensors", "state.pt"]


def test_export_writes_through_the_atomic_writer(tmp_path, monkeypatch, fsyncs):
    import yaml

    from repaint_cli.training import train

    run = tmp_path / "run"
    run.mkdir()
    (run / "best_ema.safetensors").write_bytes(b"weights")
    (run / "config.yaml").write_text(yaml.safe_dump({"size": 8}))
    out = train.export(run, tmp_path / "w" / "mine.safetensors")
    assert out.read_bytes() == b"weights" and leftovers(tmp_path / "w") == ["mine.safetensors", "mine.yaml"]
    assert len(fsyncs) == 2

    def disk_full(p):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "_fsync_path", disk_full)
    with pytest.raises(OSError):
        train.export(run, tmp_path / "v" / "mine.safetensors")
    assert leftovers(tmp_path / "v") == []


def test_masks_generate_writes_through_the_atomic_writer(tmp_path, monkeypatch, fsyncs):
    out = tmp_path / "m"
    r = runner.invoke(app, ["masks", "generate", "--count", "2", "--size", "32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert leftovers(out) == ["thick_00000.png", "thick_00001.png"] and len(fsyncs) == 2
    assert stat.S_IMODE((out / "thick_00000.png").stat().st_mode) == umask_mode()

    def disk_full(p):
        Path(p).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "_fsync_path", disk_full)
    r = runner.invoke(app, ["masks", "generate", "--count", "1", "--size", "32", "--out", str(tmp_path / "n")])
    assert r.exit_code == 1 and "cannot write" in r.stderr and "No space left on device" in r.stderr
    assert leftovers(tmp_path / "n") == []


def test_emoji_npz_writer_leaves_nothing_on_failure(tmp_path, monkeypatch, fsyncs):
    import zipfile

    from repaint_cli.training import emoji_data

    emoji_data._save_npz_deterministic(tmp_path / "e.npz", {"train": np.zeros((1, 2, 2, 3), np.uint8)})
    assert leftovers(tmp_path) == ["e.npz"] and len(fsyncs) == 1
    monkeypatch.setattr(zipfile.ZipFile, "writestr", lambda *a, **k: (_ for _ in ()).throw(Boom("encoder")))
    with pytest.raises(Boom):
        emoji_data._save_npz_deterministic(tmp_path / "f.npz", {"train": np.zeros((1, 2, 2, 3), np.uint8)})
    assert leftovers(tmp_path) == ["e.npz"]


# ----------------------------------------------------------------------------- fit.py


def test_fitting_geometry_lives_in_images_fit():
    from repaint_cli.images import fit, image_files

    for name in ("FitPlan", "plan_fit", "apply_fit", "unfit"):
        assert getattr(fit, name).__module__ == "repaint_cli.images.fit"
    assert fit.FIT_MODES is choices.FIT_MODES
    keep = np.ones((40, 60), bool)
    keep[10:14, 20:30] = False
    plan = fit.plan_fit(keep, 32, "crop")
    rgb_S, keep_S = fit.apply_fit(plan, np.zeros((40, 60, 3), np.uint8), keep)
    assert rgb_S.shape == (32, 32, 3) and not keep_S.all()
    for name in ("_hole_bbox", "_window", "_square_pad", "_pad_reflect", "_hole_at_S", "_check_image"):
        assert not hasattr(image_files, name), name


# ----------------------------------------------------------------------------- choices.py


def test_every_choice_list_has_one_home():
    from repaint_cli.core import sampler
    from repaint_cli.images import frames, image_files, masks
    from repaint_cli.runtime import device

    assert device.PRECISIONS is choices.PRECISIONS and frames.ANIMATIONS is choices.ANIMATIONS
    assert tuple(sampler.METHODS) == choices.METHODS  # the step functions, keyed in the choice list's order
    assert masks.CONVENTIONS is choices.CONVENTIONS and not hasattr(image_files, "MASK_CONVENTIONS")
    assert not hasattr(image_files, "FIT_MODES")


def test_check_choice_names_the_closest_choice():
    assert choices.check_choice("fp16", choices.PRECISIONS, "--precision") == "fp16"
    with pytest.raises(choices.ChoiceError) as e:
        choices.check_choice("fp61", choices.PRECISIONS, "--precision")
    assert str(e.value) == "--precision fp61: use one of auto, fp32, fp16, bf16 (did you mean 'fp16'?)"
    with pytest.raises(ValueError, match="did you mean 'hole'"):
        from repaint_cli.images.image_files import read_mask

        read_mask("never-read.png", "holes")


@pytest.mark.parametrize("option,value,guess", [
    ("--precision", "bf61", "bf16"), ("--fit", "croop", "crop"), ("--animate", "gfi", "gif"),
    ("--method", "repiant", "repaint"), ("--mask-convention", "kept", "keep"), ("--preset", "fsat", "fast"),
])
def test_cli_choice_errors_are_one_line_with_the_closest_choice(tmp_path, option, value, guess):
    r = runner.invoke(app, ["inpaint", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), option, value])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0].startswith(f"error: {option} {value}: use one of") and f"did you mean '{guess}'?" in lines[0]


def test_choices_imports_nothing_heavy():
    code = ("import sys, repaint_cli.choices; "
            "print(sorted(m for m in ('numpy', 'torch', 'cv2', 'PIL', 'pandas') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- cli/output.py


def test_one_error_exit_and_one_reporter_module():
    from repaint_cli.cli import app as app_mod
    from repaint_cli.cli import impute, inpaint, masks, models, output, sheet

    for mod in (app_mod, impute, inpaint, masks, models, sheet):
        assert getattr(mod, "die", output.die) is output.die, mod
        assert not hasattr(mod, "_fail") and not hasattr(mod, "_RichProgress"), mod
    assert inpaint.rich_reporter is output.rich_reporter and impute.TableProgress is output.TableProgress
    assert app_mod.err is output.err is masks.err is impute.err is inpaint.err is models.err


def test_table_progress_log_lines(capsys):
    from rich.console import Console

    from repaint_cli.cli.output import TableProgress

    progress = TableProgress(Console(stderr=True, highlight=False), quiet=True)
    progress.log("a [b] note")  # info: hidden by --quiet
    progress.log("a [b] warning", "warning")
    progress.log("a [b] error", "error")
    assert capsys.readouterr().err.splitlines() == ["warning: a [b] warning", "error: a [b] error"]
