"""Every writer of every wing goes through the one atomic writer (repaint_cli.files): a failure leaves nothing behind."""
from __future__ import annotations
import os
import stat
from pathlib import Path
import numpy as np
import pytest
from typer.testing import CliRunner
from repaint_cli import files
from repaint_cli.cli.app import app


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
