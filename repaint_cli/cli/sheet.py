"""``repaint sheet OUTDIR``: a contact sheet of a run's results.

Wired into the main app with ``register(app)``. The written path goes to stdout;
errors go to stderr (exit 2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .output import die
from .params import PlainCommand


def register(app: typer.Typer) -> None:
    """Add the ``sheet`` command to ``app``."""
    @app.command("sheet", cls=PlainCommand)
    def sheet_cmd(
        outdir: Path = typer.Argument(..., metavar="OUTDIR",
                                      help="An output folder of 'repaint inpaint' (its <stem>.png results)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default="OUTDIR/sheet.png",
                                           help="Sheet file to write."),
        cols: Optional[int] = typer.Option(None, metavar="N", show_default="about square", help="Columns."),
        cell: int = typer.Option(128, metavar="PX", help="Thumbnail cell size in pixels."),
    ):
        """Write one contact sheet PNG of the results in OUTDIR, each labelled with its file stem."""
        from ..files import InputError
        from ..images.sheet import sheet_for_dir

        try:
            path = sheet_for_dir(outdir, out, cols=cols, cell=cell)
        except (ValueError, InputError) as e:
            die(str(e))
        print(path, flush=True)
