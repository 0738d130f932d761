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

from ..core.schedule import PRESETS
from .output import TableProgress, die, err

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
    @app.command("impute", epilog=IMPUTE_EXAMPLES)
    def impute_cmd(
        table: Path = typer.Argument(..., metavar="TABLE", help="A CSV (or Parquet, with pyarrow) table with missing cells."),
        na_values: List[str] = typer.Option([], "--na-values", metavar="TEXT", help="More cell texts that mean missing (besides empty, NA, NaN, null, N/A, None and pandas' other defaults); repeatable.", rich_help_panel=P_IN),
        sep: Optional[str] = typer.Option(None, "--sep", metavar="C", show_default="sniffed; tab for .tsv", help="The CSV delimiter: ',', ';', tab, '|' or another character.", rich_help_panel=P_IN),
        categorical: List[str] = typer.Option([], "--categorical", metavar="COLUMN", help="Treat this column as categorical even if its cells are numbers; repeatable.", rich_help_panel=P_IN),
        target: Optional[str] = typer.Option(None, "--target", metavar="COLUMN", help="With --predict: the column to predict.", rich_help_panel=P_IN),
        predict: Optional[Path] = typer.Option(None, "--predict", metavar="TABLE", help="Rows whose --target is predicted (treated as missing); the output holds these rows.", rich_help_panel=P_IN),
        model: Optional[Path] = typer.Option(None, "--model", metavar="PATH", help="Use a table model saved by --save-model instead of training one.", rich_help_panel=P_MODEL),
        save_model: Optional[Path] = typer.Option(None, "--save-model", metavar="PATH", help="Save the trained model: PATH.safetensors and PATH.yaml (its column schema).", rich_help_panel=P_MODEL),
        train_steps: int = typer.Option(3000, metavar="N", help="Training steps.", rich_help_panel=P_MODEL),
        rounds: int = typer.Option(1, metavar="N", help="EM rounds: re-train on the imputed table, then impute again (N-1 times).", rich_help_panel=P_MODEL),
        width: int = typer.Option(256, metavar="N", help="Denoiser width (an MLP with residual blocks).", rich_help_panel=P_MODEL),
        blocks: int = typer.Option(3, metavar="N", help="Denoiser residual blocks.", rich_help_panel=P_MODEL),
        samples: int = typer.Option(5, "--samples", "-n", metavar="K", help="Imputations per row, combined by --combine (numbers) and the mode (categories). (-k, its old short name, still works.)", rich_help_panel=P_SAMPLE),
        samples_k: Optional[int] = typer.Option(None, "-k", hidden=True),  # the old short name of --samples
        combine: str = typer.Option("mean", metavar="mean|median", help="How K imputations of a number become one.", rich_help_panel=P_SAMPLE),
        preset: Optional[str] = typer.Option(None, metavar="NAME", show_default="quick", help=f"Sampling preset: {', '.join(PRESETS)}.", rich_help_panel=P_SAMPLE),
        t_T: Optional[int] = typer.Option(None, "--t-T", metavar="N", help="Respaced steps (t_T), overriding the preset.", rich_help_panel=P_SAMPLE),
        jump_length: Optional[int] = typer.Option(None, metavar="N", help="Steps per jump back.", rich_help_panel=P_SAMPLE),
        jump_n_sample: Optional[int] = typer.Option(None, metavar="N", help="Times each jump is resampled (1 = no resampling).", rich_help_panel=P_SAMPLE),
        method: str = typer.Option("repaint", metavar="M", help="The reverse step: repaint, ddnm or ddim (ddim takes no guidance: with --guidance 0).", rich_help_panel=P_SAMPLE),
        eta: float = typer.Option(0.0, metavar="F", help="--method ddim: noise scale, 0 (deterministic between resamplings) to 1; as in repaint inpaint.", rich_help_panel=P_SAMPLE),
        guidance: float = typer.Option(10.0, metavar="S", help="Reconstruction guidance scale: pulls the model's prediction of the observed cells toward them (0: plain RePaint).", rich_help_panel=P_SAMPLE),
        seed: int = typer.Option(0, metavar="N", help="Seed of training and sampling: the same seed gives the same table, at any --threads.", rich_help_panel=P_SAMPLE),
        out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="PATH", show_default="stdout", help="The filled table (.csv or .parquet); a CSV keeps the input's delimiter, byte-order mark and line endings.", rich_help_panel=P_OUT),
        overwrite: bool = typer.Option(False, "--overwrite", **FLAG, help="Replace an existing --out (and --draws, --save-model files).", rich_help_panel=P_OUT),
        draws: Optional[Path] = typer.Option(None, "--draws", metavar="DIR", help="Also write all K completed tables here (multiple imputation).", rich_help_panel=P_OUT),
        json_out: bool = typer.Option(False, "--json", **FLAG, help="Print a JSON summary line on stdout (needs --out).", rich_help_panel=P_OUT),
        quiet: bool = typer.Option(False, "--quiet", "-q", **FLAG, help="No progress bars or info lines.", rich_help_panel=P_OUT),
        threads: Optional[int] = typer.Option(None, metavar="N", show_default="the free cores", help="CPU threads for imputing (training runs on one, so that the result does not depend on it). Default: the free cores (usable cores less the 1-minute load average); on a shared machine, set 1 or the cores you own.", rich_help_panel=P_OUT),
    ):
        """Fill the missing cells of TABLE with RePaint, using a small diffusion model trained on TABLE itself.

        Observed cells are written back exactly as read; numeric columns stay numeric (integers stay integers) and categorical columns get one of their observed values."""
        if samples_k is not None:
            samples = samples_k
        sep = {"tab": "\t", "\\t": "\t"}.get(sep, sep) if sep is not None else None
        if sep is not None and len(sep) != 1:
            die(f"--sep {sep!r}: give one character (',', ';', '|') or tab")
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
            _die_unless_writable(out.parent, "--out")
        if draws is not None and draws.exists() and not draws.is_dir():
            die(f"{draws}: not a folder; --draws takes a folder")
        if draws is not None:  # made at the end: the nearest folder that exists must take it
            _die_unless_writable(next(p for p in [draws, *draws.parents] if p.exists()), "--draws")
        if save_model is not None:
            _check_save_model(save_model, overwrite)

        from ..tables.impute import ImputeOptions, TableError, impute_table, predict_table
        from ..tables.denoiser import TableModelConfig, TrainSettings
        from ..tables.codec import read_table, table_format, write_table

        opts = ImputeOptions(samples=samples, combine=combine, preset=preset, t_T=t_T, jump_length=jump_length,
                             jump_n_sample=jump_n_sample, method=method, eta=eta, seed=seed, rounds=rounds, guidance=guidance,
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
            from ..tables.impute import check_options
            check_options(opts)
            if predict is not None:
                train_table = read_table(table, na_values, sep=sep)
                test_table = read_table(predict, na_values, allow_missing_columns=True, sep=sep)
            else:
                train_table = read_table(table, na_values, allow_missing_columns=model is not None, sep=sep)
        except TableError as e:
            die(str(e))

        from ..tables.impute import Interrupted

        style = (test_table if predict is not None else train_table).style
        progress = TableProgress(err, quiet)
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
        except Interrupted as stop:
            _keep_interrupted_model(stop, save_model or Path(f"{out or name}.model"), err)
        except KeyboardInterrupt:
            err.print("interrupted; nothing written")
            raise typer.Exit(130)
        if draws is not None:
            draws.mkdir(parents=True, exist_ok=True)
            for path, frame in zip(draw_paths, result.draws):
                write_table(frame, path, fmt, style, option="--draws")
        if out is not None:
            write_table(result.frame, out, fmt, style)
            summary = {"input": str(table), "output": str(out), **({"predict": str(predict)} if predict else {}),
                       **({"draws": [str(p) for p in draw_paths]} if draws else {}), **result.stats}
            if json_out:
                print(json.dumps(summary), flush=True)
            else:
                print(out, flush=True)
        else:
            if style.bom:
                sys.stdout.write("\ufeff")
            result.frame.to_csv(sys.stdout, index=False, sep=style.sep, lineterminator=style.newline)
        s = result.stats
        if not quiet:
            trained = f"trained {s['train_s']:.1f} s, " if "train_s" in s else ""
            err.print(f"filled {s['missing']} cells in {s['rows']} rows x {s['columns']} columns in {s['seconds']:.1f} s "
                      f"({trained}imputed {s.get('impute_s', 0):.1f} s; {s['model_calls_per_row']} model calls per row)")


def _die_unless_writable(folder: Path, what: str) -> None:
    """One line and exit 2 now, before training, when files cannot be created in ``folder``."""
    import tempfile

    if not folder.is_dir():
        die(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'} for {what}; "
            "give a path in an existing folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        die(f"{folder}: not writable, for {what}; choose another folder")
    try:  # root passes os.access everywhere: try it (a read-only mount, /proc)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".repaint-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        die(f"{folder}: cannot write there, for {what} ({e.strerror}); choose another folder")


def _check_save_model(save_model: Path, overwrite: bool) -> None:
    from ..tables.denoiser import model_paths

    for path in model_paths(save_model):
        if path.is_dir():
            die(f"{path}: a folder; --save-model takes a file name (PATH gives PATH.safetensors and PATH.yaml)")
        if path.exists() and not overwrite:
            die(f"{path}: exists; --overwrite replaces it, or give --save-model another name")
    _die_unless_writable(model_paths(save_model)[0].parent, "--save-model")


def _keep_interrupted_model(stop, path: Path, err: Console) -> None:
    """Ctrl-C while imputing: save the trained model so that a rerun with --model skips training; exit 130."""
    from ..files import InputError
    from ..tables.denoiser import save_table_model

    try:
        _, card = save_table_model(path, stop.model, stop.columns, stop.extra)
    except (OSError, ValueError, InputError) as e:
        err.print(f"interrupted while imputing; the trained model could not be kept ({e}); nothing written",
                  markup=False, highlight=False, soft_wrap=True)
    else:
        err.print(f"interrupted while imputing; nothing written; the trained model is kept in {card}: "
                  f"rerun with --model {card} to skip training", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(130)
