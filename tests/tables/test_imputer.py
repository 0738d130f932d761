"""Issue 33: ``DiffusionImputer``, repaint impute as a Python object for pandas and scikit-learn users.

scikit-learn is the bench extra's (``pip install -e .[bench]``): the tests that need it skip without it."""
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from repaint_cli import DiffusionImputer
from repaint_cli.cli.app import app
from repaint_cli.tables.imputer import NotFittedError
from pathlib import Path
from repaint_cli.tables.table_files import read_table
from impute_cli import mixed_table

# tiny: one member of 30 steps, two samples, one thread (a few seconds a test)
TINY = dict(train_steps=30, members=1, samples=2, threads=1, width=32, blocks=1)


def mixed_frame(n=80, missing=0.2, seed=0):
    """Integer, decimal, boolean, category, date and text columns related to one another, cells missing in each;
    an index that is not 0..n-1. Returns (the frame with holes, the mask of holes)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    full = pd.DataFrame({
        "count": pd.array(np.round(20 + 5 * a).astype(int), dtype="Int64"),
        "price": np.round(np.exp(1 + a), 2),
        "flag": pd.array(a > 0, dtype="boolean"),
        "color": pd.Categorical(np.where(a > 0.5, "red", np.where(a < -0.5, "blue", "green")),
                                categories=["blue", "green", "red", "violet"]),
        "day": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.round(10 * a + 30).astype(int), unit="D"),
        "name": np.where(a > 0, "x", "y").astype(object),
    }, index=pd.Index([f"r{i}" for i in range(n)], name="id"))
    holes = rng.random(full.shape) < missing
    frame = full.copy()
    for j, c in enumerate(full.columns):
        frame.loc[holes[:, j], c] = None
    return frame, holes


def numeric_array(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[:, 1] += x[:, 0]
    x[rng.random(x.shape) < 0.2] = np.nan
    return x


# --- DataFrames and arrays ---------------------------------------------------------------------------

def test_a_dataframe_keeps_its_index_columns_dtypes_and_observed_cells():
    frame, holes = mixed_frame()
    before = frame.dtypes.copy()
    out = DiffusionImputer(**TINY).fit_transform(frame)
    assert list(out.dtypes) == list(before), (before, out.dtypes)
    assert out.index.equals(frame.index) and list(out.columns) == list(frame.columns)
    assert not out.isna().any().any()
    for j, c in enumerate(frame.columns):
        kept = ~holes[:, j]
        assert out[c][kept].equals(frame[c][kept]), c  # observed cells untouched
    assert set(out["color"]) <= {"blue", "green", "red"}  # an observed category, never an unseen one
    assert list(out["color"].cat.categories) == ["blue", "green", "red", "violet"]
    assert set(out["name"]) <= {"x", "y"} and set(out["flag"]) <= {True, False}
    assert (out["day"] == out["day"].dt.normalize()).all()  # dates of whole days stay whole days
    assert np.allclose(out["price"], out["price"].round(2), rtol=0, atol=1e-12)  # prices of 2 decimals too
    assert out["day"].between(frame["day"].min(), frame["day"].max()).all()
    assert frame.isna().values.sum() == holes.sum()  # the caller's frame is left alone


def test_fit_then_transform_is_fit_transform_and_the_seed_decides():
    frame, _ = mixed_frame()
    once = DiffusionImputer(**TINY).fit_transform(frame)
    assert DiffusionImputer(**TINY).fit(frame).transform(frame).equals(once)
    other = DiffusionImputer(**TINY, random_state=1).fit_transform(frame)
    assert not other.equals(once)


def test_an_array_comes_back_an_array_of_its_dtype():
    x = numeric_array()
    imputer = DiffusionImputer(**TINY).fit(x)
    out = imputer.transform(x)
    assert isinstance(out, np.ndarray) and out.dtype == x.dtype and out.shape == x.shape
    assert not np.isnan(out).any() and np.array_equal(out[~np.isnan(x)], x[~np.isnan(x)])
    assert imputer.n_features_in_ == 3 and not hasattr(imputer, "feature_names_in_")
    out32 = DiffusionImputer(**TINY).fit_transform(x.astype(np.float32))
    assert out32.dtype == np.float32


def test_an_object_array_with_text_keeps_numbers_and_categories():
    rng = np.random.default_rng(1)
    a = rng.normal(size=60)
    x = np.empty((60, 2), dtype=object)
    x[:, 0], x[:, 1] = a, np.where(a > 0, "up", "down")
    x[::7, 0], x[3::7, 1] = None, None
    out = DiffusionImputer(**TINY, categorical=[]).fit_transform(x)
    assert out.dtype == object and all(isinstance(v, float) for v in out[:, 0])
    assert set(out[:, 1]) == {"up", "down"}


def test_fitted_attributes_end_in_an_underscore():
    frame, _ = mixed_frame()
    imputer = DiffusionImputer(**TINY)
    assert not [k for k in vars(imputer) if k.endswith("_")]
    imputer.fit(frame)
    assert list(imputer.feature_names_in_) == list(frame.columns) and imputer.n_features_in_ == 6
    assert [c.name for c in imputer.columns_] == list(frame.columns)
    assert [c.kind for c in imputer.columns_] == ["int", "float", "category", "category", "int", "category"]
    assert imputer.model_ is not None and imputer.dates_ == {"day": "D"}


# --- parameters ------------------------------------------------------------------------------------

def test_get_and_set_params():
    cats = ["b"]
    imputer = DiffusionImputer(samples=3, categorical=cats)
    params = imputer.get_params()
    assert params["samples"] == 3 and params["categorical"] is cats  # stored as given
    assert params["method"] is None and params["random_state"] == 0
    assert DiffusionImputer(**params).get_params() == params
    assert imputer.set_params(samples=7, combine="median") is imputer and imputer.samples == 7
    with pytest.raises(ValueError, match="Invalid parameter 'sample' for estimator DiffusionImputer"):
        imputer.set_params(sample=2)
    with pytest.raises(TypeError):
        DiffusionImputer(5)  # keyword-only
    assert repr(DiffusionImputer(samples=3)) == "DiffusionImputer(samples=3)"


@pytest.mark.parametrize("params, message", [
    (dict(samples=0), "samples must be at least 1"),
    (dict(train_steps=0), "train_steps must be at least 1"),
    (dict(members=0), "members must be at least 1"),
    (dict(samples=2.5), "samples must be an integer"),
    (dict(combine="max"), "combine max: use one of mean, median"),
    (dict(method="forest"), "method forest: use one of conditional, repaint, ddnm, ddim"),
    (dict(t_T=20), "t_T applies to method repaint"),
    (dict(method="repaint", eta=0.5), "eta=0.5: applies to method ddim only"),
    (dict(method="repaint", members=2), "members is for method conditional"),
    (dict(categorical="name"), "categorical must be a list of column names"),
    (dict(categorical=["size"]), "categorical names no column 'size'"),
])
def test_errors_name_the_parameter_not_a_flag(params, message):
    frame, _ = mixed_frame(n=30)
    with pytest.raises(ValueError) as e:
        DiffusionImputer(**{**TINY, **params}).fit(frame)
    assert message in str(e.value) and "--" not in str(e.value), str(e.value)


def test_bad_tables_and_unfitted_use_are_value_errors():
    x = numeric_array()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        DiffusionImputer().transform(x)
    imputer = DiffusionImputer(**TINY).fit(x)
    with pytest.raises(ValueError, match="X has 2 features, but DiffusionImputer is expecting 3"):
        imputer.transform(x[:, :2])
    with pytest.raises(ValueError, match="Reshape your data"):
        imputer.transform(x[:, 0])
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="column '0' holds an infinite value"):
        DiffusionImputer(**TINY).fit(bad)
    empty = x.copy()
    empty[:, 2] = np.nan
    with pytest.raises(ValueError, match="column '2' has no observed value"):
        DiffusionImputer(**TINY).fit(empty)
    frame, _ = mixed_frame()
    fitted = DiffusionImputer(**TINY).fit(frame)
    with pytest.raises(ValueError, match="feature names should match"):
        fitted.transform(frame.rename(columns={"price": "cost"}))
    unseen = frame.copy()
    unseen["name"] = unseen["name"].replace("x", "z")
    with pytest.raises(ValueError, match="'name' has the value 'z', which the model never saw"):
        fitted.transform(unseen)


def test_a_warning_reaches_the_caller_as_a_python_warning():
    x = numeric_array()
    x[:, 2] = np.where(np.isnan(x[:, 2]), np.nan, 4.0)
    with pytest.warns(UserWarning, match="column '2' has one value only"):
        out = DiffusionImputer(**TINY).fit_transform(x)
    assert (out[:, 2] == 4.0).all()


# --- the fitted model: other tables, saving, draws --------------------------------------------------------

def test_transform_fills_another_table_of_the_same_schema():
    frame, _ = mixed_frame(n=80)
    imputer = DiffusionImputer(**TINY).fit(frame.iloc[:60])
    out = imputer.transform(frame.iloc[60:])
    assert out.index.equals(frame.index[60:]) and not out.isna().any().any()
    assert list(out.dtypes) == list(frame.dtypes)


def test_save_and_load_give_the_same_transform(tmp_path):
    frame, _ = mixed_frame()
    imputer = DiffusionImputer(**TINY).fit(frame)
    weights, card = imputer.save(tmp_path / "m")
    assert weights.name == "m.safetensors" and card.name == "m.yaml"
    loaded = DiffusionImputer.load(tmp_path / "m", samples=2, threads=1)
    assert loaded.dates_ == {"day": "D"} and list(loaded.feature_names_in_) == list(frame.columns)
    assert loaded.transform(frame).equals(imputer.transform(frame))


def test_the_command_reads_the_apis_model_and_the_api_the_commands(tmp_path):
    x = numeric_array()
    src = tmp_path / "t.csv"
    pd.DataFrame(x, columns=["a", "b", "c"]).to_csv(src, index=False)
    r = CliRunner().invoke(app, ["impute", str(src), "--out", str(tmp_path / "o.csv"), "--train-steps", "30",
                                 "--members", "1", "-k", "2", "--width", "32", "--blocks", "1", "--threads", "1",
                                 "--save-model", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    api = DiffusionImputer.load(tmp_path / "cli", samples=2, threads=1)
    filled = api.transform(pd.DataFrame(x, columns=["a", "b", "c"]))
    from_cli = pd.read_csv(tmp_path / "o.csv")
    assert np.allclose(filled.to_numpy(), from_cli.to_numpy())
    DiffusionImputer(**TINY).fit(pd.DataFrame(x, columns=["a", "b", "c"])).save(tmp_path / "api")
    r = CliRunner().invoke(app, ["impute", str(src), "--out", str(tmp_path / "o2.csv"), "--model",
                                 str(tmp_path / "api.yaml"), "-k", "2", "--threads", "1"])
    assert r.exit_code == 0 and "training" not in r.stderr, r.output


def test_sample_gives_n_completed_tables_that_differ_in_missing_cells_only():
    frame, holes = mixed_frame()
    imputer = DiffusionImputer(**TINY).fit(frame)
    draws = imputer.sample(frame, 3)
    assert len(draws) == 3
    for d in draws:
        assert list(d.dtypes) == list(frame.dtypes) and not d.isna().any().any()
        assert d["price"][~holes[:, 1]].equals(frame["price"][~holes[:, 1]])
    assert not draws[0]["price"].equals(draws[1]["price"])
    assert imputer.samples == 2  # sample's n leaves the parameter alone
    with pytest.raises(ValueError, match="n must be an integer of at least 1"):
        imputer.sample(frame, 0)


def test_the_command_gives_the_same_cells_as_the_api(tmp_path):
    """repaint impute on a CSV and fit_transform on the same table as a typed DataFrame: the same fills."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=90)
    full = pd.DataFrame({"a": np.round(a, 3), "age": pd.array(np.round(40 + 10 * a).astype(int), dtype="Int64"),
                         "color": np.where(a > 0, "red", "blue").astype(object)})
    holes = rng.random(full.shape) < 0.25
    frame = full.copy()
    for j, c in enumerate(full.columns):
        frame.loc[holes[:, j], c] = None
    src = tmp_path / "t.csv"
    frame.to_csv(src, index=False)
    r = CliRunner().invoke(app, ["impute", str(src), "--out", str(tmp_path / "o.csv"), "--train-steps", "30",
                                 "--members", "1", "-k", "2", "--width", "32", "--blocks", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    cli = pd.read_csv(tmp_path / "o.csv", dtype=str)
    api = DiffusionImputer(**TINY).fit_transform(frame)
    assert list(cli["a"].astype(float)) == [float(f"{v:.3f}") for v in api["a"]]  # the CSV's 3 decimals
    assert list(cli["age"]) == [str(v) for v in api["age"]] and list(cli["color"]) == list(api["color"])


# --- scikit-learn ------------------------------------------------------------------------------------

def test_scikit_learns_check_estimator():
    """Every check of scikit-learn's check_estimator passes; the only one skipped is skipped by scikit-learn
    itself (check_array_api_input, without SCIPY_ARRAY_API set). The tags say: missing values allowed (so
    check_estimators_nan_inf does not run), y not needed, float32 kept; string=False, so that
    check_dtype_object checks that a cell that is neither a number nor a string is refused with a TypeError."""
    pytest.importorskip("sklearn", reason="scikit-learn is in the bench extra: pip install -e .[bench]")
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "does not inherit from BaseEstimator": on purpose, scikit-learn optional
        results = check_estimator(DiffusionImputer(train_steps=5, members=1, samples=1, threads=1), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert not failed, failed
    assert skipped <= {"check_array_api_input"}, skipped
    assert len(results) > 40


def test_a_pipeline_with_a_classifier_and_cross_val_score():
    pytest.importorskip("sklearn", reason="scikit-learn is in the bench extra: pip install -e .[bench]")
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    x[:, 1] += 0.1 * rng.normal(size=120)
    x[rng.random(x.shape) < 0.2] = np.nan
    pipe = make_pipeline(DiffusionImputer(**TINY), LogisticRegression())
    scores = cross_val_score(pipe, x, y, cv=3)
    assert scores.mean() > 0.7, scores
    assert clone(DiffusionImputer(samples=3)).samples == 3
    frame = pd.DataFrame(x, columns=list("abcd"))
    fitted = make_pipeline(DiffusionImputer(**TINY), LogisticRegression()).fit(frame, y)
    assert list(fitted[0].get_feature_names_out()) == list("abcd")
    assert fitted.score(frame, y) > 0.7


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
