"""tables/schema.py: each column's kind read from its observed cells (common missing spellings keep a column
numeric, odd cells are named), and a reused model adopting this table's constants. From issues 21 and 25."""
import csv
import re

import pytest


from impute_cli import TINY, TINY_USE, invoke, linear_table, one_error_line


# --- A1: --method ddim and guidance; one --eta default ----------------------------------------


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


# --- A7: semicolons and tabs ----------------------------------------------------------------------


# --- A8: an unwritable --out folder ---------------------------------------------------------------


# --- A9: progress without a terminal, Ctrl-C keeps the model ------------------------------------


# --- A10: the thread count ---------------------------------------------------------------------------


# --- A11: help panels, -n, BOM and CRLF ------------------------------------------------------------


def test_a_one_column_table_of_quoted_decimal_commas_is_numbers(tmp_path):
    """Found by `make fuzz` (issue 32): a one-column CSV of quoted "0,1" cells was read as text in a ',' file,
    all different, so an identifier whose missing cells stayed empty. With one column there is no delimiter in
    play: the quoted comma is a decimal comma, and the filled cells are written with one."""
    import csv

    from typer.testing import CliRunner

    from repaint_cli.cli.app import app

    src, out = tmp_path / "one.csv", tmp_path / "out.csv"
    values = [f"{v / 10:.1f}".replace(".", ",") for v in range(-6, 18)]
    src.write_text('"x"\n' + "".join(f'"{v}"\n' for v in values[:12]) + '""\n' + "".join(f'"{v}"\n' for v in values[12:]))
    r = CliRunner().invoke(app, ["impute", str(src), "--out", str(out), "--train-steps", "5", "--members", "1",
                                 "--samples", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["x"] and [r[0] for r in rows[1:13]] == values[:12] and [r[0] for r in rows[14:]] == values[12:]
    filled = rows[13][0]
    assert re.fullmatch(r"-?\d+,\d", filled) and -0.7 <= float(filled.replace(",", ".")) <= 1.8, filled
