"""Issue 32, tables: inputs read as written and written back as read (S5-S7, S9, S10, D1, D2, L2, N2-N4, N9)."""
import csv
import re

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from repaint_cli.cli.app import app
import gc
import warnings
from pathlib import Path
from impute_cli import linear_table, one_error_line

runner = CliRunner()
TINY = ["--train-steps", 5, "--samples", 1, "--width", 8, "--blocks", 1, "--members", 1, "--threads", 1]
TINY_USE = ["--samples", 1, "--threads", 1]  # with --model: the saved model fixes its size and training


def invoke(*args):
    return runner.invoke(app, ["impute", *[str(a) for a in args]])


def rows_of(path, sep=","):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f, delimiter=sep))


def numbers_table(path, n=30, sep=",", missing_every=4, fmt="{:.2f}"):
    """x (integers) and y (decimals written with ``fmt``), y missing in every ``missing_every``-th row."""
    lines = [sep.join(["x", "y"])]
    for i in range(n):
        lines.append(sep.join([str(i), "" if i % missing_every == 1 else fmt.format(1.5 * i + 0.25)]))
    path.write_text("\n".join(lines) + "\n")


# --- S6, D1, D2: the header and the rows as written --------------------------------------------

def test_empty_header_cell_keeps_its_empty_name(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    src.write_text(",a,b\n" + "".join(f"{i},{i * 2},{'' if i == 3 else i * 3}\n" for i in range(8)))
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    got = rows_of(out)
    assert got[0] == ["", "a", "b"] and "Unnamed" not in out.read_text()
    assert [row[0] for row in got[1:]] == [str(i) for i in range(8)]


def test_rows_with_one_field_more_than_the_header_keep_their_row_names(tmp_path):
    """R's write.table layout: the first field of each row is its name; nothing shifts, nothing is dropped."""
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    src.write_text('"a","b"\n' + "".join(f'"r{i}",{i},{"NA" if i == 2 else 10 * i}\n' for i in range(6)))
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    got = rows_of(out)
    assert got[0] == ["a", "b"]
    assert [row[0] for row in got[1:]] == [f"r{i}" for i in range(6)]
    assert [row[1] for row in got[1:]] == [str(i) for i in range(6)]
    assert all(row[2] == str(10 * i) for i, row in enumerate(got[1:]) if i != 2) and re.fullmatch(r"\d+", got[3][2])
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    r = invoke(src, "--out", tmp_path / "o.parquet", *TINY)
    assert r.exit_code == 0, r.output
    assert list(pd.read_parquet(tmp_path / "o.parquet").index) == [f"r{i}" for i in range(6)]


def test_a_row_longer_than_the_others_is_refused_with_one_line(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("a,b\n1,2\n3,4,5\n6,7\n")
    r = invoke(src, "--out", tmp_path / "o.csv", *TINY)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "row 2 has 3 fields" in r.stderr and not (tmp_path / "o.csv").exists()


def test_blank_line_in_a_one_column_table_is_a_missing_cell(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    src.write_text("a\n1\n\n3\n4\n5\n")
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    assert "unchanged" not in r.stderr
    got = rows_of(out)
    assert [row[0] for row in got[1:2] + got[3:]] == ["1", "3", "4", "5"]
    assert len(got) == 6 and re.fullmatch(r"[1-5]", got[2][0])


# --- S5, S10, N4: Parquet dtypes ----------------------------------------------------------------

def test_parquet_float_columns_come_back_as_float(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    n = 30
    x = np.arange(n, dtype=float)
    frame = pd.DataFrame({"x": x, "y": np.where(np.arange(n) % 5 == 0, np.nan, 2 * x).astype(np.float32),
                          "k": np.arange(n, dtype=np.int64), "s": ["u", "v"] * (n // 2)})
    src, out = tmp_path / "t.parquet", tmp_path / "o.parquet"
    frame.to_parquet(src)
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    got = pd.read_parquet(out)
    assert dict(got.dtypes) == dict(frame.dtypes)
    assert not got.isna().any().any()


def test_parquet_predict_keeps_an_integer_target_integer(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    n = 40
    x = np.arange(n, dtype=float)
    train = pd.DataFrame({"x": x, "t": pd.array(np.arange(n) % 4, dtype="Int64")})
    test = pd.DataFrame({"x": x[:6] + 0.5})
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    out = tmp_path / "pred.parquet"
    r = invoke(tmp_path / "train.parquet", "--target", "t", "--predict", tmp_path / "test.parquet", "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    got = pd.read_parquet(out)
    assert pd.api.types.is_integer_dtype(got["t"]) and len(got) == 6
    assert set(got["t"]) <= {0, 1, 2, 3}


def test_csv_in_parquet_out_writes_typed_columns(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    src, out = tmp_path / "t.csv", tmp_path / "o.parquet"
    src.write_text("i,f,c\n" + "".join(f"{k},{'' if k % 4 == 0 else f'{k / 3:.2f}'},{'ab'[k % 2]}\n" for k in range(20)))
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    got = pd.read_parquet(out)
    assert pd.api.types.is_integer_dtype(got["i"]) and pd.api.types.is_float_dtype(got["f"])
    assert not pd.api.types.is_numeric_dtype(got["c"])
    assert got["f"][1] == pytest.approx(0.33)


# --- S7, S9: a saved model on another table -----------------------------------------------------

def test_saved_integer_column_fills_this_tables_decimals(tmp_path):
    ints, decimals = tmp_path / "ints.csv", tmp_path / "dec.csv"
    numbers_table(ints, fmt="{:.0f}")
    r = invoke(ints, "--out", tmp_path / "o1.csv", "--save-model", tmp_path / "m", *TINY)
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["columns"][1]["kind"] == "int"
    numbers_table(decimals, fmt="{:.2f}")
    out = tmp_path / "o2.csv"
    r = invoke(decimals, "--out", out, "--model", tmp_path / "m.yaml", *TINY_USE)
    assert r.exit_code == 0, r.output
    filled = [row[1] for i, row in enumerate(rows_of(out)[1:]) if i % 4 == 1]
    assert filled and all(re.fullmatch(r"-?\d+\.\d\d", v) for v in filled), filled


def test_a_loaded_model_saved_again_keeps_its_own_training_record(tmp_path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    numbers_table(first)
    numbers_table(second, n=20)
    r = invoke(first, "--out", tmp_path / "o1.csv", "--save-model", tmp_path / "m1", *TINY)
    assert r.exit_code == 0, r.output
    r = invoke(second, "--out", tmp_path / "o2.csv", "--model", tmp_path / "m1.yaml", "--save-model", tmp_path / "m2")
    assert r.exit_code == 0, r.output
    one, two = (yaml.safe_load((tmp_path / f"{m}.yaml").read_text()) for m in ("m1", "m2"))
    assert two["trained_on"] == str(first) and two["rows"] == 30 and two["train"] == one["train"]
    assert two["copied_from"] == str(tmp_path / "m1.yaml")


# --- L2, N2, N3: what a column is -------------------------------------------------------------------

def test_decimal_commas_in_a_semicolon_file_are_numbers(tmp_path):
    from repaint_cli.tables.schema import infer_columns
    from repaint_cli.tables.table_files import read_table

    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    numbers_table(src, sep=";", fmt="{:.2f}")
    src.write_text(src.read_text().replace(".", ","))
    assert [c.kind for c in infer_columns(read_table(src))] == ["int", "float"]
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    filled = [row[1] for i, row in enumerate(rows_of(out, ";")[1:]) if i % 4 == 1]
    assert filled and all(re.fullmatch(r"-?\d+,\d\d", v) for v in filled), filled


def test_decimal_commas_in_a_comma_file_get_a_hint(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("x,y\n" + "".join(f'{i},"{i},5"\n' for i in range(10)) + "10,\n")
    r = invoke(src, "--out", tmp_path / "o.csv", *TINY)
    assert r.exit_code == 0, r.output
    assert "decimal comma" in r.stderr and "column 'y'" in r.stderr


def test_a_numeric_column_with_many_question_marks_is_named_in_a_warning(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("x,y\n" + "".join(f"{i},{'?' if i % 6 == 0 else 2 * i}\n" for i in range(60)))  # 17% '?'
    r = invoke(src, "--out", tmp_path / "o.csv", *TINY)
    assert r.exit_code == 0, r.output
    assert "column 'y'" in r.stderr and "--na-values '?'" in r.stderr


def test_iso_dates_are_filled_with_dates_in_their_range(tmp_path):
    from repaint_cli.tables.schema import infer_columns
    from repaint_cli.tables.table_files import read_table

    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    days = np.datetime64("2024-01-01") + np.arange(40) * 3
    src.write_text("x,when\n" + "".join(f"{i},{'' if i % 5 == 2 else d}\n" for i, d in enumerate(days)))
    assert [c.kind for c in infer_columns(read_table(src))] == ["int", "date"]
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    filled = [row[1] for i, row in enumerate(rows_of(out)[1:]) if i % 5 == 2]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", v) and "2024-01-01" <= v <= str(days[-1]) for v in filled), filled
    when = "2024-01-01T08:30"
    src.write_text("x,when\n" + "".join(f"{i},{'' if i == 3 else when.replace('08', f'{i:02d}')}\n" for i in range(12)))
    r = invoke(src, "--out", out, "--overwrite", *TINY)
    assert r.exit_code == 0, r.output
    assert re.fullmatch(r"2024-01-01T\d\d:\d\d", rows_of(out)[4][1])


def test_an_identifier_column_is_not_filled_with_another_rows_value(tmp_path):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    src.write_text("id,x\n" + "".join(f"{'NA' if i == 4 else f'u{i:03d}'},{i % 3}\n" for i in range(20)))
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    assert "column 'id'" in r.stderr and "identifier" in r.stderr
    got = rows_of(out)
    assert got[5][0] == "NA" and len({row[0] for row in got[1:]}) == 20


# --- N9: the summary line -------------------------------------------------------------------------

def test_summary_is_one_line_and_counts_the_rows_written(tmp_path):
    train, test, out = tmp_path / "a_long_name_for_the_training_table.csv", tmp_path / "test.csv", tmp_path / "o.csv"
    numbers_table(train, n=40)
    test.write_text("x\n100\n101\n")
    r = invoke(train, "--target", "y", "--predict", test, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    line = next(line for line in r.stderr.splitlines() if line.startswith("filled"))
    assert line.endswith("model calls per row)"), r.stderr
    assert line.startswith("filled 2 cells in 2 rows x 2 columns"), line


def test_a_quoted_empty_cell_at_the_end_of_a_one_column_table_is_a_row(tmp_path):
    """Found by tests/test_fuzz_tables.py: '""' (or ' ') on the last line is a missing cell, not a blank line."""
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    for last in ('""', " "):
        src.write_text(f"a\n1\n2\n3\n{last}\n\n")
        r = invoke(src, "--out", out, "--overwrite", *TINY)
        assert r.exit_code == 0, r.output
        got = rows_of(out)
        assert len(got) == 5 and re.fullmatch(r"[1-3]", got[4][0]), got


def test_dates_written_to_parquet_are_timestamps(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    src, out = tmp_path / "t.csv", tmp_path / "o.parquet"
    src.write_text("x,when\n" + "".join(f"{i},{'' if i == 2 else f'2024-01-{i + 1:02d}'}\n" for i in range(12)))
    r = invoke(src, "--out", out, *TINY)
    assert r.exit_code == 0, r.output
    got = pd.read_parquet(out)
    assert pd.api.types.is_datetime64_any_dtype(got["when"]) and not got["when"].isna().any()


def test_read_table_closes_its_file(tmp_path):
    from repaint_cli.tables.table_files import read_table

    src = tmp_path / "t.csv"
    linear_table(src)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_table(src)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


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


# small and quick: 150 training steps of the default (conditional) model
QUICK = ["--train-steps", 150, "-k", 2, "--width", 64, "--blocks", 2, "--threads", 1]


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
