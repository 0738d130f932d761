"""The tables wing as parts: a run settled once (plan_impute), then train and impute; the encoder as a fitted
object; messages that name parameters, which the command writes as its flags; the layers kept."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from repaint_cli.tables import impute
from repaint_cli.tables.encoder import TableEncoder
from repaint_cli.tables.messages import Message, TableError, parameter_words, said
from repaint_cli.tables.model_config import TableModelConfig, TrainSettings
from repaint_cli.tables.table_files import read_table
from conftest import ROOT

PACKAGE = ROOT / "repaint_cli"
REPAINT = dict(method="repaint", t_T=10, jump_length=5, jump_n_sample=2, samples=2, guidance=0.0)


def mixed_table(path: Path, rows: int = 60) -> Path:
    rng = np.random.default_rng(0)
    lines = ["a,b,c,d"]
    for i in range(rows):
        a = int(rng.integers(0, 20))
        cells = [str(a), f"{a * 0.5 + rng.normal():.2f}", "xyz"[a % 3], f"2024-01-{1 + i % 28:02d}"]
        if i % 5 == 1:
            cells[i % 4] = ""
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny(**kw) -> impute.ImputeOptions:
    return impute.ImputeOptions(train=TrainSettings(steps=20), model=TableModelConfig(width=16, blocks=1),
                                threads=1, **kw)


def test_a_run_builds_its_jump_schedule_once(tmp_path, monkeypatch):
    """Two EM rounds, each imputing: the schedule is built once, in the plan, and every step reads it."""
    built = []
    real = impute.jump_schedule
    monkeypatch.setattr(impute, "jump_schedule", lambda p: built.append(p) or real(p))
    table = read_table(mixed_table(tmp_path / "t.csv"))
    result = impute.impute_table(table, tiny(rounds=2, **REPAINT))
    assert len(built) == 1
    assert result.stats["model_calls_per_row"] == impute.schedule_summary(real(built[0]))["unet_calls"] * 2


def test_plan_train_impute_is_impute_table(tmp_path):
    """The three steps in a row give the cells impute_table gives (which is those steps), and the plan holds the
    encoded table, the columns and the phases before anything is trained."""
    table = read_table(mixed_table(tmp_path / "t.csv"))
    plan = impute.plan_impute(table, tiny())
    assert plan.x.shape == plan.keep.shape == (60, plan.encoder.width) and not plan.keep.all()
    assert [c.kind for c in plan.columns] == ["int", "float", "category", "date"]
    assert [name for name, _, _ in plan.phases] == ["training", "imputing"] and plan.schedule is None
    model = impute.train(plan)
    steps = impute.impute(plan, model).frame
    assert steps.equals(impute.impute_table(table, tiny()).frame)


def test_ctrl_c_while_imputing_carries_the_trained_model_from_either_kind(tmp_path, monkeypatch):
    table = read_table(mixed_table(tmp_path / "t.csv"))
    for sampler, kw in (("point_samples", {}), ("sample_rows", REPAINT)):
        plan = impute.plan_impute(table, tiny(**kw))
        model = impute.train(plan)
        monkeypatch.setattr(impute, sampler, lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(impute.Interrupted) as stop:
            impute.impute(plan, model)
        assert stop.value.model is model and stop.value.extra["trained_on"] == str(table.path)
        monkeypatch.undo()


def test_the_encoder_round_trips_observed_cells(tmp_path):
    table = read_table(mixed_table(tmp_path / "t.csv"))
    encoder = TableEncoder().fit(table)
    x, keep = encoder.transform(table)
    back = encoder.inverse_transform(x)
    for j, col in enumerate(encoder.columns):
        observed = table.observed[:, j]
        cells = table.frame.iloc[:, j].to_numpy(dtype=object)[observed]
        if col.kind == "category":
            assert [col.categories[i] for i in back[j][observed]] == list(cells)
        elif col.kind in ("int", "float"):
            assert np.allclose(back[j][observed], cells.astype(float))
    assert encoder.clip().shape == (encoder.width,) and x.shape[1] == encoder.width


def test_a_message_names_parameters_and_the_command_writes_its_flags():
    from repaint_cli.cli.impute import flag_words

    message = said("`eta`=0.5: applies to `method` ddim only; leave `train_steps` out")
    assert message == "eta=0.5: applies to method ddim only; leave train_steps out"
    assert flag_words(message) == "--eta 0.5: applies to --method ddim only; leave --train-steps out"
    flags = "--t-T 90: more than the model's 50 steps; leave --jump-n-sample out, --combine 'max'"
    assert flag_words(parameter_words(flags)) == flags  # the shared checks' lines come back as they were
    assert str(parameter_words(flags)) == "t_T=90: more than the model's 50 steps; leave jump_n_sample out, combine='max'"
    assert flag_words(TableError("a `plain` line")) == "a `plain` line"  # backticks of a plain message kept
    assert isinstance(TableError(message).message, Message)


def test_the_library_names_parameters_where_the_command_names_flags(tmp_path):
    from typer.testing import CliRunner

    from repaint_cli.cli.app import app

    src = mixed_table(tmp_path / "t.csv")
    with pytest.raises(TableError) as e:
        impute.check_options(impute.ImputeOptions(method="repaint", model=TableModelConfig(members=2)))
    assert str(e.value) == "members is for method conditional; method repaint trains one model"
    r = CliRunner().invoke(app, ["impute", str(src), "--method", "repaint", "--members", "2"])
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --members is for --method conditional; --method repaint trains one model"
    with pytest.raises(TableError, match=r"^.*: `?categorical`? names no column 'zz'") as e:
        impute.impute_table(read_table(src), tiny(categorical=("zz",)))
    assert "--" not in str(e.value)


def test_tables_speak_no_flags():
    """No message of the tables wing names a flag (docstrings and comments may; messages.py reads them)."""
    for path in sorted(p for p in (PACKAGE / "tables").glob("*.py") if p.name != "messages.py"):
        tree = ast.parse(path.read_text())
        docs = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                assert " --" not in node.value and not node.value.startswith("--"), (path.name, node.value)


def test_runtime_imports_nothing_from_the_wings_above_it():
    for path in sorted((PACKAGE / "runtime").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.split(".")[0] in ("tables", "images", "cli"), (path.name, node.module)


def test_predict_fits_on_both_tables_then_fills_the_test_rows_alone(tmp_path):
    """--predict: the model is fitted on the training rows and the test rows without their target, then fills the
    test table as a table of its own (what transform does with a fitted model): the same cells, an integer
    target still written as integers."""
    src = mixed_table(tmp_path / "t.csv", rows=80)
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


@pytest.mark.parametrize("method", ["conditional", "repaint"])
def test_each_row_draws_its_own_noise_so_any_partition_gives_the_same_cells(method):
    """Noise keyed per row (its index label), not per block of rows: a fitted imputer fills the parts of a frame
    as it fills the whole, as map_partitions would call it."""
    import pandas as pd

    from repaint_cli.tables.imputer import DiffusionImputer

    rng = np.random.default_rng(3)
    a = rng.normal(size=90)
    frame = pd.DataFrame({"a": a, "b": 2 * a + rng.normal(0.3, size=90), "c": np.where(a > 0, "hi", "lo")},
                         index=pd.RangeIndex(100, 190))
    frame = frame.mask(rng.random(frame.shape) < 0.2)
    params = dict(train_steps=30, threads=1, width=16, blocks=1, samples=2)
    if method == "repaint":
        params.update(method="repaint", t_T=10, jump_length=5, jump_n_sample=1, guidance=0.0)
    imputer = DiffusionImputer(**params).fit(frame)
    whole = imputer.transform(frame)
    parts = pd.concat([imputer.transform(frame.iloc[:25]), imputer.transform(frame.iloc[25:61]),
                       imputer.transform(frame.iloc[61:])])
    pd.testing.assert_frame_equal(parts, whole)
    shuffled = frame.sample(frac=1, random_state=0)
    pd.testing.assert_frame_equal(imputer.transform(shuffled).loc[frame.index], whole)


def test_a_fitted_imputer_pickles_and_fills_dask_partitions_as_the_whole_frame():
    """dask.dataframe's map_partitions on the local (synchronous and threaded) schedulers: the same cells as
    transform on the whole frame. Needs the dask extra (pip install 'repaint-cli[dask]')."""
    import pickle

    import pandas as pd

    dd = pytest.importorskip("dask.dataframe", reason="dask is not installed (the optional dask extra)")
    from repaint_cli.tables.imputer import DiffusionImputer

    rng = np.random.default_rng(5)
    a = rng.normal(size=120)
    frame = pd.DataFrame({"a": a, "b": a - rng.normal(size=120), "n": rng.integers(0, 5, 120)})
    frame = frame.mask(rng.random(frame.shape) < 0.2).astype({"n": "Int64"})
    imputer = DiffusionImputer(train_steps=30, threads=1, width=16, blocks=1, samples=2).fit(frame)
    whole = imputer.transform(frame)
    copy = pickle.loads(pickle.dumps(imputer))
    parts = dd.from_pandas(frame, npartitions=4)
    for scheduler in ("synchronous", "threads"):
        filled = parts.map_partitions(copy.transform, meta=frame.iloc[:0]).compute(scheduler=scheduler)
        pd.testing.assert_frame_equal(filled, whole)


def test_fit_sample_trains_on_a_sample_of_rows_fills_every_row_and_says_so_in_the_card(tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from repaint_cli.cli.app import app

    src = mixed_table(tmp_path / "t.csv", rows=100)
    tiny_flags = ["--train-steps", "20", "--width", "16", "--blocks", "1", "--threads", "1", "-q"]
    run = lambda *args: CliRunner().invoke(app, ["impute", str(src), *tiny_flags, *map(str, args)])
    r = run("--fit-sample", 40, "--out", tmp_path / "o.csv", "--save-model", tmp_path / "m", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["trained_rows"] == 40 and summary["rows"] == 100 and summary["filled"] == summary["missing"]
    card = yaml.safe_load((tmp_path / "m.yaml").read_text())
    assert card["rows"] == 40 and card["sampled_from"] == 100 and card["sample_seed"] == 0
    filled = read_table(tmp_path / "o.csv")
    assert filled.observed.all()
    # a sample as large as the table is the table: the same bytes as without it
    run("--fit-sample", 100, "--out", tmp_path / "all.csv")
    run("--out", tmp_path / "plain.csv")
    assert (tmp_path / "all.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    assert (tmp_path / "o.csv").read_bytes() != (tmp_path / "plain.csv").read_bytes()
    r = run("--fit-sample", 40, "--model", tmp_path / "m", "--out", tmp_path / "x.csv")
    assert r.exit_code == 2 and "--fit-sample" in r.stderr and "--model" in r.stderr


def test_fit_sample_in_the_python_api_is_checked_and_stated():
    import pandas as pd

    from repaint_cli.tables.imputer import DiffusionImputer

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)}).mask(rng.random((60, 2)) < 0.2)
    with pytest.raises(ValueError, match="^fit_sample must be at least 1"):
        DiffusionImputer(fit_sample=0).fit(frame)
    imputer = DiffusionImputer(fit_sample=25, train_steps=20, width=16, blocks=1, threads=1).fit(frame)
    assert imputer.card_["rows"] == 25 and imputer.card_["sampled_from"] == 60
    assert not imputer.transform(frame).isna().any().any()
