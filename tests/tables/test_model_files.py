"""tables/model_files.py: a table model's weights and card, written both or neither, read back or refused in one line."""
import numpy as np
import pytest
from impute_cli import TINY, TINY_USE, invoke, linear_table, one_error_line


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
