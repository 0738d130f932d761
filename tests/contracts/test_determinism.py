"""Determinism across wings: the same seed gives the same bits whatever the batch, partition or thread count."""
from __future__ import annotations
import numpy as np
import pytest
import csv
from pathlib import Path
from typer.testing import CliRunner
from repaint_cli.cli.app import app


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


runner = CliRunner()


# small and quick: 150 training steps of the default (conditional) model
QUICK = ["--train-steps", 150, "-k", 2, "--width", 64, "--blocks", 2, "--threads", 1]


def invoke(*args):
    return runner.invoke(app, ["impute", *[str(a) for a in args]])


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
