"""``repaint sheet OUTDIR``: a contact sheet of a run's results.

Wired into the main app with ``register(app)``. The written path goes to stdout;
errors go to stderr (exit 2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console



def register(app: typer.Typer) -> None:
    """Add the ``sheet`` command to ``app``."""
    err = Console(stderr=True, highlight=False)

    @app.command("sheet")
    def sheet_cmd(
        outdir: Path = typer.Argument(..., metavar="OUTDIR", help="An output folder of 'repaint inpaint' (its <stem>.png results)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default="OUTDIR/sheet.png", help="Sheet file to write."),
        cols: Optional[int] = typer.Option(None, metavar="N", show_default="about square", help="Columns."),
        cell: int = typer.Option(128, metavar="PX", help="Thumbnail cell size in pixels."),
    ):
        """Write one contact sheet PNG of the results in OUTDIR, each labelled with its file stem."""
        from ..images.frames import sheet_for_dir
        from ..images.image_files import InputError

        try:
            path = sheet_for_dir(outdir, out, cols=cols, cell=cell)
        except (ValueError, InputError) as e:
            err.print("[red]error:[/red] ", end="", markup=True)
            err.print(str(e), markup=False, soft_wrap=True)
            raise typer.Exit(2)
        print(path, flush=True)
