"""tables/encoder.py: a table encoded for the model and decoded back, observed cells exact."""
from __future__ import annotations
from pathlib import Path
import numpy as np
from repaint_cli.tables.encoder import TableEncoder
from repaint_cli.tables.table_files import read_table
from repaint_cli.tables.encoder import category_codes, decode, encode
from repaint_cli.tables.schema import Column, quantile_map
from impute_cli import mixed_table


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
