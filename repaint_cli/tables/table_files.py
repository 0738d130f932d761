"""Reading and writing tables for ``repaint impute``: CSV (every cell as its text) and Parquet (typed).

A table as read is a :class:`Table`: its cells and which are observed. Observed cells never go
through the encoder on the way out: :func:`filled_frame` sets only the missing cells, and a CSV is
written in the input's own style (delimiter, byte-order mark, line endings, row names). The column
kinds (``schema.py``) say how a filled number is written; this module reads a column's kind, its
decimals and its decimal mark, and imports nothing above it.

No torch here; numpy and pandas only.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .messages import TableError, said

# What counts as missing in a CSV, besides --na-values: pandas' default list (one "null" or "N/A"
# must not turn a numeric column into a category).
NA_VALUES = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
             "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
SEPARATORS = (",", "\t", ";", "|")  # what a CSV's delimiter is sniffed among
INT = re.compile(r"^[+-]?\d+$")  # an integer's text


@dataclass
class CsvStyle:
    """How a CSV was written, so that the output is written the same way."""

    sep: str = ","
    bom: bool = False
    newline: str = "\n"
    row_names: bool = False  # every data row has one field more than the header: R's write.table layout


@dataclass
class Table:
    """A table as read: its cells (strings for CSV, typed for Parquet) and which are observed."""

    frame: "object"  # pandas.DataFrame
    observed: np.ndarray  # (rows, columns) bool
    path: Path
    fmt: str  # "csv" or "parquet"
    style: CsvStyle = field(default_factory=CsvStyle)
    dtypes: Optional[dict] = None  # Parquet: each column's dtype as pandas reads the file (written back so)

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    @property
    def n_missing(self) -> int:
        return int((~self.observed).sum())


def table_format(path: Path) -> str:
    return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv"


def read_table(path, na_values=(), allow_missing_columns: bool = False, sep: Optional[str] = None) -> Table:
    """Read a CSV (every cell as its text; ``sep`` None: sniffed, tab for .tsv) or a Parquet file (typed).
    Raises TableError."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    if path.is_dir():
        raise TableError(f"{path}: a folder, not a table; give a .csv or .parquet file")
    na = set(NA_VALUES) | {str(v) for v in na_values}
    table = _read_parquet(path, na, bool(na_values)) if table_format(path) == "parquet" else _read_csv(path, na, sep)
    frame, observed = table.frame, table.observed
    if len(frame) == 0:
        raise TableError(f"{path}: the table has a header but no rows; give at least one data row")
    if frame.shape[1] == 0:
        raise TableError(f"{path}: the table has no columns")
    if not allow_missing_columns:
        empty = [str(c) for j, c in enumerate(frame.columns) if not observed[:, j].any()]
        if empty:
            raise TableError(f"{path}: column '{empty[0]}' has no observed value; drop it (nothing to learn it from)")
    return table


def _read_parquet(path: Path, na: set, strings_na: bool) -> Table:
    """Cells typed (nullable dtypes while filling, so that an integer column with gaps stays integer);
    each column's own dtype, as pandas reads the file, is kept to write back."""
    import pandas as pd

    try:
        import pyarrow.parquet as pq

        frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
        dtypes = dict(pq.read_schema(path).empty_table().to_pandas().dtypes)  # an empty table: no gaps to widen
    except ImportError:
        raise TableError(f"{path}: reading Parquet needs pyarrow; pip install pyarrow, or give a CSV") from None
    except Exception as e:
        raise TableError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    observed = ~frame.isna().to_numpy()
    for j, name in enumerate(frame.columns):  # strings listed in --na-values count as missing here too
        if not pd.api.types.is_numeric_dtype(frame[name]) and strings_na:
            observed[:, j] &= ~frame[name].astype(str).isin(na).to_numpy()
    return Table(frame, observed, path, "parquet", dtypes={str(k): v for k, v in dtypes.items()})


def _read_csv(path: Path, na: set, sep: Optional[str]) -> Table:
    """Every cell as its text (missing ones too, so that a cell left unfilled is written as it was)."""
    import pandas as pd

    with path.open("rb") as f:
        head = f.read(65536)
    if b"\0" in head:
        raise TableError(f"{path}: a binary file, not a CSV table; give a comma-separated text file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the end of the sample
            raise TableError(f"{path}: not UTF-8 text; save the table as UTF-8 CSV") from None
    style = _csv_style(path, head, sep)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = list(csv.reader(f, delimiter=style.sep))
        while lines and not lines[0]:  # blank lines before the header
            lines.pop(0)
    except UnicodeDecodeError:
        raise TableError(f"{path}: not UTF-8 text; save the table as UTF-8 CSV") from None
    except csv.Error as e:
        raise TableError(f"{path}: not a CSV table ({_first_line(e)}); give comma-separated text with a header") from None
    header = _check_header(path, lines[0] if lines else None, style.sep)
    rows, style.row_names = _data_rows(path, lines[1:], len(header), sniffed=sep is None)
    names = [r[0] for r in rows] if style.row_names else None
    cells = [r[1:] for r in rows] if style.row_names else rows
    frame = pd.DataFrame(cells, columns=header, dtype=object, index=pd.Index(names, dtype=object) if names else None)
    observed = np.array([[c.strip() not in na for c in r] for r in cells], dtype=bool).reshape(len(cells), len(header))
    if frame.shape[1] == 1:
        _refuse_one_column(path, head, style.sep)
    return Table(frame, observed, path, "csv", style)


def _data_rows(path: Path, lines: list[list[str]], n: int, sniffed: bool) -> tuple[list[list[str]], bool]:
    """The data rows, each of ``n`` cells (a short row's last cells are missing), and whether each row
    starts with a row name (every row one field longer than the header: R's write.table layout).
    A blank line is a missing cell in a one-column table (but at the end), else skipped (a line of spaces too)."""
    if n == 1 and all(len(r) <= 1 for r in lines):  # only an empty line is blank here ('""' and ' ' are cells)
        last = max((i for i, r in enumerate(lines) if r), default=-1)
        return [r if r else [""] for r in lines[:last + 1]], False
    blank = [not r or (len(r) == 1 and not r[0].strip()) for r in lines]
    rows = [r for r, b in zip(lines, blank) if not b]
    lengths = {len(r) for r in rows}
    row_names = lengths == {n + 1}
    if row_names and n == 1 and sniffed:  # a one-name header gives no delimiter to go by
        raise TableError(said(f"{path}: one column name but two fields in every row (row names first, or a "
                               "decimal comma?); give `sep` (the delimiter)"))
    if row_names:
        return rows, True
    for i, (r, b) in enumerate(zip(lines, blank)):
        if not b and len(r) > n:
            raise TableError(f"{path}: data row {i + 1} has {len(r)} fields but the header {n}; "
                             "give every row as many fields as the header (quote cells that hold the delimiter)")
    return [r + [""] * (n - len(r)) for r in rows], False


def _csv_style(path: Path, head: bytes, sep: Optional[str]) -> CsvStyle:
    """The delimiter (given, tab for .tsv, else the one that splits the first rows into as many fields
    as the header, or one more: row names), the byte-order mark and the line ending of a CSV."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = head.split(b"\n", 1)[0]
    newline = "\r\n" if first.endswith(b"\r") else "\n"
    style = CsvStyle(sep or ",", head.startswith(b"\xef\xbb\xbf"), newline)
    if sep is None and path.suffix.lower() in (".tsv", ".tab"):
        style.sep = "\t"
    elif sep is None:
        best = 1
        for c in SEPARATORS:
            try:
                rows = [r for _, r in zip(range(51), csv.reader(io.StringIO(text, newline=""), delimiter=c)) if r]
            except csv.Error:
                continue
            if len(head) == 65536 and len(rows) > 2:
                rows = rows[:-1]  # the last one may be cut
            if not rows:
                continue
            n, counts = len(rows[0]), {len(r) for r in rows[1:]}
            if n > best and (counts <= {n} or counts == {n + 1}):
                style.sep, best = c, n
    return style


def _refuse_one_column(path: Path, head: bytes, sep: str) -> None:
    """A one-column read of a file whose every data row splits at ';', a tab or '|' is a wrong delimiter,
    not a table."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    for c, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=c) if any(f.strip() for f in r)][1:51]
        if c != sep and rows and all(len(r) > 1 for r in rows):
            given = "`sep`=" + name if name.startswith("'") else "`sep` " + name  # sep=';', sep tab
            raise TableError(said(f"{path}: read as one column with the delimiter {sep!r}, but its rows hold {name}; "
                                  f"give {given}"))


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _check_header(path: Path, header: Optional[list], sep: str) -> list[str]:
    """The header row's names, or TableError for an empty, duplicated or unsplit header."""
    if not header or not any(h.strip() for h in header):
        raise TableError(f"{path}: empty file; give a CSV with a header row and data rows")
    seen = set()
    for h in header:
        if h in seen:
            raise TableError(f"{path}: column name '{h}' appears twice; give each column its own name")
        seen.add(h)
    if len(header) == 1 and len(header[0]) > 200:
        raise TableError(said(f"{path}: no header row split by {sep!r}; give a CSV table (or `sep`)"))
    return header


def is_number(v) -> bool:
    try:
        return math.isfinite(float(str(v).strip()))
    except ValueError:
        return False


# --- writing -----------------------------------------------------------------------------------

def filled_frame(table: Table, cols: list, values: list[np.ndarray], rows=None):
    """The table with its missing cells filled from ``values`` (per ``schema.Column`` of ``cols``, as the encoder
    decodes them); observed cells are left as read, and so
    are an identifier's missing cells (no value could be right). Parquet columns get back the dtypes
    pandas reads from the file (float64 stays float64)."""
    import pandas as pd

    frame = table.frame.copy()
    rows = np.arange(len(frame)) if rows is None else np.asarray(rows)
    for j, col in enumerate(cols):
        miss = ~table.observed[:, j]
        if not miss.any() or col.kind == "identifier":
            continue
        if col.kind == "constant":
            fill = [col.constant] * int(miss.sum())
        elif col.kind == "category":
            fill = [col.categories[int(i)] for i in values[j][miss]]
        else:
            fill = [_number(v, col, table.fmt) for v in values[j][miss]]
        series = frame.iloc[:, j]
        if table.fmt == "csv":
            series = series.astype(object)
        elif col.kind == "int" and not pd.api.types.is_integer_dtype(series.dtype):
            series = series.astype("Int64")
        series = series.copy()
        series.iloc[np.flatnonzero(miss)] = fill
        frame[frame.columns[j]] = series
    if table.dtypes:
        frame = _file_dtypes(frame, table.dtypes)
    return frame.iloc[rows]


def _file_dtypes(frame, dtypes: dict):
    """Each column as the dtype pandas reads from the Parquet file (float64, int64, object), where its
    cells allow it (an integer column that still has a gap stays a nullable Int64)."""
    import pandas as pd

    for name in frame.columns:
        want = dtypes.get(str(name))
        series = frame[name]
        if want is None or series.dtype == want:
            continue
        if pd.api.types.is_integer_dtype(want) or pd.api.types.is_bool_dtype(want):
            if series.isna().any():
                continue
        try:
            frame[name] = series.to_numpy(dtype=want, na_value=np.nan) if pd.api.types.is_float_dtype(want) \
                else series.astype(want)
        except (TypeError, ValueError):
            pass  # kept as it is (nullable): a value the file's own dtype cannot hold
    return frame


def _number(v: float, col, fmt: str):
    if col.kind == "date":
        return str(np.datetime64(int(v), col.unit)).replace("T", col.date_sep)
    if col.kind == "int":
        return str(int(v)) if fmt == "csv" else int(v)
    if fmt != "csv":
        return float(v)
    if col.decimals is None:
        return repr(float(v))
    return f"{v:.{col.decimals}f}".replace(".", col.decimal)


def write_table(frame, path, fmt: Optional[str] = None, style: Optional[CsvStyle] = None,
                option: str = "out", cols: Optional[list] = None) -> None:
    """Write atomically (repaint_cli.files): a temporary file beside the target, renamed over it
    when complete. A CSV keeps ``style`` (the input's delimiter, byte-order mark, line ending and row
    names); a Parquet file written from a CSV's text cells gets typed columns from ``cols``."""
    from ..files import atomic_path

    path = Path(path)
    fmt = fmt or table_format(path)
    with atomic_path(path, option) as tmp:
        if fmt == "parquet":
            typed_frame(frame, cols).to_parquet(tmp, index=bool(style and style.row_names))  # R's row names kept
        else:
            style = style or CsvStyle()
            frame.to_csv(tmp, encoding="utf-8-sig" if style.bom else "utf-8", compression=None, **csv_options(style))


def write_csv(frame, stream, style: CsvStyle) -> None:
    """A filled table as CSV on an open text stream (stdout), as ``write_table`` writes it."""
    if style.bom:
        stream.write("\ufeff")
    frame.to_csv(stream, **csv_options(style))


def csv_options(style: CsvStyle) -> dict:
    """pandas.to_csv's arguments for a CSV in ``style``: row names first, under no header cell, as R writes them."""
    return dict(sep=style.sep, lineterminator=style.newline, index=style.row_names,
                **({"index_label": False} if style.row_names else {}))


def typed_frame(frame, cols: Optional[list]):
    """A CSV's text cells as typed columns (for Parquet): integers as Int64, decimals as float64, dates as
    datetime64, the rest as text. A frame that is typed already (read from Parquet) comes back as it is."""
    import pandas as pd

    if not cols:
        return frame
    out = frame.copy()
    for j, col in enumerate(cols):
        series = frame.iloc[:, j]
        if series.dtype != object:
            continue
        kind = col.kind
        if kind == "constant":  # typed by its one value
            kind = "int" if INT.match(str(col.constant).strip()) else "float" if is_number(col.constant) else ""
        text = series.map(lambda v: v.strip() if isinstance(v, str) else v)
        if kind in ("int", "float"):
            nums = pd.to_numeric(text.map(lambda v: v.replace(col.decimal, ".") if isinstance(v, str) else v),
                                 errors="coerce")
            out[out.columns[j]] = nums.astype("Int64" if kind == "int" else "float64")
        elif kind == "date":
            out[out.columns[j]] = pd.to_datetime(text, errors="coerce", format="ISO8601")
    return out