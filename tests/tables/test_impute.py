"""tables/impute.py: ``repaint impute``, RePaint on tables with a model trained per table (issue 17): a run
settled once, trained, then imputed; outputs checked before training; Ctrl-C keeps the trained model."""
import csv
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from repaint_cli.cli.app import app
from repaint_cli.tables.impute import ImputeOptions, impute_table, predict_table
from repaint_cli.tables.model_config import TableModelConfig, TrainSettings
from repaint_cli.tables.table_files import read_table
import os
import torch
from impute_cli import TINY, TINY_REPAINT, TINY_USE, linear_table, one_error_line
from repaint_cli.tables import impute
from impute_cli import mixed_table as mixed_table_messages
from cli_helpers import invoke as invoke_plan, one_line_exit_2

runner = CliRunner()
# small and quick: 150 training steps of the default (conditional) model
QUICK = ["--train-steps", 150, "-k", 2, "--width", 64, "--blocks", 2, "--threads", 1]
# the RePaint methods: 20 respaced steps with jumps back
REPAINT = ["--method", "repaint", "--t-T", 20, "--jump-length", 5, "--jump-n-sample", 2]


def invoke(*args):
    return runner.invoke(app, ["impute", *[str(a) for a in args]])


def quick_options(**over):
    kw = dict(samples=2, threads=1, train=TrainSettings(steps=150), model=TableModelConfig(width=64, blocks=2))
    if over.get("method", "conditional") != "conditional":
        kw.update(t_T=20, jump_length=5, jump_n_sample=2)
    kw.update(over)
    return ImputeOptions(**kw)


def mixed_table(path: Path, n=120, missing=0.25, seed=0):
    """A CSV with a float, an integer, a categorical and a two-decimal column, related to one another,
    with cells missing in every column. Returns the full (true) rows as strings and the missing mask."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    rows = [[f"{x:.3f}", str(int(round(40 + 10 * x))), "red" if x > 0 else "blue", f"{np.exp(1 + x) :.2f}"]
            for x in a]
    miss = rng.random((n, 4)) < missing
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "age", "color", "price"])
        for r, m in zip(rows, miss):
            w.writerow(["" if mm else v for v, mm in zip(r, m)])
    return rows, miss


def read_rows(path: Path):
    with path.open(newline="") as f:
        data = list(csv.reader(f))
    return data[0], data[1:]


def test_round_trip_keeps_observed_cells_types_and_fills_every_cell(tmp_path):
    src, out = tmp_path / "mixed.csv", tmp_path / "filled.csv"
    truth, miss = mixed_table(src)
    _, given = read_rows(src)
    r = invoke(src, "--out", out, *QUICK)
    assert r.exit_code == 0, r.output
    header, rows = read_rows(out)
    assert header == ["a", "age", "color", "price"]
    assert len(rows) == len(given)
    for got, was in zip(rows, given):
        for j, (g, w) in enumerate(zip(got, was)):
            assert g != "", "a cell was left empty"
            if w != "":
                assert g == w, "an observed cell changed"
    assert all(re.fullmatch(r"-?\d+", r[1]) for r in rows), "integer column got non-integers"
    assert all(float(r[0]) == float(r[0]) for r in rows)
    assert {r[2] for r in rows} <= {"red", "blue"}
    assert all(re.fullmatch(r"-?\d+\.\d\d", r[3]) for r in rows), "filled prices get the column's two decimals"
    ages = [int(r[1]) for r in rows]
    observed_ages = [int(w[1]) for w in given if w[1]]
    assert min(observed_ages) <= min(ages) and max(ages) <= max(observed_ages), "filled numbers stay in range"


@pytest.mark.parametrize("method", ["conditional", "repaint"])
def test_imputation_uses_the_other_columns(tmp_path, method):
    """b is 2a plus small noise: the model must learn that, and beat the column mean by far (both kinds)."""
    rng = np.random.default_rng(3)
    n = 400
    a = rng.normal(size=n)
    b = 2 * a + rng.normal(scale=0.2, size=n)
    miss_b = rng.random(n) < 0.3
    src = tmp_path / "ab.csv"
    src.write_text("a,b\n" + "".join(f"{x:.4f},{'' if m else f'{y:.4f}'}\n" for x, y, m in zip(a, b, miss_b)))
    opts = quick_options(samples=3, method=method, train=TrainSettings(steps=1200))
    res = impute_table(read_table(src), opts)
    filled = res.frame["b"].astype(float).to_numpy()
    mae = np.abs(filled[miss_b] - b[miss_b]).mean()
    mean_mae = np.abs(b[~miss_b].mean() - b[miss_b]).mean()
    assert mae < 0.4 * mean_mae, (mae, mean_mae)


def test_categorical_target_is_predicted_from_features(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=300)
    label = np.where(x > 0.3, "hi", np.where(x < -0.3, "lo", "mid"))
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("x,label\n" + "".join(f"{v:.3f},{l}\n" for v, l in zip(x[:240], label[:240])))
    test.write_text("x\n" + "".join(f"{v:.3f}\n" for v in x[240:]))
    out = tmp_path / "pred.csv"
    r = invoke(train, "--target", "label", "--predict", test, "--out", out, "--train-steps", 600, "-k", 3,
               "--threads", 1)  # the default schedule (quick) and guidance
    assert r.exit_code == 0, r.output
    header, rows = read_rows(out)
    assert header == ["x", "label"]
    assert [row[0] for row in rows] == [f"{v:.3f}" for v in x[240:]], "the test rows, in order"
    predicted = np.array([row[1] for row in rows])
    assert set(predicted) <= {"hi", "lo", "mid"}
    assert (predicted == label[240:]).mean() > 0.85


def test_regression_target(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=260)
    y = 3 * x + 1
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("x,y\n" + "".join(f"{a:.3f},{b:.3f}\n" for a, b in zip(x[:200], y[:200])))
    test.write_text("x,y\n" + "".join(f"{a:.3f},999\n" for a in x[200:]))  # the test's y is ignored
    res = predict_table(read_table(train), read_table(test, allow_missing_columns=True), "y",
                        quick_options(train=TrainSettings(steps=800)))
    pred = res.frame["y"].astype(float).to_numpy()
    assert len(pred) == 60 and not np.isclose(pred, 999).any()
    assert np.abs(pred - y[200:]).mean() < 0.5 * np.abs(y[:200].mean() - y[200:]).mean()


def test_draws_and_saved_model(tmp_path):
    src = tmp_path / "t.csv"
    mixed_table(src)
    out, draws, saved = tmp_path / "o.csv", tmp_path / "draws", tmp_path / "model"
    r = invoke(src, "--out", out, "--draws", draws, "--save-model", saved, *QUICK)
    assert r.exit_code == 0, r.output
    files = sorted(draws.iterdir())
    assert [f.name for f in files] == ["t_draw1.csv", "t_draw2.csv"]
    _, given = read_rows(src)
    for f in files:
        _, rows = read_rows(f)
        assert all(g == w for row, was in zip(rows, given) for g, w in zip(row, was) if w)
        assert all(g != "" for row in rows for g in row)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "model.yaml").is_file()
    again = tmp_path / "again.csv"
    r = invoke(src, "--out", again, "--model", tmp_path / "model.yaml", "-k", 2, "--threads", 1)
    assert r.exit_code == 0, r.output
    assert "training" not in r.stderr and "trained" not in r.stderr
    # a table of another schema is refused, naming the difference
    other = tmp_path / "other.csv"
    other.write_text("a,age,colour,price\n1.0,40,red,\n0.5,30,blue,2.0\n")
    r = invoke(other, "--out", tmp_path / "x.csv", "--model", saved)
    assert r.exit_code == 2 and "column 'color'" in r.stderr and "not in this table" in r.stderr
    teal = tmp_path / "teal.csv"
    teal.write_text("a,age,color,price\n1.0,40,teal,\n0.5,,red,2.0\n")
    r = invoke(teal, "--out", tmp_path / "x.csv", "--model", saved)
    assert r.exit_code == 2 and "'teal'" in r.stderr
    kind = tmp_path / "kind.csv"
    kind.write_text("a,age,color,price\nx,40,red,\ny,,blue,2.0\n")
    r = invoke(kind, "--out", tmp_path / "x.csv", "--model", saved)
    assert r.exit_code == 2 and "column 'a'" in r.stderr
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("content, fragment", [
    ("a,b\n1,\n2,\n3,\n", "column 'b' has no observed value"),
    ("a,b\n", "no rows"),
    ("", "empty file"),
    ("a,a\n1,2\n,3\n", "appears twice"),
])
def test_bad_tables_one_line_and_nothing_written(tmp_path, content, fragment):
    src, out = tmp_path / "bad.csv", tmp_path / "out.csv"
    src.write_text(content)
    r = invoke(src, "--out", out)
    assert r.exit_code == 2
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and fragment in errors[0], r.stderr
    assert str(src) in errors[0]
    assert list(tmp_path.iterdir()) == [src]


def test_binary_file_is_not_a_table(tmp_path):
    from conftest import write_png

    png = tmp_path / "picture.csv"
    write_png(tmp_path / "picture.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "picture.png").rename(png)
    r = invoke(png, "--out", tmp_path / "o.csv")
    assert r.exit_code == 2 and "not a CSV table" in r.stderr and "picture.csv" in r.stderr


def test_constant_column_gets_its_value_with_a_warning(tmp_path):
    src, out = tmp_path / "c.csv", tmp_path / "o.csv"
    rng = np.random.default_rng(0)
    src.write_text("x,unit,y\n" + "".join(f"{v:.2f},{'' if i % 4 == 0 else 'kg'},{'' if i % 5 == 0 else f'{2 * v:.2f}'}\n"
                                          for i, v in enumerate(rng.normal(size=40))))
    r = invoke(src, "--out", out, *QUICK)
    assert r.exit_code == 0, r.output
    assert "column 'unit' has one value only" in r.stderr
    _, rows = read_rows(out)
    assert {row[1] for row in rows} == {"kg"}


def test_outputs_are_checked_before_training(tmp_path):
    src = tmp_path / "t.csv"
    mixed_table(src)
    before = src.read_bytes()
    r = invoke(src, "--out", src, "--overwrite")
    assert r.exit_code == 2 and "would overwrite the input" in r.stderr
    assert src.read_bytes() == before
    existing = tmp_path / "o.csv"
    existing.write_text("keep me\n")
    r = invoke(src, "--out", existing)
    assert r.exit_code == 2 and "--overwrite" in r.stderr and existing.read_text() == "keep me\n"
    r = invoke(src, "--json")
    assert r.exit_code == 2 and "--out" in r.stderr
    r = invoke(src, "--out", tmp_path / "o2.csv", "--samples", 0)
    assert r.exit_code == 2 and "--samples" in r.stderr


def test_stdout_table_and_na_values(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("a,b\n1.0,2.0\n2.0,?\n3.0,6.0\n4.0,8.0\n?,10.0\n")
    r = invoke(src, "--na-values", "?", *QUICK)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "a,b" and len(lines) == 6 and "?" not in r.stdout
    assert lines[1] == "1.0,2.0"


def test_no_missing_cell_writes_the_table_unchanged(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    src.write_text("a,b\n1,x\n2,y\n")
    r = invoke(src, "--out", out, *QUICK)
    assert r.exit_code == 0 and "no missing cell" in r.stderr
    assert out.read_text() == src.read_text()


def test_reconstruction_guidance_is_the_gradient_of_the_observed_error():
    """With a model that predicts zero noise, x0 = x / sqrt(abar), and the term is
    -scale * abar / (1 - abar) * keep * (x0 - gt) / sqrt(abar), whether or not the sampler's
    forward pass is reused."""
    import torch

    from repaint_cli.core.guidance import KeepsGraph as _KeepsGraph
    from repaint_cli.tables.impute import reconstruction_guidance
    from repaint_cli.tables.denoiser import TableDenoiser, make_diffusion

    cfg = TableModelConfig(width=8, blocks=1)
    model = TableDenoiser(3, cfg)  # its output layer starts at zero: eps = 0
    gt = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    keep = torch.tensor([[True, False, True], [False, True, True]])
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([400, 400])
    a = make_diffusion(cfg).arrays.alphas_cumprod.float()[400]
    expected = -2.0 * a / (1 - a) * keep * (x / a.sqrt() - gt) / a.sqrt()
    net = _KeepsGraph(model)
    fn = reconstruction_guidance(net, gt, keep, 2.0)
    assert torch.allclose(fn(x, t), expected, atol=1e-5)  # no forward pass to reuse
    with torch.no_grad():
        net(x, t)
    assert net.last is not None
    assert torch.allclose(fn(x, t), expected, atol=1e-5)  # the sampler's pass, reused
    assert net.last is None


def test_parquet_output_without_pyarrow_is_refused_before_training(tmp_path, monkeypatch):
    import importlib.util

    src = tmp_path / "t.csv"
    mixed_table(src)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "pyarrow" else real(n, *a))
    r = invoke(src, "--out", tmp_path / "o.parquet", *QUICK)
    assert r.exit_code == 2 and "needs pyarrow" in r.stderr and "training" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_ddim_with_guidance_runs_like_inpaint(tmp_path):
    src = tmp_path / "t.csv"
    linear_table(src)
    r = invoke(src, "--out", tmp_path / "g.csv", "--method", "ddim", *TINY)
    assert r.exit_code == 0, r.output
    r = invoke(src, "--out", tmp_path / "o.csv", "--method", "ddim", "--guidance", 0, "--eta", 0.5, *TINY)
    assert r.exit_code == 0, r.output
    r = invoke(src, "--out", tmp_path / "p.csv", "--eta", 0.5, *TINY)
    assert r.exit_code == 2 and "--method ddim" in one_error_line(r)


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


REPAINT_MESSAGES = dict(method="repaint", t_T=10, jump_length=5, jump_n_sample=2, samples=2, guidance=0.0)


def tiny(**kw) -> impute.ImputeOptions:
    return impute.ImputeOptions(train=TrainSettings(steps=20), model=TableModelConfig(width=16, blocks=1),
                                threads=1, **kw)


def test_a_run_builds_its_jump_schedule_once(tmp_path, monkeypatch):
    """Two EM rounds, each imputing: the schedule is built once, in the plan, and every step reads it."""
    built = []
    real = impute.jump_schedule
    monkeypatch.setattr(impute, "jump_schedule", lambda p: built.append(p) or real(p))
    table = read_table(mixed_table_messages(tmp_path / "t.csv"))
    result = impute.impute_table(table, tiny(rounds=2, **REPAINT_MESSAGES))
    assert len(built) == 1
    assert result.stats["model_calls_per_row"] == impute.schedule_summary(real(built[0]))["unet_calls"] * 2


def test_plan_train_impute_is_impute_table(tmp_path):
    """The three steps in a row give the cells impute_table gives (which is those steps), and the plan holds the
    encoded table, the columns and the phases before anything is trained."""
    table = read_table(mixed_table_messages(tmp_path / "t.csv"))
    plan = impute.plan_impute(table, tiny())
    assert plan.x.shape == plan.keep.shape == (60, plan.encoder.width) and not plan.keep.all()
    assert [c.kind for c in plan.columns] == ["int", "float", "category", "date"]
    assert [name for name, _, _ in plan.phases] == ["training", "imputing"] and plan.schedule is None
    model = impute.train(plan)
    steps = impute.impute(plan, model).frame
    assert steps.equals(impute.impute_table(table, tiny()).frame)


def test_ctrl_c_while_imputing_carries_the_trained_model_from_either_kind(tmp_path, monkeypatch):
    table = read_table(mixed_table_messages(tmp_path / "t.csv"))
    for sampler, kw in (("point_samples", {}), ("sample_rows", REPAINT_MESSAGES)):
        plan = impute.plan_impute(table, tiny(**kw))
        model = impute.train(plan)
        monkeypatch.setattr(impute, sampler, lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(impute.Interrupted) as stop:
            impute.impute(plan, model)
        assert stop.value.model is model and stop.value.extra["trained_on"] == str(table.path)
        monkeypatch.undo()


def test_predict_fits_on_both_tables_then_fills_the_test_rows_alone(tmp_path):
    """--predict: the model is fitted on the training rows and the test rows without their target, then fills the
    test table as a table of its own (what transform does with a fitted model): the same cells, an integer
    target still written as integers."""
    src = mixed_table_messages(tmp_path / "t.csv", rows=80)
    lines = src.read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:61]) + "\n")
    test = [line.split(",") for line in lines[61:]]
    (tmp_path / "test.csv").write_text("\n".join([lines[0]] + [",".join(["", *r[1:]]) for r in test]) + "\n")
    test_table = read_table(tmp_path / "test.csv", allow_missing_columns=True)
    result = impute.predict_table(read_table(tmp_path / "train.csv"), test_table, "a", tiny())
    assert result.stats["predicted_rows"] == 20 and result.stats["rows"] == 80
    alone = impute.impute_table(test_table, tiny(), fitted=(result.model, result.columns))
    assert result.frame.equals(alone.frame)
    assert all(str(v).lstrip("-").isdigit() for v in result.frame["a"])


QUICK_PLAN = ["--train-steps", 30, "--width", 16, "--blocks", 1, "--threads", 1, "--quiet"]


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
    one_line_exit_2(invoke_plan("impute", t, "--out", link, "--overwrite", *QUICK_PLAN), str(link), "not a regular file")
    assert link.is_symlink()
    fifo = tmp_path / "f.csv"
    os.mkfifo(fifo)
    one_line_exit_2(invoke_plan("impute", t, "--out", fifo, "--overwrite", *QUICK_PLAN), str(fifo), "not a regular file")


def test_impute_outputs_that_collide_are_refused(tmp_path):
    t = small_table(tmp_path / "t.csv")
    r = invoke_plan("impute", t, "--out", tmp_path / "m.yaml", "--save-model", tmp_path / "m", *QUICK_PLAN)
    one_line_exit_2(r, str(tmp_path / "m.yaml"), "--save-model")
    r = invoke_plan("impute", t, "--out", t, *QUICK_PLAN)  # onto the input: said so, not "--overwrite replaces it"
    one_line_exit_2(r, "would overwrite the input")


def test_draws_of_two_runs_never_mix(tmp_path):
    """S11: -n 3 then -n 10 into one --draws left t_draw01..10 beside t_draw1..3."""
    t = small_table(tmp_path / "t.csv")
    draws = tmp_path / "draws"
    assert invoke_plan("impute", t, "--out", tmp_path / "o.csv", "-n", 3, "--draws", draws, *QUICK_PLAN).exit_code == 0
    assert sorted(p.name for p in draws.iterdir()) == ["t_draw1.csv", "t_draw2.csv", "t_draw3.csv"]
    r = invoke_plan("impute", t, "--out", tmp_path / "o2.csv", "-n", 10, "--draws", draws, *QUICK_PLAN)
    one_line_exit_2(r, "t_draw1.csv", "--overwrite")
    assert sorted(p.name for p in draws.iterdir()) == ["t_draw1.csv", "t_draw2.csv", "t_draw3.csv"]
    r = invoke_plan("impute", t, "--out", tmp_path / "o2.csv", "-n", 10, "--draws", draws, "--overwrite", *QUICK_PLAN)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in draws.iterdir()) == [f"t_draw{k:02d}.csv" for k in range(1, 11)]
