"""A table's schema for ``repaint impute``: each column's kind and what its encoding needs.

:func:`infer_columns` fits a :class:`Column` per column on its observed cells: float, int and date
columns get a quantile map (value -> normal score of its mid-rank); categories their observed
values, sorted; a column with one value is a constant, a text column whose every cell differs an
identifier (neither takes encoded width). :func:`schema_difference` says why a saved model cannot
fill a table, :func:`adopt_constants` writes a model's columns as this table writes them.

No torch here; numpy and pandas only.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .messages import TableError, said
from .table_files import INT, Table, is_number

ONEHOT_MAX = 32  # more categories than this: analog bits
QUANTILES_MAX = 2000  # numeric columns keep at most this many points of their quantile map


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

def infer_columns(table: Table, categorical=(), warn: Optional[Callable[[str], None]] = None) -> list[Column]:
    """Each column's type and encoding, fitted on its observed cells; ``warn`` hears of a column read
    as a category that holds numbers but for a few kinds of cell (a missing-value spelling?) or
    numbers written with a decimal comma."""
    categorical = set(categorical)
    unknown = categorical - set(table.columns)
    if unknown:
        raise TableError(said(f"{table.path}: `categorical` names no column '{sorted(unknown)[0]}'; "
                              f"columns: {', '.join(table.columns)}"))
    cols = []
    # a ',' file cannot hold decimal commas unquoted, so there 1,5 is text, unless the file has one column:
    # with no delimiter in play, a quoted "1,5" can only be a number written with a decimal comma
    comma = table.fmt == "csv" and (table.style.sep != "," or len(table.columns) == 1)
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
        warn(said(f"column '{name}' holds numbers but for {n_bad} cell{'s' if n_bad > 1 else ''} "
                  f"({', '.join(repr(v) for v in odd)}), so it is read as a category; if that means missing, "
                  "give " + " ".join(f"`na_values`={v!r}" for v in odd)))
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
    keys = sorted({category_key(v) for v in obs}, key=lambda v: (str(type(v)), v))
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
    if not np.isfinite(nums).all() and comma and all(_COMMA_NUMBER.match(t) or INT.match(t) for t in text):
        col.decimal = ","  # 1,5 in a ';'-separated file
        text = [t.replace(",", ".") for t in text]
        nums = np.array([float(t) for t in text])
    if np.isfinite(nums).all():
        if all(INT.match(t) for t in text):
            col.kind = "int"
        else:
            col.decimals = decimals_of(text)
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


def date_numbers(cells, unit: str) -> np.ndarray:
    """ISO date texts (or a Parquet's timestamps) as counts of ``unit`` since 1970 (NaN where one is not a date)."""
    out = np.full(len(cells), np.nan)
    for i, c in enumerate(cells):
        try:
            out[i] = np.datetime64(str(c).strip().replace(" ", "T"), unit).astype(np.int64)
        except ValueError:
            pass
    return out


def _dates(text: list[str], col: Column) -> Optional[np.ndarray]:
    """ISO dates (YYYY-MM-DD, and with a time to the minute or second, after 'T' or a space) as counts of
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
    except ValueError:  # a day the month does not have (February 30)
        return None
    if np.isnat(stamps).any():
        return None
    col.kind, col.unit, col.date_sep = "date", unit, sep or "T"
    return stamps.astype(np.int64).astype(np.float64)


def category_key(v):
    """A category as compared and stored: CSV cells by their text, Parquet cells by value."""
    return v.strip() if isinstance(v, str) else _plain(v)


def decimals_of(text: list[str]) -> Optional[int]:
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
            if m.numeric and not is_number(h.constant):
                return f"column '{m.name}' holds {h.constant!r} here but is {m.describe()} in the model"
            if m.kind == "category" and category_key(h.constant) not in set(m.categories):
                return f"column '{m.name}' has the value '{category_key(h.constant)}', which the model never saw"
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
