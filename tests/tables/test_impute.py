"""Issue 17: ``repaint impute``, RePaint on tables with a model trained per table."""
import csv
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from repaint_cli.cli.app import app
from repaint_cli.tables.impute import ImputeOptions, impute_table, predict_table
from repaint_cli.tables.encoder import category_codes, decode, encode
from repaint_cli.tables.messages import TableError
from repaint_cli.tables.model_config import TableModelConfig, TrainSettings
from repaint_cli.tables.schema import Column, quantile_map
from repaint_cli.tables.table_files import read_table

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


def test_same_seed_same_table_other_seed_other_table(tmp_path):
    src = tmp_path / "t.csv"
    mixed_table(src)
    outs = []
    for i, seed in enumerate((0, 0, 1)):
        out = tmp_path / f"o{i}.csv"
        assert invoke(src, "--out", out, "--seed", seed, *QUICK).exit_code == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


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


def test_codec_round_trips():
    v = np.array([3.0, 1.0, 2.0, 2.0, 10.0, -4.5])
    values, scores = quantile_map(v)
    col = Column("v", "float", values=values, scores=scores)
    x, keep = encode([np.append(v, np.nan)], [col])
    assert keep[:, 0].tolist() == [True] * 6 + [False]
    assert np.allclose(decode(x, [col])[0][:6], v)
    assert np.all(np.diff(scores) > 0)
    # more categories than one-hot takes: analog bits, every category decoded back
    cats = Column("c", "category", categories=[f"k{i}" for i in range(40)])
    idx = np.arange(40)
    x, _ = encode([idx], [cats])
    assert x.shape == (40, 6) and set(np.unique(x)) == {-1.0, 1.0}
    assert (decode(x + 0.3 * np.sign(x) * 0.1, [cats])[0] == idx).all()
    assert category_codes(Column("d", "category", categories=["a", "b", "c"])).tolist() == \
        [[1, -1, -1], [-1, 1, -1], [-1, -1, 1]]


def test_parquet_round_trip_keeps_dtypes(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(1)
    n = 60
    frame = pd.DataFrame({"x": rng.normal(size=n), "k": pd.array(rng.integers(0, 9, n), dtype="Int64"),
                          "c": pd.array(rng.choice(["u", "v"], n), dtype="string")})
    frame.loc[::5, "x"] = None
    frame.loc[1::7, "k"] = None
    frame.loc[2::6, "c"] = None
    src, out = tmp_path / "t.parquet", tmp_path / "o.parquet"
    frame.to_parquet(src)
    r = invoke(src, "--out", out, *QUICK)
    assert r.exit_code == 0, r.output
    got = pd.read_parquet(out, dtype_backend="numpy_nullable")
    assert list(got.columns) == ["x", "k", "c"] and not got.isna().any().any()
    assert pd.api.types.is_integer_dtype(got["k"]) and pd.api.types.is_float_dtype(got["x"])
    keep = ~frame["x"].isna()
    assert np.array_equal(got["x"][keep].to_numpy(), frame["x"][keep].to_numpy())
    assert set(got["c"]) <= {"u", "v"}


def test_table_errors_are_value_errors():
    assert issubclass(TableError, ValueError)
    with pytest.raises(TableError, match="no such file"):
        read_table("/nonexistent/table.csv")


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
