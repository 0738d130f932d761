"""The encoder: a table's cells as an array of floats (rows x encoded width) and a keep mask of the
same shape (True = observed), the image-with-holes that RePaint fills, and back.

- numeric columns (and dates): quantile-to-normal scores (each observed value's mid-rank,
  through the inverse normal CDF), inverted by interpolation, clipped to the observed range;
  integer columns (and dates) are rounded back;
- categorical columns: one-hot in {-1, +1} up to ``ONEHOT_MAX`` categories, analog bits
  (Chen et al. 2023) beyond; decoded to the nearest valid code;
- constant and identifier columns take no width.

:class:`TableEncoder` is the fitted form (``fit`` learns the schema, ``transform`` encodes,
``inverse_transform`` decodes); the functions below it are the same steps, one at a time.

No torch here; numpy and pandas only.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .schema import ONEHOT_MAX, Column, category_key, date_numbers, infer_columns
from .table_files import Table


class TableEncoder:
    """The schema fitted on a table's observed cells, and the encoding it gives: ``fit`` (or ``from_columns``, a
    saved model's), then ``transform`` a table with that schema to (values, keep) and ``inverse_transform``
    encoded rows back to each column's numbers (floats, or category indices)."""

    def __init__(self, columns: Optional[list[Column]] = None):
        self.columns = columns

    def fit(self, table: Table, categorical=(), warn: Optional[Callable[[str], None]] = None) -> "TableEncoder":
        self.columns = infer_columns(table, categorical, warn=warn)
        return self

    @property
    def width(self) -> int:
        return sum(col.width for col in self.columns)

    def transform(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """(rows, width) float32 values and their keep mask (True: observed)."""
        return encode(cell_values(table, self.columns), self.columns)

    def inverse_transform(self, x: np.ndarray) -> list[np.ndarray]:
        return decode(x, self.columns)

    def clip(self) -> np.ndarray:
        """The largest magnitude per encoded dimension (a predicted x0 is clipped to it)."""
        return clip_range(self.columns)


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
            v[obs] = date_numbers(raw[obs], col.unit)
            out.append(v)
        elif col.numeric:
            v = np.full(len(raw), np.nan)
            text = [str(x).strip().replace(col.decimal, ".") if isinstance(x, str) else x for x in raw[obs]]
            v[obs] = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=float)
            out.append(v)
        elif col.kind == "category":
            index = {c: i for i, c in enumerate(col.categories)}
            v = np.full(len(raw), -1, dtype=np.int64)
            v[obs] = [index.get(category_key(x), -1) for x in raw[obs]]
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
