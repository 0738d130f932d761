"""``repaint impute TABLE``: fill missing cells with a diffusion model trained on the table.

Wired into the main app with ``register(app)``. Every check (the table, the
output paths, the options) runs before training starts; outputs are written
atomically at the end, so a failed run leaves nothing behind. The filled table
goes to ``--out`` or, without it, to stdout; logs and progress go to stderr.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console

from ..core.schedule import PRESETS
from . import params as shared
from .output import TableProgress, die, err
from .params import INPUTS, MODEL, OUTPUTS, SAMPLING, PlainCommand


IMPUTE_EXAMPLES = """[bold]Examples[/bold]

Fill every missing cell, five imputations averaged:
  [cyan]repaint impute survey.csv --out survey-filled.csv[/cyan]

Multiple imputation: ten completed tables for downstream statistics:
  [cyan]repaint impute survey.csv --out filled.csv --samples 10 --draws draws/[/cyan]

Prediction as imputation (the test rows' price is treated as missing):
  [cyan]repaint impute train.csv --target price --predict test.csv --out pred.csv[/cyan]
"""


IMPUTE_HELP = ("Fill the missing cells of TABLE with a small diffusion model trained on TABLE itself.\n\n"
               "Observed cells are written back exactly as read; numeric columns stay numeric (integers stay "
               "integers) and categorical columns get one of their observed values.")


def register(app: typer.Typer) -> None:
    """Add the ``impute`` command to ``app``."""
    app.command("impute", cls=PlainCommand, help=IMPUTE_HELP, epilog=IMPUTE_EXAMPLES)(impute_cmd)


# ----------------------------------------------------------------------------- the options of impute alone

Table = Annotated[Path, typer.Argument(
    metavar="TABLE", help="A CSV (or Parquet, with pyarrow) table with missing cells.")]
NaValues = Annotated[List[str], typer.Option(
    "--na-values", metavar="TEXT", help="More cell texts that mean missing (besides empty, NA, NaN, null, N/A, None "
    "and pandas' other defaults); repeatable.", rich_help_panel=INPUTS)]
Sep = Annotated[Optional[str], typer.Option(
    "--sep", metavar="C", show_default="sniffed; tab for .tsv", help="The CSV delimiter: ',', ';', tab, '|' or "
    "another character.", rich_help_panel=INPUTS)]
Categorical = Annotated[List[str], typer.Option(
    "--categorical", metavar="COLUMN", help="Treat this column as categorical even if its cells are numbers; "
    "repeatable.", rich_help_panel=INPUTS)]
Target = Annotated[Optional[str], typer.Option(
    "--target", metavar="COLUMN", help="With --predict: the column to predict.", rich_help_panel=INPUTS)]
Predict = Annotated[Optional[Path], typer.Option(
    "--predict", metavar="TABLE", help="Rows whose --target is predicted (treated as missing); the output holds "
    "these rows.", rich_help_panel=INPUTS)]
Model = Annotated[Optional[Path], typer.Option(
    "--model", metavar="PATH", help="Use a table model saved by --save-model instead of training one.",
    rich_help_panel=MODEL)]
SaveModel = Annotated[Optional[Path], typer.Option(
    "--save-model", metavar="PATH", help="Save the trained model: PATH.safetensors and PATH.yaml (its column "
    "schema).", rich_help_panel=MODEL)]
TrainSteps = Annotated[Optional[int], typer.Option(
    "--train-steps", metavar="N", show_default="conditional: 1,500 to 3,000 by the rows; 3,000 RePaint methods",
    help="Training steps (of each of the --members).", rich_help_panel=MODEL)]
Members = Annotated[Optional[int], typer.Option(
    "--members", metavar="K", show_default="2 conditional, 1 RePaint methods", help="--method conditional: models "
    "trained apart (side by side on the --threads' cores), each imputing every row; all their imputations are "
    "averaged.", rich_help_panel=MODEL)]
GaussianBase = Annotated[Optional[bool], typer.Option(
    "--gaussian-base/--no-gaussian-base", show_default="on, up to 96 encoded values", help="--method conditional: "
    "the model also reads what a Gaussian fitted to the table predicts for each cell (its linear conditional); off, "
    "it learns every relation itself.", rich_help_panel=MODEL)]
FitSample = Annotated[Optional[int], typer.Option(
    "--fit-sample", metavar="N", show_default="every row", help="Train on N rows drawn by --seed (for a table too big "
    "to train on whole); every row is filled, and the --save-model card says how many were trained on.",
    rich_help_panel=MODEL)]
Rounds = Annotated[Optional[int], typer.Option(
    "--rounds", metavar="N", show_default="1", help="RePaint methods: EM rounds, re-training on the imputed table, "
    "then imputing again (N-1 times).", rich_help_panel=MODEL)]
Width = Annotated[Optional[int], typer.Option(
    "--width", metavar="N", show_default="128 conditional, 256 RePaint methods", help="Denoiser width (an MLP with "
    "residual blocks).", rich_help_panel=MODEL)]
Blocks = Annotated[Optional[int], typer.Option(
    "--blocks", metavar="N", show_default="3", help="Denoiser residual blocks.", rich_help_panel=MODEL)]
Samples = Annotated[int, typer.Option(
    "--samples", "-n", metavar="K", help="Imputations per row, combined by --combine (numbers) and the mode "
    "(categories).", rich_help_panel=SAMPLING)]
SamplesK = Annotated[Optional[int], typer.Option("-k", hidden=True)]  # the old short name of --samples
Combine = Annotated[str, typer.Option(
    "--combine", metavar="mean|median", help="How K imputations of a number become one.", rich_help_panel=SAMPLING)]
Preset = Annotated[Optional[str], shared.preset(f"RePaint methods: sampling preset, {', '.join(PRESETS)}.",
                                                 "50/5/5")]
Method = Annotated[Optional[str], shared.method(
    "conditional: a model trained to fill hidden cells from the others, one call per cell and sample (measured "
    "best, and fastest). repaint, ddnm or ddim: an unconditional model conditioned while sampling, as RePaint does "
    "for images, with that reverse step.", "conditional; a --model's own kind")]
Eta = Annotated[float, shared.eta(shared.ETA_HELP + "; as in repaint inpaint.")]
Guidance = Annotated[Optional[float], shared.guidance(
    "RePaint methods: reconstruction guidance scale, pulling the model's prediction of the observed cells toward "
    "them (0: plain RePaint).", "10")]
Seed = Annotated[int, shared.seed(
    "Seed of training and sampling: the same seed gives the same table, at any --threads.")]
Out = Annotated[Optional[Path], shared.out(
    "PATH", "The filled table (.csv or .parquet); a CSV keeps the input's delimiter, byte-order mark and line "
    "endings.", "stdout")]
Overwrite = Annotated[bool, shared.overwrite("Replace an existing --out (and --draws, --save-model files).")]
Draws = Annotated[Optional[Path], typer.Option(
    "--draws", metavar="DIR", help="Also write all K completed tables here (multiple imputation).",
    rich_help_panel=OUTPUTS)]
JsonOut = Annotated[bool, shared.json_flag("Print a JSON summary line on stdout (needs --out).")]
Quiet = Annotated[bool, shared.quiet("No progress bars or info lines.")]
Threads = Annotated[Optional[int], shared.threads(
    "CPU threads for imputing (training runs on one, so that the result does not depend on it). Default: the free "
    "cores (usable cores less those busy now, from /proc/stat); on a shared machine, set 1 or the cores you own.",
    OUTPUTS)]


def impute_cmd(
    ctx: typer.Context, table: Table, na_values: NaValues = [], sep: Sep = None, categorical: Categorical = [],
    target: Target = None, predict: Predict = None,
    model: Model = None, save_model: SaveModel = None, train_steps: TrainSteps = None, members: Members = None,
    gaussian_base: GaussianBase = None, fit_sample: FitSample = None, rounds: Rounds = None, width: Width = None,
    blocks: Blocks = None,
    samples: Samples = 5, samples_k: SamplesK = None, combine: Combine = "mean", preset: Preset = None,
    t_T: shared.TT = None, jump_length: shared.JumpLength = None, jump_n_sample: shared.JumpNSample = None,
    method: Method = None, eta: Eta = 0.0, guidance: Guidance = None, seed: Seed = 0,
    out: Out = None, overwrite: Overwrite = False, draws: Draws = None, json_out: JsonOut = False,
    quiet: Quiet = False, threads: Threads = None,
):
    """``repaint impute`` (its help: IMPUTE_HELP)."""
    _check_impute_values(ctx.params)  # before anything heavy is imported, and before training
    args = ImputeArgs(
        table=table, na_values=na_values, sep={"tab": "\t", "\\t": "\t"}.get(sep, sep) if sep is not None else None,
        categorical=categorical, target=target, predict=predict, model=model, save_model=save_model,
        train_steps=train_steps, members=members, gaussian_base=gaussian_base, fit_sample=fit_sample, rounds=rounds,
        width=width,
        blocks=blocks, samples=samples if samples_k is None else samples_k, combine=combine, preset=preset, t_T=t_T,
        jump_length=jump_length, jump_n_sample=jump_n_sample, method=method, eta=eta, guidance=guidance, seed=seed,
        out=out, overwrite=overwrite, draws=draws, json_out=json_out, quiet=quiet, threads=threads)
    _check_impute_outputs(args)
    raise typer.Exit(_impute_run(args))


@dataclass(frozen=True)
class ImputeArgs:
    """The command's options as given (``-k`` taken as ``--samples``, ``--sep tab`` as a tab character), and the
    files they name: the output's format and the draws this run writes and finds."""

    table: Path
    na_values: List[str]
    sep: Optional[str]
    categorical: List[str]
    target: Optional[str]
    predict: Optional[Path]
    model: Optional[Path]
    save_model: Optional[Path]
    train_steps: Optional[int]
    members: Optional[int]
    gaussian_base: Optional[bool]
    fit_sample: Optional[int]
    rounds: Optional[int]
    width: Optional[int]
    blocks: Optional[int]
    samples: int
    combine: str
    preset: Optional[str]
    t_T: Optional[int]
    jump_length: Optional[int]
    jump_n_sample: Optional[int]
    method: Optional[str]
    eta: float
    guidance: Optional[float]
    seed: int
    out: Optional[Path]
    overwrite: bool
    draws: Optional[Path]
    json_out: bool
    quiet: bool
    threads: Optional[int]

    @cached_property
    def fmt(self) -> str:
        """The output's format, csv or parquet (by --out's name; csv on stdout)."""
        from ..tables.table_files import table_format

        return table_format(self.out) if self.out else "csv"

    @cached_property
    def draw_paths(self) -> list[Path]:
        """The K completed tables this run writes under --draws (none without it)."""
        if self.draws is None:
            return []
        suffix = ".parquet" if self.fmt == "parquet" else ".csv"
        stem = (self.predict or self.table).stem
        return [self.draws / f"{stem}_draw{k + 1:0{len(str(self.samples))}d}{suffix}" for k in range(self.samples)]

    @cached_property
    def old_draws(self) -> list[Path]:
        """Draws of this table already in --draws, found before this run writes any."""
        return [] if self.draws is None else _earlier_draws(self.draws, (self.predict or self.table).stem)


def _check_impute_values(given: dict) -> None:
    """Exit 2 with one line for option values that cannot work (the declared table, ``constraints.IMPUTE``, the
    same checks ``tables.impute.check_options`` makes); ``given``: every option by its name, as typed."""
    from ..constraints import IMPUTE, OptionError, check_values, fixed_by_model

    try:
        check_values(IMPUTE, given)
        if given["model"] is not None:
            fixed_by_model(IMPUTE, given, given["model"])
    except OptionError as e:
        die(str(e))
    if given["json_out"] and given["out"] is None:
        die("--json prints a summary on stdout, where the table goes without --out; give --out PATH")
    if (given["target"] is None) != (given["predict"] is None):
        die("--target and --predict go together: repaint impute train.csv --target COLUMN --predict test.csv")


def _check_impute_outputs(a) -> None:
    """Every output checked before training: not onto an input nor onto another output, a regular file, not
    existing without --overwrite, writable."""
    if a.out is not None and a.out.is_dir():
        die(f"{a.out}: a folder; --out takes a file name (.csv or .parquet)")
    if a.draws is not None and a.draws.exists() and not a.draws.is_dir():
        die(f"{a.draws}: not a folder; --draws takes a folder")
    a.old_draws  # noqa: B018 (found now, before this run writes any draw)
    _check_write_plan(a)  # first: an output onto an input is refused as such, never answered with --overwrite
    if a.out is not None:
        if a.out.exists() and not a.overwrite:
            die(f"{a.out}: exists; --overwrite replaces it")
        _die_unless_writable(a.out.parent, "--out")
    if a.draws is not None:  # made at the end: the nearest folder that exists must take it
        _die_unless_writable(next(p for p in [a.draws, *a.draws.parents] if p.exists()), "--draws")
        if a.old_draws and not a.overwrite:  # of another run: two runs' draws never mix in one folder
            die(f"{a.old_draws[0]}: {len(a.old_draws)} draw(s) of an earlier run in --draws {a.draws}; --overwrite "
                f"replaces them all (draws this run does not make are removed), or choose another --draws folder")
    if a.save_model is not None:
        _check_save_model(a.save_model, a.overwrite)
    if a.fmt == "parquet":  # found out now, not after training
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            die(f"{a.out}: writing Parquet needs pyarrow; pip install pyarrow, or give --out a .csv name")


def _earlier_draws(folder: Path, stem: str) -> list[Path]:
    """The draws of ``stem`` already in ``folder`` (any run's: <stem>_draw<k>.csv or .parquet)."""
    import re

    pattern = re.compile(re.escape(stem) + r"_draw\d+\.(csv|parquet)")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name)) if folder.is_dir() else []


def _check_write_plan(a) -> None:
    """Exit 2 with one line when two outputs collide, one is an input, or one is not a regular file (a device,
    a FIFO: `--out /dev/null` would replace the device as root)."""
    from ..files import InputError, WritePlan
    from ..tables.model_files import model_paths

    plan = WritePlan()
    plan.read(a.table, f"the input {a.table}")
    if a.predict:
        plan.read(a.predict, f"the --predict table {a.predict}")
    for p in model_paths(a.model) if a.model else ():
        plan.read(p, f"the --model file {p}")
    if a.out is not None:
        plan.write(a.out, "--out")
    for p in a.draw_paths:
        plan.write(p, "--draws")
    for p in model_paths(a.save_model) if a.save_model else ():
        plan.write(p, "--save-model")
    try:
        plan.check()
    except InputError as e:
        die(str(e))


def _imputer(a):
    """The flags as the Python API's DiffusionImputer (tables/imputer.py): --seed is its random_state."""
    from ..tables.imputer import DiffusionImputer

    return DiffusionImputer(method=a.method, samples=a.samples, combine=a.combine, members=a.members,
                            train_steps=a.train_steps, gaussian_base=a.gaussian_base, width=a.width, blocks=a.blocks,
                            rounds=a.rounds, preset=a.preset, t_T=a.t_T, jump_length=a.jump_length,
                            jump_n_sample=a.jump_n_sample, eta=a.eta, guidance=a.guidance,
                            categorical=tuple(a.categorical), random_state=a.seed, threads=a.threads,
                            fit_sample=a.fit_sample)


def _impute_options(a):
    return _imputer(a).options()


def flag_words(message) -> str:
    """A message of the tables wing (it names parameters: ``tables/messages.py``) in this command's words: each
    parameter as its flag (``train_steps`` as ``--train-steps``, ``eta=0.5`` as ``--eta 0.5``)."""
    from ..constraints import IMPUTE

    flags = {o.flag[2:].replace("-", "_"): o.flag for o in IMPUTE.values() if o.flag.startswith("--")}
    name_of = lambda name: flags.get(name, "--" + name.replace("_", "-"))
    words = getattr(message, "words", None)
    return words(name_of) if words is not None else str(message)


class _FlagProgress(TableProgress):
    """The reporter, its warnings in flags."""

    def log(self, msg: str, level: str = "info") -> None:
        super().log(flag_words(msg), level)


def _read_tables(a, opts):
    """(training table, test table or None), read and checked before training."""
    from ..tables.impute import check_options
    from ..tables.messages import TableError
    from ..tables.table_files import read_table

    try:
        check_options(opts if a.model else opts.settled(), a.model)  # a --model's kind settles the method later
        if a.predict is not None:
            return (read_table(a.table, a.na_values, sep=a.sep),
                    read_table(a.predict, a.na_values, allow_missing_columns=True, sep=a.sep))
        return read_table(a.table, a.na_values, allow_missing_columns=a.model is not None, sep=a.sep), None
    except TableError as e:
        die(flag_words(e))


def _impute_run(a) -> int:
    """Train (or load), impute, write; the exit code (0, or 130 on Ctrl-C)."""
    from ..files import InputError
    from ..tables.impute import Interrupted
    from ..tables.messages import TableError

    train_table, test_table = _read_tables(a, _impute_options(a))
    progress = _FlagProgress(err, a.quiet)
    saving = a.save_model is not None
    try:
        with progress:
            if a.predict is not None:
                result = _imputer(a).predict_table(train_table, test_table, a.target, progress, model_path=a.model,
                                                   saving=saving, draws=bool(a.draws))
            else:
                if train_table.n_missing == 0:
                    progress.log(f"{a.table}: no missing cell; the table is written unchanged", "warning")
                result = _imputer(a).impute_table(train_table, progress, model_path=a.model, saving=saving,
                                                  draws=bool(a.draws))
        if saving:
            _save_model(a.save_model, result)
    except (TableError, InputError) as e:
        die(flag_words(e))
    except Interrupted as stop:
        _keep_interrupted_model(stop, a.save_model or Path(f"{a.out or (a.predict or a.table)}.model"), err)
    except KeyboardInterrupt:
        err.print("interrupted; nothing written")
        return 130
    _write_results(a, result, (test_table if a.predict is not None else train_table).style)
    return 0


def _save_model(path: Path, result) -> None:
    """--save-model: the model that filled the table, its card saying how it was trained."""
    from ..tables.model_files import save_table_model

    _, card = save_table_model(path, result.model, result.columns, result.card, option="--save-model")
    result.stats["model"] = str(card)


def _write_results(a, result, style) -> None:
    """The filled table to --out (or stdout), the draws, the summary lines."""
    from ..tables.table_files import write_csv, write_table

    if a.draws is not None:
        a.draws.mkdir(parents=True, exist_ok=True)
        for path, frame in zip(a.draw_paths, result.draws):
            write_table(frame, path, a.fmt, style, option="--draws", cols=result.columns)
        for old in set(a.old_draws) - set(a.draw_paths):  # an earlier run's (--overwrite): only this run's stay
            old.unlink(missing_ok=True)
    if a.out is not None:
        write_table(result.frame, a.out, a.fmt, style, option="--out", cols=result.columns)
        summary = {"input": str(a.table), "output": str(a.out), **({"predict": str(a.predict)} if a.predict else {}),
                   **({"draws": [str(p) for p in a.draw_paths]} if a.draws else {}), **result.stats}
        print(json.dumps(summary) if a.json_out else a.out, flush=True)
    else:
        write_csv(result.frame, sys.stdout, style)
    s = result.stats
    if not a.quiet:  # one line however wide (a log file is not wrapped at 80 columns); the rows written out
        trained = f"trained {s['train_s']:.1f} s, " if "train_s" in s else ""
        rows = s.get("predicted_rows", s["rows"])
        err.print(f"filled {s['filled']} cells in {rows} rows x {s['columns']} columns in {s['seconds']:.1f} s "
                  f"({trained}imputed {s.get('impute_s', 0):.1f} s; {s['model_calls_per_row']} model calls per row)",
                  markup=False, highlight=False, soft_wrap=True)


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
    from ..tables.model_files import model_paths

    for path in model_paths(save_model):
        if path.is_dir():
            die(f"{path}: a folder; --save-model takes a file name (PATH gives PATH.safetensors and PATH.yaml)")
        if path.exists() and not overwrite:
            die(f"{path}: exists; --overwrite replaces it, or give --save-model another name")
    _die_unless_writable(model_paths(save_model)[0].parent, "--save-model")


def _keep_interrupted_model(stop, path: Path, err: Console) -> None:
    """Ctrl-C while imputing: save the trained model so that a rerun with --model skips training; exit 130."""
    from ..files import InputError
    from ..tables.model_files import save_table_model

    try:
        _, card = save_table_model(path, stop.model, stop.columns, stop.extra, option="--save-model")
    except (OSError, ValueError, InputError) as e:
        err.print(f"interrupted while imputing; the trained model could not be kept ({e}); nothing written",
                  markup=False, highlight=False, soft_wrap=True)
    else:
        err.print(f"interrupted while imputing; nothing written; the trained model is kept in {card}: "
                  f"rerun with --model {card} to skip training", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(130)
