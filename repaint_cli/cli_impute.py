"""``repaint impute TABLE``: fill missing cells with RePaint and a model trained on the table.

Wired into the main app with ``register(app)``. Every check (the table, the
output paths, the options) runs before training starts; outputs are written
atomically at the end, so a failed run leaves nothing behind. The filled table
goes to ``--out`` or, without it, to stdout; logs and progress go to stderr.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .schedule import PRESETS

P_IN, P_MODEL, P_SAMPLE, P_OUT = "Input", "Model", "Sampling", "Outputs"
FLAG = dict(metavar="")

IMPUTE_EXAMPLES = """[bold]Examples[/bold]

Fill every missing cell, five imputations averaged:
  [cyan]repaint impute survey.csv --out survey-filled.csv[/cyan]

Multiple imputation: ten completed tables for downstream statistics:
  [cyan]repaint impute survey.csv --out filled.csv --samples 10 --draws draws/[/cyan]

Prediction as imputation (the test rows' price is treated as missing):
  [cyan]repaint impute train.csv --target price --predict test.csv --out pred.csv[/cyan]
"""


def register(app: typer.Typer) -> None:
    err = Console(stderr=True, highlight=False)

    def die(message: str, code: int = 2):
        err.print("[red]error:[/red] ", end="", markup=True)
        err.print(message, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code)

    @app.command("impute", epilog=IMPUTE_EXAMPLES)
    def impute_cmd(
        table: Path = typer.Argument(..., metavar="TABLE", help="A CSV (or Parquet, with pyarrow) table with missing cells."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="PATH", show_default="stdout", help="The filled table (.csv or .parquet).", rich_help_panel=P_IN),
        overwrite: bool = typer.Option(False, "--overwrite", **FLAG, help="Replace an existing --out (and --draws files).", rich_help_panel=P_IN),
        na_values: List[str] = typer.Option([], "--na-values", metavar="TEXT", help="More cell texts that mean missing (besides empty, NA and NaN); repeatable.", rich_help_panel=P_IN),
        categorical: List[str] = typer.Option([], "--categorical", metavar="COLUMN", help="Treat this column as categorical even if its cells are numbers; repeatable.", rich_help_panel=P_IN),
        target: Optional[str] = typer.Option(None, "--target", metavar="COLUMN", help="With --predict: the column to predict.", rich_help_panel=P_IN),
        predict: Optional[Path] = typer.Option(None, "--predict", metavar="TABLE", help="Rows whose --target is predicted (treated as missing); the output holds these rows.", rich_help_panel=P_IN),
        model: Optional[Path] = typer.Option(None, "--model", metavar="PATH", help="Use a table model saved by --save-model instead of training one.", rich_help_panel=P_MODEL),
        save_model: Optional[Path] = typer.Option(None, "--save-model", metavar="PATH", help="Save the trained model: PATH.safetensors and PATH.yaml (its column schema).", rich_help_panel=P_MODEL),
        train_steps: int = typer.Option(3000, metavar="N", help="Training steps.", rich_help_panel=P_MODEL),
        rounds: int = typer.Option(1, metavar="N", help="EM rounds: re-train on the imputed table, then impute again (N-1 times).", rich_help_panel=P_MODEL),
        width: int = typer.Option(256, metavar="N", help="Denoiser width (an MLP with residual blocks).", rich_help_panel=P_MODEL),
        blocks: int = typer.Option(3, metavar="N", help="Denoiser residual blocks.", rich_help_panel=P_MODEL),
        samples: int = typer.Option(5, "--samples", "-k", metavar="K", help="Imputations per row, combined by --combine (numbers) and the mode (categories).", rich_help_panel=P_SAMPLE),
        combine: str = typer.Option("mean", metavar="mean|median", help="How K imputations of a number become one.", rich_help_panel=P_SAMPLE),
        preset: Optional[str] = typer.Option(None, metavar="NAME", show_default="quick", help=f"Sampling preset: {', '.join(PRESETS)}.", rich_help_panel=P_SAMPLE),
        t_T: Optional[int] = typer.Option(None, "--t-T", metavar="N", help="Respaced steps (t_T), overriding the preset.", rich_help_panel=P_SAMPLE),
        jump_length: Optional[int] = typer.Option(None, metavar="N", help="Steps per jump back.", rich_help_panel=P_SAMPLE),
        jump_n_sample: Optional[int] = typer.Option(None, metavar="N", help="Times each jump is resampled (1 = no resampling).", rich_help_panel=P_SAMPLE),
        method: str = typer.Option("repaint", metavar="M", help="The reverse step: repaint, ddnm or ddim.", rich_help_panel=P_SAMPLE),
        guidance: float = typer.Option(10.0, metavar="S", help="Reconstruction guidance scale: pulls the model's prediction of the observed cells toward them (0: plain RePaint).", rich_help_panel=P_SAMPLE),
        seed: int = typer.Option(0, metavar="N", help="Seed of training and sampling: the same seed gives the same table.", rich_help_panel=P_SAMPLE),
        draws: Optional[Path] = typer.Option(None, "--draws", metavar="DIR", help="Also write all K completed tables here (multiple imputation).", rich_help_panel=P_OUT),
        json_out: bool = typer.Option(False, "--json", **FLAG, help="Print a JSON summary line on stdout (needs --out).", rich_help_panel=P_OUT),
        quiet: bool = typer.Option(False, "--quiet", "-q", **FLAG, help="No progress bars or info lines.", rich_help_panel=P_OUT),
        threads: Optional[int] = typer.Option(None, metavar="N", show_default="one per core", help="CPU threads.", rich_help_panel=P_OUT),
    ):
        """Fill the missing cells of TABLE with RePaint, using a small diffusion model trained on TABLE itself.

        Observed cells are written back exactly as read; numeric columns stay numeric (integers stay integers) and categorical columns get one of their observed values."""
        if json_out and out is None:
            die("--json prints a summary on stdout, where the table goes without --out; give --out PATH")
        if (target is None) != (predict is None):
            die("--target and --predict go together: repaint impute train.csv --target COLUMN --predict test.csv")
        inputs = [table] + ([predict] if predict else [])
        outputs = ([out] if out else []) + ([draws] if draws else [])
        for o in outputs:
            for i in inputs:
                if i.exists() and o.exists() and os.path.samefile(i, o):
                    die(f"{o}: the output would overwrite the input {i}; choose another --out (inputs are never overwritten)")
        if out is not None:
            if out.is_dir():
                die(f"{out}: a folder; --out takes a file name (.csv or .parquet)")
            if out.exists() and not overwrite:
                die(f"{out}: exists; --overwrite replaces it")
            if not out.parent.is_dir():
                die(f"{out.parent}: no such folder for --out; create it first")
        if draws is not None and draws.exists() and not draws.is_dir():
            die(f"{draws}: not a folder; --draws takes a folder")

        from .impute import ImputeOptions, TableError, impute_table, predict_table
        from .table_model import TableModelConfig, TrainSettings
        from .tables import read_table, table_format, write_table

        opts = ImputeOptions(samples=samples, combine=combine, preset=preset, t_T=t_T, jump_length=jump_length,
                             jump_n_sample=jump_n_sample, method=method, seed=seed, rounds=rounds, guidance=guidance,
                             train=TrainSettings(steps=train_steps, seed=seed),
                             model=TableModelConfig(width=width, blocks=blocks), threads=threads,
                             categorical=tuple(categorical))
        name = (predict or table)
        fmt = table_format(out) if out else "csv"
        if fmt == "parquet":  # found out now, not after training
            import importlib.util

            if importlib.util.find_spec("pyarrow") is None:
                die(f"{out}: writing Parquet needs pyarrow; pip install pyarrow, or give --out a .csv name")
        draw_paths = []
        if draws is not None:
            suffix = ".parquet" if fmt == "parquet" else ".csv"
            draw_paths = [draws / f"{name.stem}_draw{k + 1:0{len(str(samples))}d}{suffix}" for k in range(samples)]
            clash = [p for p in draw_paths if p.exists()]
            if clash and not overwrite:
                die(f"{clash[0]}: exists; --overwrite replaces the draws")
        try:
            from .impute import check_options
            check_options(opts)
            if predict is not None:
                train_table = read_table(table, na_values)
                test_table = read_table(predict, na_values, allow_missing_columns=True)
            else:
                train_table = read_table(table, na_values, allow_missing_columns=model is not None)
        except TableError as e:
            die(str(e))

        progress = _RichProgress(err, quiet)
        try:
            with progress:
                if predict is not None:
                    result = predict_table(train_table, test_table, target, opts, progress, model_path=model,
                                           save_model=save_model, keep_draws=bool(draws))
                else:
                    if train_table.n_missing == 0:
                        progress.log(f"{table}: no missing cell; the table is written unchanged", "warning")
                    result = impute_table(train_table, opts, progress, model_path=model, save_model=save_model,
                                          keep_draws=bool(draws))
        except TableError as e:
            die(str(e))
        if draws is not None:
            draws.mkdir(parents=True, exist_ok=True)
            for path, frame in zip(draw_paths, result.draws):
                write_table(frame, path, fmt)
        if out is not None:
            write_table(result.frame, out, fmt)
            summary = {"input": str(table), "output": str(out), **({"predict": str(predict)} if predict else {}),
                       **({"draws": [str(p) for p in draw_paths]} if draws else {}), **result.stats}
            if json_out:
                print(json.dumps(summary), flush=True)
            else:
                print(out, flush=True)
        else:
            result.frame.to_csv(sys.stdout, index=False, lineterminator="\n")
        s = result.stats
        if not quiet:
            trained = f"trained {s['train_s']:.1f} s, " if "train_s" in s else ""
            err.print(f"filled {s['missing']} cells in {s['rows']} rows x {s['columns']} columns in {s['seconds']:.1f} s "
                      f"({trained}imputed {s.get('impute_s', 0):.1f} s; {s['model_calls_per_row']} model calls per row)")


class _RichProgress:
    """impute.Progress drawn with Rich on stderr: one bar per phase (training, imputing)."""

    def __init__(self, console: Console, quiet: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console, self.quiet = console, quiet
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=console, disable=quiet)
        self.task = None

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def log(self, msg: str, level: str = "info") -> None:
        if level == "info" and self.quiet:
            return
        prefix = {"error": "[red]error:[/red] ", "warning": "[yellow]warning:[/yellow] "}.get(level, "")
        self.bar.console.print(prefix, end="", markup=True)
        self.bar.console.print(msg, markup=False, highlight=False, soft_wrap=True)

    def phase(self, name: str, total: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=self.bar.tasks[-1].total)
        self.task = self.bar.add_task(name, total=total, info="")

    def advance(self, n: int = 1, **fields) -> None:
        if self.task is not None:
            info = f"loss {fields['loss']}" if "loss" in fields else ""
            self.bar.update(self.task, advance=n, **({"info": info} if info else {}))
