"""Tables for ``repaint impute``: reading, column types, the numeric encoding, writing.

A table becomes an array of floats (rows x encoded width) and a keep mask of the
same shape (True = observed), the image-with-holes that RePaint fills; the
codec turns the filled array back into cells. Observed cells never go through
the codec on the way out: they are written back exactly as they were read.

- numeric columns: quantile-to-normal scores (each observed value's mid-rank,
  through the inverse normal CDF), inverted by interpolation, clipped to the
  observed range; integer columns are rounded back;
- categorical columns: one-hot in {-1, +1} up to ``ONEHOT_MAX`` categories,
  analog bits (Chen et al. 2023) beyond; decoded to the nearest valid code;
- constant columns take no width: their missing cells get the constant.

No torch here; numpy and pandas only.
"""
from __future__ import annotations

import csv
import io
import math
import re
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

# What counts as missing in a CSV, besides --na-values: pandas' default list (one "null" or "N/A"
# must not turn a numeric column into a category).
NA_VALUES = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
             "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
SEPARATORS = (",", "\t", ";", "|")  # what a CSV's delimiter is sniffed among
ONEHOT_MAX = 32  # more categories than this: analog bits
QUANTILES_MAX = 2000  # numeric columns keep at most this many points of their quantile map
_INT = re.compile(r"^[+-]?\d+$")


class TableError(ValueError):
    """Bad input: the message is one line naming the file and the fix."""


@dataclass
class Column:
    name: str
    kind: str  # "float", "int", "date", "category", "constant" or "identifier"
    categories: list = field(default_factory=list)  # category: the observed values, sorted
    values: Optional[np.ndarray] = None  # numeric: points of the quantile map (nondecreasing)
    scores: Optional[np.ndarray] = None  # numeric: their normal scores (increasing)
    decimals: Optional[int] = None  # float: decimals written for filled cells (None: shortest repr)
    constant: object = None  # constant: the one observed value (a cell as read)
    decimal: str = "."  # float: the decimal mark of a CSV's cells ("," in a ';'- or tab-separated file)
    unit: Optional[str] = None  # date: numpy's unit of its ISO texts (D, m or s) ...
    date_sep: str = "T"  # ... and what stands between the date and the time

    @property
    def numeric(self) -> bool:
        """Filled through the quantile map: numbers, and dates as their count of ``unit`` since 1970."""
        return self.kind in ("float", "int", "date")

    @property
    def whole(self) -> bool:
        """Filled values are rounded: integers, and dates to their unit."""
        return self.kind in ("int", "date")

    @property
    def width(self) -> int:
        if self.kind == "category":
            k = len(self.categories)
            return k if k <= ONEHOT_MAX else max(1, math.ceil(math.log2(k)))
        return 0 if self.kind in ("constant", "identifier") else 1

    def describe(self) -> str:
        if self.kind == "category":
            return f"category ({len(self.categories)} values)"
        return self.kind

    def to_card(self) -> dict:
        d = {"name": self.name, "kind": self.kind}
        if self.kind == "category":
            d["categories"] = [_plain(c) for c in self.categories]
        if self.kind == "float":
            d["decimals"] = self.decimals
            if self.decimal != ".":
                d["decimal"] = self.decimal
        if self.kind == "date":
            d.update(unit=self.unit, date_sep=self.date_sep)
        if self.kind == "constant":
            d["constant"] = _plain(self.constant)
        return d

    @classmethod
    def from_card(cls, d: dict, arrays: dict) -> "Column":
        col = cls(d["name"], d["kind"], list(d.get("categories", [])), decimals=d.get("decimals"),
                  constant=d.get("constant"), decimal=d.get("decimal", "."), unit=d.get("unit"),
                  date_sep=d.get("date_sep", "T"))
        if col.numeric:
            col.values = arrays[f"{col.name}.values"]
            col.scores = arrays[f"{col.name}.scores"]
        return col


def _plain(v):
    """A cell as YAML can hold it (numpy scalars to Python, pandas timestamps to datetime)."""
    if isinstance(v, np.generic):
        return v.item()
    to_py = getattr(v, "to_pydatetime", None)  # pandas.Timestamp: YAML knows datetime, not its subclass
    return to_py() if to_py is not None and type(v).__name__ == "Timestamp" else v


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
        raise TableError(f"{path}: one column name but two fields in every row (row names first, or a decimal "
                         "comma?); give --sep (the delimiter)")
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
            raise TableError(f"{path}: read as one column with the delimiter {sep!r}, but its rows hold {name}; "
                             f"give --sep {name}")


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
        raise TableError(f"{path}: no header row split by {sep!r}; give a CSV table (or --sep)")
    return header


# --- column types ---------------------------------------------------------------------------

def infer_columns(table: Table, categorical=(), warn: Optional[Callable[[str], None]] = None) -> list[Column]:
    """Each column's type and encoding, fitted on its observed cells; ``warn`` hears of a column read
    as a category that holds numbers but for a few kinds of cell (a missing-value spelling?) or
    numbers written with a decimal comma."""
    categorical = set(categorical)
    unknown = categorical - set(table.columns)
    if unknown:
        raise TableError(f"{table.path}: --categorical names no column '{sorted(unknown)[0]}'; "
                         f"columns: {', '.join(table.columns)}")
    cols = []
    comma = table.fmt == "csv" and table.style.sep != ","  # a ',' file cannot hold decimal commas unquoted
    for j, name in enumerate(table.columns):
        obs = table.frame.iloc[:, j].to_numpy(dtype=object)[table.observed[:, j]]
        cols.append(_fit_column(name, obs, table.fmt, table.frame.dtypes.iloc[j], name in categorical, comma))
        if warn is not None and cols[-1].kind in ("category", "identifier") and table.fmt == "csv" \
                and name not in categorical:
            _warn_numbers_as_text(name, obs, warn)
    return cols


def _warn_numbers_as_text(name: str, obs: np.ndarray, warn: Callable[[str], None]) -> None:
    odd, n_bad = _odd_cells(obs)
    if odd:
        warn(f"column '{name}' holds numbers but for {n_bad} cell{'s' if n_bad > 1 else ''} "
             f"({', '.join(repr(v) for v in odd)}), so it is read as a category; if that means missing, "
             "give " + " ".join(f"--na-values {v!r}" for v in odd))
    elif len(obs) and all(_COMMA_NUMBER.match(str(v).strip()) for v in obs):
        warn(f"column '{name}' holds numbers written with a decimal comma ({str(obs[0]).strip()!r}) in a "
             "','-separated file, so it is read as a category; write them with a decimal point, or separate "
             "the file with ';' (a decimal comma is read there)")


def _odd_cells(obs: np.ndarray) -> tuple[list[str], int]:
    """The distinct non-numeric texts (up to 5 kinds) of a column whose other cells are all numbers (at
    least as many as the odd ones), and how many cells hold them; ([], 0) for any other column."""
    import pandas as pd

    text = pd.Series([str(v).strip() for v in obs], dtype=object)
    bad = ~np.isfinite(pd.to_numeric(text, errors="coerce").to_numpy(dtype=float))
    n_bad = int(bad.sum())
    odd = list(dict.fromkeys(text[bad]))
    if n_bad == 0 or len(odd) > 5 or len(obs) - n_bad < max(2, n_bad):
        return [], 0
    return odd, n_bad


_UNITS = {"D": "day", "m": "minute", "s": "second"}
IDENTIFIER_MIN = 10  # a text column with this many observed cells, all different, is an identifier
_COMMA_NUMBER = re.compile(r"^[+-]?\d+,\d+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:([T ])\d{2}:\d{2}(:\d{2})?)?$")


def _fit_column(name: str, obs: np.ndarray, fmt: str, dtype, force_category: bool, comma: bool = False) -> Column:
    if len(obs) == 0:  # only where allowed (a saved model knows the column)
        return Column(name, "constant", constant=None)
    col = None if force_category else _csv_numbers(name, obs, comma) if fmt == "csv" else _typed_numbers(name, obs, dtype)
    if col is not None:
        if np.unique(col.values).size == 1:
            return Column(name, "constant", constant=obs[0])
        return col
    keys = sorted({_category_key(v) for v in obs}, key=lambda v: (str(type(v)), v))
    if len(keys) == 1:
        return Column(name, "constant", constant=obs[0])
    if len(keys) == len(obs) >= IDENTIFIER_MIN:
        return Column(name, "identifier", categories=keys)  # kept to compare with a model's, not encoded
    return Column(name, "category", categories=keys)


def _csv_numbers(name: str, obs: np.ndarray, comma: bool) -> Optional[Column]:
    """A numeric (or ISO date) column from a CSV's cells, its quantile map fitted; None for text."""
    import pandas as pd

    text = [str(v).strip() for v in obs]
    col = Column(name, "float")
    nums = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(nums).all() and comma and all(_COMMA_NUMBER.match(t) or _INT.match(t) for t in text):
        col.decimal = ","  # 1,5 in a ';'-separated file
        text = [t.replace(",", ".") for t in text]
        nums = np.array([float(t) for t in text])
    if np.isfinite(nums).all():
        if all(_INT.match(t) for t in text):
            col.kind = "int"
        else:
            col.decimals = _decimals(text)
    else:
        nums = _dates(text, col)
        if nums is None:
            return None
    col.values, col.scores = quantile_map(nums)
    return col


def _typed_numbers(name: str, obs: np.ndarray, dtype) -> Optional[Column]:
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return None
    col = Column(name, "int" if pd.api.types.is_integer_dtype(dtype) else "float")
    col.values, col.scores = quantile_map(np.asarray(obs, dtype=float))
    return col


def _date_numbers(cells, unit: str) -> np.ndarray:
    """ISO date texts (or a Parquet's timestamps) as counts of ``unit`` since 1970 (NaN where one is not a date)."""
    out = np.full(len(cells), np.nan)
    for i, c in enumerate(cells):
        try:
            out[i] = np.datetime64(str(c).strip().replace(" ", "T"), unit).astype(np.int64)
        except ValueError:
            pass
    return out


def _dates(text: list[str], col: Column) -> Optional[np.ndarray]:
    """ISO dates (2024-05-01, and with a time to the minute or second, after 'T' or a space) as counts of
    days, minutes or seconds since 1970, setting ``col``'s kind, unit and separator; None for other text."""
    shapes = set()
    for t in text:
        m = _DATE.match(t)
        if m is None:
            return None
        shapes.add((m.group(1), m.group(2) is not None))
    if len(shapes) != 1:
        return None
    sep, seconds = shapes.pop()
    unit = "D" if sep is None else "s" if seconds else "m"
    try:
        stamps = np.array([t.replace(" ", "T") for t in text], dtype=f"datetime64[{unit}]")
    except ValueError:  # 2024-02-30
        return None
    if np.isnat(stamps).any():
        return None
    col.kind, col.unit, col.date_sep = "date", unit, sep or "T"
    return stamps.astype(np.int64).astype(np.float64)


def _category_key(v):
    """A category as compared and stored: CSV cells by their text, Parquet cells by value."""
    return v.strip() if isinstance(v, str) else _plain(v)


def _decimals(text: list[str]) -> Optional[int]:
    """How many decimals filled cells get: the most any observed cell has (None where one uses an exponent)."""
    most = 0
    for t in text:
        if "e" in t.lower() or "inf" in t.lower():
            return None
        if "." in t:
            most = max(most, len(t.split(".", 1)[1]))
    return min(most, 12)


def quantile_map(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (values, normal scores) of the map from a value to its mid-rank's normal score."""
    from statistics import NormalDist

    v = np.sort(np.asarray(v, dtype=np.float64))
    n = len(v)
    uniq, counts = np.unique(v, return_counts=True)
    if len(uniq) <= QUANTILES_MAX:
        before = np.concatenate([[0], np.cumsum(counts)[:-1]])
        p = (before + counts / 2) / n
        values = uniq
    else:
        p = (np.arange(QUANTILES_MAX) + 0.5) / QUANTILES_MAX
        values = np.quantile(v, p)
    inv = NormalDist().inv_cdf
    scores = np.array([inv(float(x)) for x in p])
    return values, scores


def schema_difference(model_cols: list[Column], table: Table, cols_here: list[Column]) -> Optional[str]:
    """Why a saved table model cannot fill this table, or None when it can."""
    names = [c.name for c in model_cols]
    if names != table.columns:
        missing = [n for n in names if n not in table.columns]
        extra = [n for n in table.columns if n not in names]
        if missing:
            return f"the model's column '{missing[0]}' is not in this table"
        if extra:
            return f"column '{extra[0]}' is not in the model's schema"
        return "the columns are in another order than the model's: " + ", ".join(names)
    for m, h in zip(model_cols, cols_here):
        if m.kind == "identifier":  # the model gave it no width, and fills none of its cells
            continue
        if m.kind == "constant":  # the model gave it no width: any one value here is fine, several are not
            if h.kind != "constant":
                return (f"column '{m.name}' has one value only in the model ({m.constant!r}) "
                        f"but is {h.describe()} here")
            continue
        if h.kind == "constant":
            if h.constant is None:
                continue
            if m.numeric and not _is_number(h.constant):
                return f"column '{m.name}' holds {h.constant!r} here but is {m.describe()} in the model"
            if m.kind == "category" and _category_key(h.constant) not in set(m.categories):
                return f"column '{m.name}' has the value '{_category_key(h.constant)}', which the model never saw"
            continue
        if m.numeric != h.numeric or (m.kind == "date") != (h.kind == "date"):
            return f"column '{m.name}' is {h.describe()} here but {m.describe()} in the model"
        if m.kind == "date" and m.unit != h.unit:
            return f"column '{m.name}' holds dates to the {_UNITS[h.unit]} here but to the {_UNITS[m.unit]} in the model"
        if m.kind == "category":
            new = [c for c in h.categories if c not in set(m.categories)]
            if new:
                return f"column '{m.name}' has the value '{new[0]}', which the model never saw"
    return None


def adopt_constants(model_cols: list[Column], cols_here: list[Column]) -> list[Column]:
    """The model's columns, written as this table writes them: a column constant in the model takes this
    table's constant (the model never saw it: it has no width), and a number is written as this table's
    (an integer column of the model filled into a column with decimals gets its decimals, and the reverse)."""
    out = []
    for m, h in zip(model_cols, cols_here):
        if m.kind == "constant" and h.kind == "constant" and h.constant is not None:
            m = h
        elif m.kind in ("int", "float") and h.kind in ("int", "float"):
            m = dataclasses.replace(m, kind=h.kind, decimals=h.decimals, decimal=h.decimal)
        elif m.kind == "date" and h.kind == "date":
            m = dataclasses.replace(m, date_sep=h.date_sep)
        out.append(m)
    return out


def _is_number(v) -> bool:
    try:
        return math.isfinite(float(str(v).strip()))
    except ValueError:
        return False


# --- the codec ---------------------------------------------------------------------------------

def cell_values(table: Table, cols: list[Column]) -> list[np.ndarray]:
    """Each column's observed cells as numbers: floats (NaN where missing) or category
    indices (-1 where missing); constant columns give an empty array."""
    import pandas as pd

    out = []
    for j, col in enumerate(cols):
        raw = table.frame.iloc[:, j].to_numpy(dtype=object)
        obs = table.observed[:, j]
        if col.kind == "date":
            v = np.full(len(raw), np.nan)
            v[obs] = _date_numbers(raw[obs], col.unit)
            out.append(v)
        elif col.numeric:
            v = np.full(len(raw), np.nan)
            text = [str(x).strip().replace(col.decimal, ".") if isinstance(x, str) else x for x in raw[obs]]
            v[obs] = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=float)
            out.append(v)
        elif col.kind == "category":
            index = {c: i for i, c in enumerate(col.categories)}
            v = np.full(len(raw), -1, dtype=np.int64)
            v[obs] = [index.get(_category_key(x), -1) for x in raw[obs]]
            out.append(v)
        else:
            out.append(np.zeros(0))
    return out


def encode(values: list[np.ndarray], cols: list[Column]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, width) float32 array and its keep mask; missing cells are 0 in the array."""
    n = next((len(v) for v in values if len(v)), 0)
    blocks, keeps = [], []
    for v, col in zip(values, cols):
        if col.numeric:
            ok = np.isfinite(v)
            x = np.where(ok, np.interp(np.where(ok, v, 0), col.values, col.scores), 0.0)
            blocks.append(x[:, None])
            keeps.append(ok[:, None])
        elif col.kind == "category":
            ok = v >= 0
            codes = category_codes(col)
            x = np.where(ok[:, None], codes[np.maximum(v, 0)], 0.0)
            blocks.append(x)
            keeps.append(np.repeat(ok[:, None], col.width, axis=1))
    if not blocks:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), bool)
    return np.concatenate(blocks, 1).astype(np.float32), np.concatenate(keeps, 1)


def category_codes(col: Column) -> np.ndarray:
    """(categories, width) codes in {-1, +1}: one-hot, or the binary digits of the index."""
    k = len(col.categories)
    if k <= ONEHOT_MAX:
        return np.where(np.eye(k, dtype=bool), 1.0, -1.0)
    bits = (np.arange(k)[:, None] >> np.arange(col.width)[None]) & 1
    return np.where(bits == 1, 1.0, -1.0)


def decode(x: np.ndarray, cols: list[Column]) -> list[np.ndarray]:
    """The encoded array back to numbers per column (floats, or category indices)."""
    out, at = [], 0
    for col in cols:
        w = col.width
        block = x[:, at:at + w]
        at += w
        if col.numeric:
            v = np.interp(block[:, 0], col.scores, col.values)  # clipped to the observed range
            out.append(np.round(v) if col.whole else v)
        elif col.kind == "category":
            codes = category_codes(col)
            if len(col.categories) <= ONEHOT_MAX:
                out.append(block.argmax(1))
            else:  # the nearest valid code (an index past the last category is not one)
                d = ((block[:, None, :] - codes[None]) ** 2).sum(-1) if len(block) * len(codes) < 5e7 else None
                out.append(d.argmin(1) if d is not None else _nearest_chunked(block, codes))
        else:
            out.append(np.zeros(len(x)))
    return out


def _nearest_chunked(block: np.ndarray, codes: np.ndarray) -> np.ndarray:
    step = max(1, int(5e7 // max(1, codes.size)))
    return np.concatenate([((block[i:i + step, None] - codes[None]) ** 2).sum(-1).argmin(1)
                           for i in range(0, len(block), step)])


def clip_range(cols: list[Column]) -> np.ndarray:
    """Per encoded dimension, the largest magnitude the data takes (a predicted x0 is clipped to it)."""
    parts = []
    for col in cols:
        if col.numeric:
            parts.append([float(np.abs(col.scores).max())])
        elif col.kind == "category":
            parts.append([1.0] * col.width)
    return np.array([x for p in parts for x in p], dtype=np.float32)


def combine(samples: list[list[np.ndarray]], cols: list[Column], how: str = "mean") -> list[np.ndarray]:
    """K decoded imputations to one: mean or median of numeric cells (integers rounded), mode of categories."""
    out = []
    for j, col in enumerate(cols):
        stack = np.stack([s[j] for s in samples])  # (K, rows)
        if col.numeric:
            v = np.median(stack, 0) if how == "median" else stack.mean(0)
            out.append(np.round(v) if col.whole else v)
        elif col.kind == "category":
            k = len(col.categories)
            counts = np.zeros((stack.shape[1], k), np.int64)
            for s in stack:
                np.add.at(counts, (np.arange(stack.shape[1]), s), 1)
            out.append(counts.argmax(1))  # ties: the earlier category
        else:
            out.append(stack[0])
    return out


# --- writing -----------------------------------------------------------------------------------

def filled_frame(table: Table, cols: list[Column], values: list[np.ndarray], rows=None):
    """The table with its missing cells filled from ``values``; observed cells are left as read, and so
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


def _number(v: float, col: Column, fmt: str):
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
                option: str = "--out", cols: Optional[list] = None) -> None:
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
            kind = "int" if _INT.match(str(col.constant).strip()) else "float" if _is_number(col.constant) else ""
        text = series.map(lambda v: v.strip() if isinstance(v, str) else v)
        if kind in ("int", "float"):
            nums = pd.to_numeric(text.map(lambda v: v.replace(col.decimal, ".") if isinstance(v, str) else v),
                                 errors="coerce")
            out[out.columns[j]] = nums.astype("Int64" if kind == "int" else "float64")
        elif kind == "date":
            out[out.columns[j]] = pd.to_datetime(text, errors="coerce", format="ISO8601")
    return out
