"""Helpers the tests of ``repaint impute`` share: tiny training settings, the command's invocation, a small table."""
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from repaint_cli.cli.app import app

runner = CliRunner()
TINY = ["--train-steps", 40, "--samples", 1, "--width", 32, "--blocks", 1, "--threads", 1]
TINY_USE = ["--samples", 1, "--threads", 1]  # with --model: the saved model fixes its size and training
TINY_REPAINT = ["--method", "repaint", "--t-T", 10, "--jump-length", 5, "--jump-n-sample", 1]


def invoke(*args):
    return runner.invoke(app, ["impute", *[str(a) for a in args]])


def linear_table(path: Path, n=60, seed=0, sep=",", extra=None, missing_every=5):
    """x and y = 2x, with y missing in every ``missing_every``-th row; ``extra`` adds a column (name, cell)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    head = ["x", "y"] + ([extra[0]] if extra else [])
    lines = [sep.join(head)]
    for i, v in enumerate(x):
        cells = [f"{v:.3f}", "" if i % missing_every == 0 else f"{2 * v:.3f}"] + ([extra[1](i)] if extra else [])
        lines.append(sep.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return x


def one_error_line(r):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.output, r.output
    assert lines and lines[-1].startswith("error: "), r.stderr
    return lines[-1]


def mixed_table(path: Path, rows: int = 60) -> Path:
    """a (integers), b = a/2 + noise (2 decimals), c (a category), d (ISO dates); a fifth of the rows miss a cell."""
    rng = np.random.default_rng(0)
    lines = ["a,b,c,d"]
    for i in range(rows):
        a = int(rng.integers(0, 20))
        cells = [str(a), f"{a * 0.5 + rng.normal():.2f}", "xyz"[a % 3], f"2024-01-{1 + i % 28:02d}"]
        if i % 5 == 1:
            cells[i % 4] = ""
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path
