"""Issue 32: generated tables through ``repaint impute`` (property-based, Hypothesis).

A table is generated column by column (integers, decimals with fixed places, booleans, ISO dates and
date-times, text categories, many-category columns, constant and all-missing columns; one column, one
row), written in a generated dialect (delimiter, quoting, byte-order mark, CRLF, pandas' index column,
R's row names, missing-value spellings, blank lines), and imputed in-process with the cheapest model
the options allow. The run either writes back the same header, rows and row names, every observed cell
as it was read and every missing cell filled with a value of its column's kind (an identifier's left as
it was), or refuses with one ``error:`` line and exit 2 where a refusal is the answer (a column with no
observed value; a one-name header whose rows split at a comma, without --sep). Never a traceback.

The suite runs 25 examples; ``make fuzz`` runs rounds of 200 with fresh seeds (tests/conftest.py: run_fuzz).
"""
import csv
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
from typer.testing import CliRunner

from conftest import run_fuzz
from repaint_cli.cli.app import app
from repaint_cli.tables.schema import IDENTIFIER_MIN
from repaint_cli.tables.table_files import NA_VALUES

runner = CliRunner()
# the cheapest model the options allow: a per-example cost of a few hundredths of a second
CHEAP = ["--train-steps", "2", "--samples", "1", "--width", "4", "--blocks", "1", "--members", "1",
         "--threads", "1", "--no-gaussian-base", "-q"]
SEPS = [",", ";", "\t", "|"]
SPELLINGS = ["", "", "NA", "NaN", "null", "N/A", "None", " ", "nan"]  # missing without --na-values
CUSTOM_NA = ["?", "-", "missing"]  # missing only with --na-values
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
KINDS = ["int", "decimal", "bool", "date", "text", "many", "constant", "allmissing"]
examples = [0]


@dataclass
class Col:
    name: str
    kind: str
    cells: list  # each cell's text, None where missing
    places: int = 0  # decimal: digits after the mark
    mark: str = "."  # decimal: "." or ","
    shape: str = ""  # date: a regex the filled cells match


@dataclass
class Case:
    cols: list
    rows: int
    sep: str
    quoting: str  # minimal, all, or strings (every non-number quoted)
    bom: bool
    crlf: bool
    layout: str  # plain, index (pandas: a first column under an empty name) or rownames (R: one field more)
    give_sep: bool
    spellings: list = field(default_factory=list)  # per missing cell (in column order), how it is written
    blank_after: list = field(default_factory=list)  # data rows after which a blank line is written
    lead_blank: bool = False
    final_newline: bool = True


def _word(draw, sep, allow):
    """A category's text: starts with a letter, ends with no space, may hold the delimiter or a quote."""
    extra = (sep + '"' if allow else "")
    w = draw(st.text(alphabet=LETTERS + "0123456789 _" + extra, min_size=0, max_size=6))
    w = draw(st.sampled_from(LETTERS)) + w.rstrip()
    return w if w not in NA_VALUES and w not in CUSTOM_NA else w + "x"


def _decimal_text(m: int, places: int, mark: str) -> str:
    digits = f"{abs(m):0{places + 1}d}"
    return ("-" if m < 0 else "") + digits[:-places] + mark + digits[-places:]


@st.composite
def column_values(draw, kind, n, sep):
    """(the observed texts of a column of ``kind`` for n rows, places, mark, shape)."""
    places, mark, shape = 0, ".", ""
    if kind == "int":
        vals = [str(v) for v in draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n))]
    elif kind == "decimal":
        places = draw(st.integers(1, 3))
        mark = draw(st.sampled_from([".", ","])) if sep != "," else "."
        vals = [_decimal_text(m, places, mark) for m in draw(st.lists(st.integers(-10 ** 5, 10 ** 5), min_size=n,
                                                                      max_size=n))]
    elif kind == "bool":
        pair = draw(st.sampled_from([("True", "False"), ("true", "false"), ("yes", "no")]))
        vals = [pair[b] for b in draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))]
    elif kind == "date":
        import numpy as np

        unit, tsep = draw(st.sampled_from([("D", ""), ("m", "T"), ("m", " "), ("s", "T"), ("s", " ")]))
        scale = {"D": 1, "m": 1440, "s": 86400}[unit]
        offsets = draw(st.lists(st.integers(0, 20000 * scale), min_size=n, max_size=n))
        vals = [str(np.datetime64("2000-01-01", unit) + np.timedelta64(o, unit)).replace("T", tsep or "T")
                for o in offsets]
        shape = r"\d{4}-\d\d-\d\d" + ("" if unit == "D" else re.escape(tsep) + r"\d\d:\d\d" + (":\\d\\d" if unit == "s" else ""))
    elif kind in ("text", "many"):
        size = draw(st.integers(2, 5)) if kind == "text" else draw(st.integers(12, 60))
        allow = draw(st.booleans())
        pool = list(dict.fromkeys(_word(draw, sep, allow) + ("" if kind == "text" else str(i)) for i in range(size)))
        vals = [draw(st.sampled_from(pool)) for _ in range(n)]
    elif kind == "constant":
        v = draw(st.sampled_from(["7", "1.50", "blue", "2024-05-01", "True"]))
        vals = [v] * n
    else:  # allmissing
        vals = [None] * n
    return vals, places, mark, shape


@st.composite
def tables(draw):
    n = draw(st.one_of(st.integers(1, 3), st.integers(4, 16), st.integers(17, 40)))
    k = draw(st.integers(1, 5))
    sep = draw(st.sampled_from(SEPS))
    names = draw(st.lists(st.text(alphabet=LETTERS + "0123456789 _", min_size=1, max_size=8).map(str.strip)
                          .filter(bool), min_size=k, max_size=k, unique=True))
    cols = []
    share = draw(st.sampled_from([0.0, 0.1, 0.3, 0.6]))
    for name in names:
        kind = draw(st.sampled_from(KINDS[:-1]) if draw(st.integers(0, 9)) else st.just("allmissing"))
        vals, places, mark, shape = draw(column_values(kind, n, sep))
        miss = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
        cells = [None if m < share else v for v, m in zip(vals, miss)]
        cols.append(Col(name, kind, cells, places, mark, shape))
    n_missing = sum(c is None for col in cols for c in col.cells)
    case = Case(cols, n, sep, draw(st.sampled_from(["minimal", "all", "strings"])), draw(st.booleans()),
                draw(st.booleans()), draw(st.sampled_from(["plain", "plain", "index", "rownames"])), draw(st.booleans()))
    case.spellings = draw(st.lists(st.sampled_from(SPELLINGS + CUSTOM_NA), min_size=n_missing, max_size=n_missing))
    case.blank_after = draw(st.lists(st.integers(0, n - 1), max_size=3))
    case.lead_blank = draw(st.booleans())
    case.final_newline = draw(st.booleans())
    return case


# --- writing a case ----------------------------------------------------------------------------------

def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+([.,]\d+)?", text) is not None


def _field(text: str, case: Case, alone: bool) -> str:
    special = case.sep in text or '"' in text or "\n" in text or "\r" in text or (alone and not text.strip())
    quote = (case.quoting == "all" or special or (case.quoting == "strings" and not _is_number(text)))
    return '"' + text.replace('"', '""') + '"' if quote else text


def file_fields(case: Case) -> int:
    return len(case.cols) + (case.layout != "plain")


def written_cells(case: Case) -> list:
    """Per column, each cell's text as written (a missing one as its spelling)."""
    spell = iter(case.spellings)
    return [[c if c is not None else next(spell) for c in col.cells] for col in case.cols]


def write_case(case: Case, path: Path) -> None:
    cells = written_cells(case)
    alone = file_fields(case) == 1
    header = ([""] if case.layout == "index" else []) + [c.name for c in case.cols]
    lines = ([""] if case.lead_blank else [])
    lines.append(case.sep.join(_field(h, case, False) if h else h for h in header))
    for i in range(case.rows):
        lead = {"plain": [], "index": [str(i)], "rownames": [f"r{i}"]}[case.layout]
        row = [_field(t, case, False) for t in lead] + [cells[j][i] for j in range(len(case.cols))]
        if alone:  # one field: an empty cell is a blank line (a missing cell), but at the end (quoted there)
            raw = cells[0][i]
            blank = raw == "" and i < case.rows - 1 and case.quoting == "minimal"
            row = [""] if blank else [_field(raw, case, True)]
        else:
            row = row[:len(lead)] + [_field(t, case, False) for t in row[len(lead):]]
        lines.append(case.sep.join(row))
        if not alone and i in case.blank_after:
            lines.append("")
    if alone and case.blank_after:
        lines.append("")  # trailing blank lines are not rows
    nl = "\r\n" if case.crlf else "\n"
    text = nl.join(lines) + (nl if case.final_newline else "")
    path.write_bytes((b"\xef\xbb\xbf" if case.bom else b"") + text.encode("utf-8"))


# --- what must come back -------------------------------------------------------------------------------

def refusal_expected(case: Case) -> bool:
    if any(all(c is None for c in col.cells) for col in case.cols):
        return True  # a column with no observed value: nothing to learn it from
    one_name = len(case.cols) == 1 and case.layout != "index"
    # a comma a one-column file writes bare splits its row in two; a quoted one is plainly inside one cell
    bare = [c for c in case.cols[0].cells if c is not None and '"' not in _field(c, case, alone=True)]
    commas = case.layout == "rownames" or (case.sep != "," and any("," in c for c in bare))
    return one_name and not case.give_sep and commas  # a one-name header gives no delimiter to go by


def check_filled(col: Col, original: str, got: str) -> None:
    observed = [c for c in col.cells if c is not None]
    text_kind = col.kind in ("text", "many", "bool") or (col.kind == "constant" and not _is_number(observed[0])
                                                         and not re.match(r"\d{4}-", observed[0]))
    if len(set(observed)) == 1:
        assert got == observed[0], (col.name, got)
    elif text_kind and len(observed) >= IDENTIFIER_MIN and len(set(observed)) == len(observed):
        assert got == original, f"identifier {col.name!r}: a missing cell became {got!r}"
    elif col.kind == "int":
        assert re.fullmatch(r"-?\d+", got) and min(map(int, observed)) <= int(got) <= max(map(int, observed)), got
    elif col.kind == "decimal":
        assert re.fullmatch(r"-?\d+" + re.escape(col.mark) + r"\d{%d}" % col.places, got), (col.name, got)
        nums = [float(v.replace(",", ".")) for v in observed]
        tol = 10 ** -col.places
        assert min(nums) - tol <= float(got.replace(",", ".")) <= max(nums) + tol, (got, nums)
    elif col.kind == "date":
        assert re.fullmatch(col.shape, got) and min(observed) <= got <= max(observed), (col.name, got)
    else:
        assert got in set(observed), (col.name, got, set(observed))


def check_output(case: Case, out: Path) -> None:
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == case.bom
    assert b"\n" not in raw.replace(b"\r\n", b"") if case.crlf else b"\r" not in raw  # line endings kept
    sep = case.sep if case.give_sep or file_fields(case) > 1 else ","  # one field: no delimiter to sniff
    with out.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter=sep))
    header = ([""] if case.layout == "index" else []) + [c.name for c in case.cols]
    assert rows[0] == header, (rows[0], header)
    assert len(rows) - 1 == case.rows, (len(rows) - 1, case.rows)
    cells = written_cells(case)
    for i, row in enumerate(rows[1:]):
        if case.layout != "plain":
            assert row[0] == (str(i) if case.layout == "index" else f"r{i}"), row
            row = row[1:]
        assert len(row) == len(case.cols), row
        for j, col in enumerate(case.cols):
            if col.cells[i] is not None:
                assert row[j] == col.cells[i], (col.name, i, row[j], col.cells[i])
            else:
                check_filled(col, cells[j][i], row[j])


def run_case(case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "t.csv", Path(tmp) / "out.csv"
        write_case(case, src)
        args = ["impute", str(src), "--out", str(out), *CHEAP]
        if case.give_sep:
            args += ["--sep", "tab" if case.sep == "\t" else case.sep]
        for v in CUSTOM_NA:
            args += ["--na-values", v]
        r = runner.invoke(app, args)
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        assert "Traceback" not in r.output
        if r.exit_code != 0:
            lines = [line for line in r.stderr.splitlines() if line.strip()]
            assert r.exit_code == 2 and lines and lines[-1].startswith("error: "), r.output
            assert sum(line.startswith("error:") for line in lines) == 1, r.stderr
            assert refusal_expected(case), r.stderr
            assert not out.exists()
            return
        assert not refusal_expected(case), f"ran, but a refusal was expected:\n{src.read_text()}"
        check_output(case, out)


@pytest.mark.fuzz
def test_generated_tables_round_trip():
    @given(case=tables())
    def generated_table_round_trips(case):
        examples[0] += 1
        run_case(case)

    run_fuzz(generated_table_round_trips, share=0.5, examples=examples)
