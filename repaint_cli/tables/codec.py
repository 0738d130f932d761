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
import math
import re
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
    kind: str  # "float", "int", "category" or "constant"
    categories: list = field(default_factory=list)  # category: the observed values, sorted
    values: Optional[np.ndarray] = None  # numeric: points of the quantile map (nondecreasing)
    scores: Optional[np.ndarray] = None  # numeric: their normal scores (increasing)
    decimals: Optional[int] = None  # float: decimals written for filled cells (None: shortest repr)
    constant: object = None  # constant: the one observed value (a cell as read)

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")

    @property
    def width(self) -> int:
        if self.kind == "category":
            k = len(self.categories)
            return k if k <= ONEHOT_MAX else max(1, math.ceil(math.log2(k)))
        return 0 if self.kind == "constant" else 1

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
        if self.kind == "constant":
            d["constant"] = _plain(self.constant)
        return d

    @classmethod
    def from_card(cls, d: dict, arrays: dict) -> "Column":
        col = cls(d["name"], d["kind"], list(d.get("categories", [])), decimals=d.get("decimals"),
                  constant=d.get("constant"))
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


@dataclass
class Table:
    """A table as read: its cells (strings for CSV, typed for Parquet) and which are observed."""

    frame: "object"  # pandas.DataFrame
    observed: np.ndarray  # (rows, columns) bool
    path: Path
    fmt: str  # "csv" or "parquet"
    style: CsvStyle = field(default_factory=CsvStyle)

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
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    if path.is_dir():
        raise TableError(f"{path}: a folder, not a table; give a .csv or .parquet file")
    fmt = table_format(path)
    na = set(NA_VALUES) | {str(v) for v in na_values}
    style = CsvStyle()
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
        except ImportError:
            raise TableError(f"{path}: reading Parquet needs pyarrow; pip install pyarrow, or give a CSV") from None
        except Exception as e:
            raise TableError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
        observed = ~frame.isna().to_numpy()
        for j, name in enumerate(frame.columns):  # strings listed in --na-values count as missing here too
            if not pd.api.types.is_numeric_dtype(frame[name]) and na_values:
                observed[:, j] &= ~frame[name].astype(str).isin(na).to_numpy()
    else:
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
        _check_header(path, style.sep)
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=sorted(na), skipinitialspace=False,
                                sep=style.sep, encoding="utf-8-sig")
        except pd.errors.EmptyDataError:
            raise TableError(f"{path}: empty file; give a CSV with a header row and data rows") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
            raise TableError(f"{path}: not a CSV table ({_first_line(e)}); give comma-separated text with a header") from None
        cells = frame.to_numpy(dtype=object)
        blank = np.vectorize(lambda c: isinstance(c, str) and c.strip() in na, otypes=[bool])(cells) if cells.size else \
            np.zeros(cells.shape, bool)
        observed = ~(pd.isna(frame).to_numpy() | blank)
        if frame.shape[1] == 1:
            _refuse_one_column(path, head, style.sep)
    if len(frame) == 0:
        raise TableError(f"{path}: the table has a header but no rows; give at least one data row")
    if frame.shape[1] == 0:
        raise TableError(f"{path}: the table has no columns")
    if not allow_missing_columns:
        empty = [str(c) for j, c in enumerate(frame.columns) if not observed[:, j].any()]
        if empty:
            raise TableError(f"{path}: column '{empty[0]}' has no observed value; drop it (nothing to learn it from)")
    return Table(frame, observed, path, fmt, style)


def _csv_style(path: Path, head: bytes, sep: Optional[str]) -> CsvStyle:
    """The delimiter (given, tab for .tsv, else the one that splits the first lines into equal rows),
    the byte-order mark and the line ending of a CSV."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = head.split(b"\n", 1)[0]
    newline = "\r\n" if first.endswith(b"\r") else "\n"
    style = CsvStyle(sep or ",", head.startswith(b"\xef\xbb\xbf"), newline)
    if sep is None and path.suffix.lower() in (".tsv", ".tab"):
        style.sep = "\t"
    elif sep is None:
        lines = [line for line in text.splitlines()[:50] if line.strip()]
        if len(head) == 65536 and len(lines) > 2:
            lines = lines[:-1]  # the last one may be cut
        best = 1
        for c in SEPARATORS:
            counts = {len(row) for row in csv.reader(lines, delimiter=c)}
            n = counts.pop() if len(counts) == 1 else 0
            if n > best:
                style.sep, best = c, n
    return style


def _refuse_one_column(path: Path, head: bytes, sep: str) -> None:
    """A one-column read of a file whose every line holds ';' or a tab is a wrong delimiter, not a table."""
    lines = [line for line in head.decode("utf-8", errors="replace").splitlines()[:50] if line.strip()]
    for c, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        if c != sep and lines and all(c in line for line in lines):
            raise TableError(f"{path}: read as one column with the delimiter {sep!r}, but its lines hold {name}; "
                             f"give --sep {name}")


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _check_header(path: Path, sep: str = ",") -> None:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f, delimiter=sep), None)
    if not header or not any(h.strip() for h in header):
        raise TableError(f"{path}: empty file; give a CSV with a header row and data rows")
    seen = set()
    for h in header:
        if h in seen:
            raise TableError(f"{path}: column name '{h}' appears twice; give each column its own name")
        seen.add(h)
    if len(header) == 1 and len(header[0]) > 200:
        raise TableError(f"{path}: no header row split by {sep!r}; give a CSV table (or --sep)")


# --- column types ---------------------------------------------------------------------------

def infer_columns(table: Table, categorical=(), warn: Optional[Callable[[str], None]] = None) -> list[Column]:
    """Each column's type and encoding, fitted on its observed cells; ``warn`` hears of a column
    read as a category that is numeric except for a few cells (a missing-value spelling?)."""
    categorical = set(categorical)
    unknown = categorical - set(table.columns)
    if unknown:
        raise TableError(f"{table.path}: --categorical names no column '{sorted(unknown)[0]}'; "
                         f"columns: {', '.join(table.columns)}")
    cols = []
    for j, name in enumerate(table.columns):
        obs = table.frame.iloc[:, j].to_numpy(dtype=object)[table.observed[:, j]]
        cols.append(_fit_column(name, obs, table.fmt, table.frame.dtypes.iloc[j], name in categorical))
        if warn is not None and cols[-1].kind == "category" and table.fmt == "csv":
            odd, n_bad = _odd_cells(obs)
            if odd:
                warn(f"column '{name}' is numeric except for {n_bad} cell{'s' if n_bad > 1 else ''} "
                     f"({', '.join(repr(v) for v in odd)}), so it is read as a category; if that means missing, "
                     "give " + " ".join(f"--na-values {v!r}" for v in odd))
    return cols


def _odd_cells(obs: np.ndarray) -> tuple[list[str], int]:
    """The distinct non-numeric texts (up to 5) of a column whose cells are numbers but for a few
    (5% at most), and how many cells hold them; ([], 0) for any other column."""
    import pandas as pd

    text = pd.Series([str(v).strip() for v in obs])
    bad = ~np.isfinite(pd.to_numeric(text, errors="coerce").to_numpy(dtype=float))
    n_bad = int(bad.sum())
    if n_bad == 0 or n_bad > max(2, len(obs) // 20) or len(obs) - n_bad < 2:
        return [], 0
    return list(dict.fromkeys(text[bad]))[:5], n_bad


def _fit_column(name: str, obs: np.ndarray, fmt: str, dtype, force_category: bool) -> Column:
    import pandas as pd

    if len(obs) == 0:  # only where allowed (a saved model knows the column)
        return Column(name, "constant", constant=None)
    if fmt == "csv":
        text = [str(v).strip() for v in obs]
        nums = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(dtype=float)
        numeric = not force_category and bool(np.isfinite(nums).all())
        kind = "int" if numeric and all(_INT.match(t) for t in text) else "float"
    else:
        numeric = not force_category and pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        nums = np.asarray(obs, dtype=float) if numeric else None
        kind = "int" if numeric and pd.api.types.is_integer_dtype(dtype) else "float"
    if numeric:
        if np.unique(nums).size == 1:
            return Column(name, "constant", constant=obs[0])
        col = Column(name, kind)
        col.values, col.scores = quantile_map(nums)
        if kind == "float":
            col.decimals = _decimals(text) if fmt == "csv" else None
        return col
    keys = sorted({_category_key(v) for v in obs}, key=lambda v: (str(type(v)), v))
    if len(keys) == 1:
        return Column(name, "constant", constant=obs[0])
    return Column(name, "category", categories=keys)


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
        if m.numeric != h.numeric:
            return f"column '{m.name}' is {h.describe()} here but {m.describe()} in the model"
        if m.kind == "category":
            new = [c for c in h.categories if c not in set(m.categories)]
            if new:
                return f"column '{m.name}' has the value '{new[0]}', which the model never saw"
    return None


def adopt_constants(model_cols: list[Column], cols_here: list[Column]) -> list[Column]:
    """The model's columns, but a column constant in the model takes this table's constant
    (the model never saw it: it has no width), so that its missing cells get this table's value."""
    return [h if m.kind == "constant" and h.kind == "constant" and h.constant is not None else m
            for m, h in zip(model_cols, cols_here)]


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
        if col.numeric:
            v = np.full(len(raw), np.nan)
            text = [str(x).strip() if isinstance(x, str) else x for x in raw[obs]]
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
            out.append(np.round(v) if col.kind == "int" else v)
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
            out.append(np.round(v) if col.kind == "int" else v)
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
    """The table with its missing cells filled from ``values``; observed cells are left as read."""
    import pandas as pd

    frame = table.frame.copy()
    rows = np.arange(len(frame)) if rows is None else np.asarray(rows)
    for j, col in enumerate(cols):
        miss = ~table.observed[:, j]
        if not miss.any():
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
    return frame.iloc[rows]


def _number(v: float, col: Column, fmt: str):
    if col.kind == "int":
        return str(int(v)) if fmt == "csv" else int(v)
    if fmt != "csv":
        return float(v)
    if col.decimals is None:
        return repr(float(v))
    return f"{v:.{col.decimals}f}"


def write_table(frame, path, fmt: Optional[str] = None, style: Optional[CsvStyle] = None,
                option: str = "--out") -> None:
    """Write atomically (repaint_cli.files): a temporary file beside the target, renamed over it
    when complete. A CSV keeps ``style`` (the input's delimiter, byte-order mark and line ending)."""
    from ..files import atomic_path

    path = Path(path)
    fmt = fmt or table_format(path)
    with atomic_path(path, option) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            style = style or CsvStyle()
            frame.to_csv(tmp, index=False, sep=style.sep, lineterminator=style.newline,
                         encoding="utf-8-sig" if style.bom else "utf-8", compression=None)
