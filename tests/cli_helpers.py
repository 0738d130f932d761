"""Helpers shared by the CLI tests of several wings: invoke the app, check a one-line refusal (exit 2), and
the small images and masks they feed it."""
import hashlib
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from conftest import write_png
from repaint_cli.cli.app import app

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def one_line_exit_2(r, *fragments):
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)
    assert "Traceback" not in r.output


def md5s(folder):
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def photo(path, h=16, w=16, seed=0):
    """A random h x w RGB PNG at path (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3)))
    return path


def hole_mask(path, h=16, w=16, box=(4, 10, 4, 10), convention="keep"):
    keep = np.full((h, w), 255, np.uint8)
    y0, y1, x0, x1 = box
    keep[y0:y1, x0:x1] = 0
    write_png(path, keep if convention == "keep" else 255 - keep)
    return keep > 127
