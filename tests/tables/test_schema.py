"""Issues 21 and 25 for ``repaint impute``: no silent wrong answers, and what a new user hit."""
import csv
import gc
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from repaint_cli.cli.app import app

from impute_cli import TINY, TINY_REPAINT, TINY_USE, invoke, linear_table, one_error_line


# --- A1: --method ddim and guidance; one --eta default ----------------------------------------

def test_ddim_with_guidance_runs_like_inpaint(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "g.csv", "--method", "ddim", *TINY)
    assert r.exit_code == 0, r.output
    r = invoke(src, "--out", tmp_path / "o.csv", "--method", "ddim", "--guidance", 0, "--eta", 0.5, *TINY)
    assert r.exit_code == 0, r.output
    r = invoke(src, "--out", tmp_path / "p.csv", "--eta", 0.5, *TINY)
    assert r.exit_code == 2 and "--method ddim" in one_error_line(r)


def test_ddim_step_uses_the_guidance_term():
    """The DDIM step moves its predicted noise by -sqrt(1 - abar) * term: x0 by (1 - abar) / sqrt(abar) * term."""
    from repaint_cli.core.diffusion import Diffusion
    from repaint_cli.core.sampler import Conditioning, ddim_step

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    coefs = Diffusion.create(steps=1000, timestep_respacing="10").coefficients(eta=0.0)
    args = dict(gt=torch.zeros(2, 3), keep=torch.zeros(2, 3, dtype=torch.bool), keys=torch.zeros(2, 2, dtype=torch.int64),
                coefs=coefs, method="ddim")
    x, t = torch.full((2, 3), 0.1), torch.tensor(5)
    plain, x0 = ddim_step(Zero(), x, Conditioning(**args), t, torch.tensor(0), torch.tensor(True))
    term = torch.full((2, 3), 0.01)
    guided, gx0 = ddim_step(Zero(), x, Conditioning(**args, cond_fn=lambda x, t: term), t, torch.tensor(0),
                            torch.tensor(True))
    i = t.reshape(1)
    shift = coefs.sqrt_one_minus_alphas_cumprod[i] ** 2 * coefs.sqrt_recip_alphas_cumprod[i] * term
    assert torch.allclose(gx0, x0 + shift) and not torch.equal(guided, plain)


def test_eta_has_one_default_in_both_commands():
    from repaint_cli.tables.impute import ImputeOptions
    from repaint_cli.images.options import InpaintOptions

    assert ImputeOptions().eta == InpaintOptions().sample.eta == 0.0
    r = runner.invoke(app, ["impute", "--help"], env={"COLUMNS": "200"})
    assert "--eta" in r.stdout


# --- A2: a reused model and a constant column -------------------------------------------------

def test_reused_model_fills_a_constant_column_with_this_tables_constant(tmp_path):
    first, saved = tmp_path / "first.csv", tmp_path / "m"
    linear_table(first, extra=("unit", lambda i: "x"))
    r = invoke(first, "--out", tmp_path / "o1.csv", "--save-model", saved, *TINY)
    assert r.exit_code == 0, r.output
    second, out = tmp_path / "second.csv", tmp_path / "o2.csv"
    linear_table(second, seed=1, extra=("unit", lambda i: "" if i % 3 == 0 else "y"))
    r = invoke(second, "--out", out, "--model", f"{saved}.yaml", *TINY_USE)
    assert r.exit_code == 0, r.output
    assert "('y')" in r.stderr.replace("(y)", "('y')")
    with out.open(newline="") as f:
        assert {row["unit"] for row in csv.DictReader(f)} == {"y"}
    third = tmp_path / "third.csv"
    linear_table(third, seed=2, extra=("unit", lambda i: "" if i % 3 == 0 else "yz"[i % 2]))
    r = invoke(third, "--out", tmp_path / "o3.csv", "--model", f"{saved}.yaml", *TINY_USE)
    assert r.exit_code == 2 and "column 'unit'" in one_error_line(r)


# --- A3, A4: --save-model and --model paths ---------------------------------------------------

def test_save_model_path_is_checked_before_training(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    linear_table(src)
    r = invoke(src, "--out", out, "--save-model", tmp_path / "nodir" / "m", *TINY)
    assert r.exit_code == 2 and "nodir" in one_error_line(r)
    assert "training" not in r.stderr and not out.exists()
    (tmp_path / "m.yaml").write_text("keep me\n")
    r = invoke(src, "--out", out, "--save-model", tmp_path / "m", *TINY)
    assert r.exit_code == 2 and "--overwrite" in one_error_line(r) and not out.exists()
    assert (tmp_path / "m.yaml").read_text() == "keep me\n"


def test_parquet_timestamp_column_model_card_round_trips(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    n = 40
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    frame = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=n, freq="D").where(np.arange(n) % 2 == 0,
                                                                                            pd.Timestamp("2024-06-01")),
                          "x": x, "y": np.where(np.arange(n) % 4 == 0, np.nan, 2 * x)})
    src, saved = tmp_path / "t.parquet", tmp_path / "m"
    frame.to_parquet(src)
    r = invoke(src, "--out", tmp_path / "o.parquet", "--save-model", saved, "--categorical", "when", *TINY)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.yaml").is_file() and (tmp_path / "m.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    r = invoke(src, "--out", tmp_path / "o2.parquet", "--model", f"{saved}.yaml", "--categorical", "when", *TINY_USE)
    assert r.exit_code == 0, r.output


def test_save_table_model_writes_both_or_neither(tmp_path, monkeypatch):
    import yaml

    from repaint_cli.tables.denoiser import TableDenoiser
    from repaint_cli.tables.model_config import TableModelConfig
    from repaint_cli.tables.model_files import save_table_model

    model = TableDenoiser(2, TableModelConfig(width=8, blocks=1))

    def broken(*a, **k):
        raise yaml.representer.RepresenterError("cannot represent")

    monkeypatch.setattr(yaml, "safe_dump", broken)
    with pytest.raises(Exception):
        save_table_model(tmp_path / "m", model, [], {})
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_behind_model_is_one_line(tmp_path):
    src, saved = tmp_path / "t.csv", tmp_path / "m"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", "--save-model", saved, *TINY)
    assert r.exit_code == 0, r.output
    (tmp_path / "m.safetensors").unlink()
    r = invoke(src, "--out", tmp_path / "o2.csv", "--model", f"{saved}.yaml", *TINY_USE)
    assert r.exit_code == 2 and "m.safetensors" in one_error_line(r)
    (tmp_path / "m.safetensors").write_bytes(b"not weights")
    r = invoke(src, "--out", tmp_path / "o2.csv", "--model", f"{saved}.yaml", *TINY_USE)
    assert r.exit_code == 2 and "m.safetensors" in one_error_line(r)


# --- A5: missing-value spellings ----------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["null", "nan", "N/A", "NULL", "None"])
def test_common_missing_spellings_keep_a_column_numeric(tmp_path, spelling):
    from repaint_cli.tables.schema import infer_columns
    from repaint_cli.tables.table_files import read_table

    src = tmp_path / "t.csv"
    src.write_text("x,y\n" + "".join(f"{i},{spelling if i == 3 else 2 * i}\n" for i in range(10)))
    table = read_table(src)
    assert not table.observed[3, 1]
    assert [c.kind for c in infer_columns(table)] == ["int", "int"]


def test_a_numeric_column_with_a_few_odd_cells_is_named_in_a_warning(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src, n=40)
    lines = src.read_text().splitlines()
    lines[5] = lines[5].split(",")[0] + ",?"
    src.write_text("\n".join(lines) + "\n")
    r = invoke(src, "--out", tmp_path / "o.csv", *TINY)
    assert r.exit_code == 0, r.output
    warning = next(line for line in r.stderr.splitlines() if "column 'y'" in line and "--na-values" in line)
    assert "'?'" in warning


# --- A6 --------------------------------------------------------------------------------------------

def test_read_table_closes_its_file(tmp_path):
    from repaint_cli.tables.table_files import read_table

    src = tmp_path / "t.csv"
    linear_table(src)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_table(src)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_training_leaves_torch_global_rng_alone():
    from repaint_cli.tables.denoiser import train_table_model
    from repaint_cli.tables.model_config import TableModelConfig, TrainSettings

    torch.manual_seed(123)
    state = torch.get_rng_state()
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    a = train_table_model(x, np.ones_like(x, bool), TableModelConfig(width=8, blocks=1), TrainSettings(steps=3))
    assert torch.equal(torch.get_rng_state(), state)
    b = train_table_model(x, np.ones_like(x, bool), TableModelConfig(width=8, blocks=1), TrainSettings(steps=3))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_impute_table_leaves_the_callers_options_alone(tmp_path):
    from repaint_cli.tables.impute import ImputeOptions, impute_table
    from repaint_cli.tables.model_config import TableModelConfig, TrainSettings
    from repaint_cli.tables.table_files import read_table

    src, saved = tmp_path / "t.csv", tmp_path / "m"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", "--save-model", saved, *TINY, *TINY_REPAINT)
    assert r.exit_code == 0, r.output
    # (a saved model fixes its size and training: those are left at None, the loaded model's come in)
    opts = ImputeOptions(samples=1, t_T=10, jump_length=5, jump_n_sample=1, method="repaint")
    impute_table(read_table(src), opts, model_path=f"{saved}.yaml")
    assert opts.model == TableModelConfig() and opts.train == TrainSettings() and opts.rounds is None


# --- A7: semicolons and tabs ----------------------------------------------------------------------

@pytest.mark.parametrize("name, sep", [("semi.csv", ";"), ("tab.tsv", "\t"), ("tab.txt", "\t")])
def test_delimiter_is_sniffed_and_kept(tmp_path, name, sep):
    src, out = tmp_path / name, tmp_path / ("o" + Path(name).suffix)
    linear_table(src, sep=sep, extra=("note", lambda i: "a,b" if sep != "," and i % 2 else "c"))
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    assert "no missing cell" not in r.stderr
    with out.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=sep))
    assert rows[0] == ["x", "y", "note"] and all(len(row) == 3 and row[1] != "" for row in rows[1:])


def test_sep_option_and_a_one_column_read_is_refused(tmp_path):
    src = tmp_path / "semi.csv"
    linear_table(src, sep=";")
    r = invoke(src, "--out", tmp_path / "o.csv", "--sep", ",", *TINY)
    assert r.exit_code == 2 and "--sep" in one_error_line(r) and "semi.csv" in one_error_line(r)
    r = invoke(src, "--out", tmp_path / "o.csv", "--sep", ";", *TINY)
    assert r.exit_code == 0, r.output


# --- A8: an unwritable --out folder ---------------------------------------------------------------

def test_unwritable_out_folder_is_refused_before_training(tmp_path, monkeypatch):
    src = tmp_path / "t.csv"
    linear_table(src)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == blocked else real_access(p, mode, **k))
    r = invoke(src, "--out", blocked / "o.csv", *TINY)
    assert r.exit_code == 2 and "blocked" in one_error_line(r) and "training" not in r.stderr
    monkeypatch.undo()
    if Path("/proc").is_dir():  # a folder even root cannot create files in
        r = invoke(src, "--out", "/proc/o.csv", *TINY)
        assert r.exit_code == 2 and "/proc" in one_error_line(r) and "training" not in r.stderr
    afile = tmp_path / "afile"
    afile.write_text("")
    r = invoke(src, "--out", afile / "o.csv", *TINY)
    assert r.exit_code == 2 and "afile" in one_error_line(r)


# --- A9: progress without a terminal, Ctrl-C keeps the model ------------------------------------

def test_progress_lines_without_a_terminal(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "o.csv", *TINY)
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert any(line.startswith("training") and "50%" in line and "overall" in line for line in lines), r.stderr
    assert any(line.startswith("imputing") and "100%" in line for line in lines), r.stderr


@pytest.mark.parametrize("sampler, method", [("point_samples", []), ("sample_rows", TINY_REPAINT)])
def test_ctrl_c_while_imputing_keeps_the_trained_model(tmp_path, monkeypatch, sampler, method):
    """Both kinds of model; the rerun names no --method: the kept model's kind chooses it."""
    import repaint_cli.tables.impute as impute

    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    linear_table(src)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(impute, sampler, interrupted)
    r = invoke(src, "--out", out, *TINY, *method)
    assert r.exit_code == 130 and not out.exists()
    kept = tmp_path / "o.csv.model.yaml"
    assert kept.is_file() and (tmp_path / "o.csv.model.safetensors").is_file()
    assert str(kept) in r.stderr and "--model" in r.stderr
    monkeypatch.undo()
    r = invoke(src, "--out", out, "--model", kept, *TINY_USE, *method[2:])
    assert r.exit_code == 0 and "training" not in r.stderr, r.output


# --- A10: the thread count ---------------------------------------------------------------------------

def test_same_table_at_one_and_two_threads(tmp_path):
    src = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    src.write_text("a,b,c\n" + "".join(",".join("" if (i + j) % 4 == 0 else f"{v:.6f}" for j, v in enumerate(row)) + "\n"
                                        for i, row in enumerate(x)))
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"o{threads}.csv"
        r = invoke(src, "--out", out, *TINY[:-2], "--threads", threads, "--train-steps", 200, "--width", 128)
        assert r.exit_code == 0, r.output
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    torch.set_num_threads(1)


# --- A11: help panels, -n, BOM and CRLF ------------------------------------------------------------

def test_out_is_in_the_output_panel_and_samples_short_option():
    r = runner.invoke(app, ["impute", "--help"], env={"COLUMNS": "200"})
    text = r.stdout
    assert text.index("--out") > text.index("Outputs")
    assert "-n" in text[text.index("--samples") - 40:text.index("--samples") + 40]


def test_bom_crlf_and_short_options_are_kept(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    linear_table(src)
    src.write_bytes(b"\xef\xbb\xbf" + src.read_bytes().replace(b"\n", b"\r\n"))
    i = TINY.index("--samples")
    args = TINY[:i] + ["-n", 1] + TINY[i + 2:]
    r = invoke(src, "--out", out, *args)
    assert r.exit_code == 0, r.output
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfx,y\r\n") and data.count(b"\r\n") == 61 and b"\n" not in data.replace(b"\r\n", b"")
    r = invoke(src, "--out", tmp_path / "k.csv", *TINY[:i], "-k", 1, *TINY[i + 2:])
    assert r.exit_code == 0, r.output
