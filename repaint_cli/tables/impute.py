"""``repaint impute``: fill a table's missing cells with a diffusion model trained on that table.

Two kinds of model. The default, ``method="conditional"`` (``conditional.py``), is trained to
predict hidden cells from the given ones and reads each cell in one call per sample. The others
(``repaint``, ``ddnm``, ``ddim``) train an unconditional noise predictor (``denoiser.py``) and
condition it at sampling time, as the paper does for images.

Orchestration only, in three steps as ``images/setup.plan_run`` settles an image run: :func:`plan_impute`
settles everything once (the options, the columns, the encoded values and mask, the jump schedule, the
phases, the model given or loaded), :func:`train` trains, :func:`impute` fills; :func:`impute_table` and
:func:`fit_table` are those steps in a row. The table's files are ``table_files.py``, its schema
``schema.py``, the encoding ``encoder.py``, the models ``conditional.py`` and ``denoiser.py`` (their files
``model_files.py``); the RePaint methods' sampling is the images' own RePaint loop (``sampler.repaint``
over a ``schedule.jump_schedule``), run on (rows, encoded width) tensors. The core is used as it is,
through its parameters: the diffusion's ``fixed_variance`` and per-column ``clip_x0``, and the
Conditioning's ``noise_source``. Each row draws its noise from its own key, made of the seed and the row's
label (``conditional.row_keys``), with the sample number (``conditional.row_noise``): a seed gives the same table
on any machine, and a row the same cells in any partition of its table.
Messages name parameters (``messages.py``), never a command's flags.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from ..core.guidance import KeepsGraph, reconstruction_guidance as core_reconstruction_guidance
from ..core.sampler import Conditioning, repaint
from ..core.schedule import JumpParams, resolve_jump_params, jump_schedule, schedule_summary
from ..runtime.threads import set_threads
from .conditional import (DRAW_STEPS, category_dims, column_groups, draw_samples, point_samples, row_keys, row_noise,
                          stream_keys, train_conditional)
from .denoiser import make_diffusion, train_table_model
from .encoder import TableEncoder, combine
from .messages import TableError, parameter_words, said
from .model_config import TableModelConfig, TrainSettings
from .model_files import card_text, load_table_model
from .schema import Column, adopt_constants, schema_difference
from .table_files import Table, filled_frame

# the RePaint methods' default schedule for tables: 50/5/5 (the former `quick`), measured against the others by
# benchmarks/tabular.py; the images' presets were re-chosen on images (benchmarks/RESULTS.md#twentieth)
TABLE_SCHEDULE = {"t_T": 50, "jump_length": 5, "jump_n_sample": 5}
# (benchmarks/RESULTS.md#tables-against-classic-imputers)
BLOCK_ROWS = 4096  # rows per sampling block (memory only: each row's noise is its own)


GUIDANCE = 10.0  # the RePaint methods' reconstruction guidance scale (see reconstruction_guidance)
CARD_TRAINING = ("trained_on", "rows", "sampled_from", "sample_seed", "train")  # what a card says of its training


@dataclass
class ImputeOptions:
    """How ``repaint impute`` trains and fills (the library's names for its flags); checked by
    :func:`check_options`, settled by :meth:`settled`.

    Parameters
    ----------
    samples : int, default 5
        Imputations per row (and model), combined by ``combine``.
    combine : {"mean", "median"}, default "mean"
        How a number's samples become one (categories: the mode).
    method : str, optional
        ``choices.TABLE_METHODS``: conditional, or the RePaint methods repaint, ddnm, ddim; None: a loaded
        model's kind, else conditional.
    seed : int, default 0
        The run's seed: training, the rows' noise, ``fit_sample``'s rows.
    train : TrainSettings
        Training steps, learning rate and the conditional model's training choices.
    model : TableModelConfig
        The denoiser: width, blocks, members, Gaussian base.
    threads : int, optional
        CPU threads; None: the usable cores not busy now.
    categorical : tuple of str
        Columns read as categories even where their cells are numbers.
    preset, t_T, jump_length, jump_n_sample : optional
        The RePaint methods only: the sampling preset (default: ``TABLE_SCHEDULE``) and its schedule's values.
    eta : float, default 0.0
        ddim only: as ``repaint inpaint --eta`` (0: deterministic between resamplings).
    rounds : int, optional
        EM rounds: train, impute, then re-train on the imputed table (DiffPuter's idea); None: 1.
    variance : {"small", "large"}, default "small"
        The reverse step's fixed variance: the posterior's (small) or beta (large).
    guidance : float, optional
        The RePaint methods' reconstruction guidance scale (0: plain RePaint); None: ``GUIDANCE``.
    fit_sample : int, optional
        Train on this many rows, drawn by the seed (every row is filled); None: all.
    """

    samples: int = 5
    combine: str = "mean"
    method: Optional[str] = None
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    model: TableModelConfig = field(default_factory=TableModelConfig)
    threads: Optional[int] = None
    categorical: tuple = ()
    preset: Optional[str] = None
    t_T: Optional[int] = None
    jump_length: Optional[int] = None
    jump_n_sample: Optional[int] = None
    eta: float = 0.0
    rounds: Optional[int] = None
    variance: str = "small"
    guidance: Optional[float] = None
    fit_sample: Optional[int] = None

    @property
    def conditional(self) -> bool:
        return self.method in (None, "conditional")

    def settled(self, kind: Optional[str] = None, rows: Optional[int] = None) -> "ImputeOptions":
        """A copy with the method (``kind``: a loaded model's), the model's and training's defaults filled in
        (the conditional model's training steps once the table's ``rows`` are known)."""
        method = self.method or ("repaint" if kind == "eps" else "conditional")
        model_kind = "conditional" if method == "conditional" else "eps"
        return dataclasses.replace(self, method=method, model=self.model.settled(model_kind),
                                   rounds=1 if self.rounds is None else self.rounds,
                                   train=self.train.settled(model_kind, rows),
                                   guidance=GUIDANCE if self.guidance is None and method != "conditional" else
                                   self.guidance)

    def jump_params(self) -> JumpParams:
        return resolve_jump_params(self.preset, None if self.preset else {"schedule_jump_params": TABLE_SCHEDULE},
                                   t_T=self.t_T, jump_length=self.jump_length,
                                   jump_n_sample=self.jump_n_sample)

    def schedule(self) -> "Schedule":
        """The RePaint methods' jump schedule, built here only (checked: ValueError for one that cannot run)."""
        params = self.jump_params()
        return Schedule(params, jump_schedule(params))


@dataclass(frozen=True)
class Schedule:
    """A jump schedule and the parameters it was built from (``t_T``: the respacing of the sampling diffusion)."""

    params: JumpParams
    times: list

    @property
    def steps(self) -> int:
        """Entries of the schedule after the first: one sampling step (or undo step) each."""
        return len(self.times) - 1

    @property
    def calls(self) -> int:
        """Model calls per row and sample (undo steps call none)."""
        return schedule_summary(self.times)["unet_calls"]


class Progress:
    """What a long imputation reports; the CLI draws Rich bars from it."""

    def log(self, msg: str, level: str = "info") -> None:
        pass

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int = 1, **fields) -> None:
        pass

    def plan(self, phases: list[tuple[str, int, float]]) -> None:
        """Every phase ahead: (name, units, cost of one unit in row-passes), for an overall estimate."""
        pass


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while imputing, after training: carries the trained model so the caller can keep it (``extra``:
    what its card says of its training)."""

    def __init__(self, model, columns, extra: dict):
        super().__init__()
        self.model, self.columns, self.extra = model, columns, extra


@dataclass
class Imputed:
    frame: "object"  # the filled table (pandas.DataFrame)
    draws: list  # K completed tables, one per sample (only when asked for)
    columns: list[Column]
    stats: dict
    model: "object" = None  # the model that filled it (trained or given); None where nothing was to be filled
    card: dict = field(default_factory=dict)  # what its card says of its training (model_files.save_table_model)


def option_values(opts: ImputeOptions) -> dict:
    """The options' values by their CLI names (``constraints.IMPUTE``)."""
    return dict(samples=opts.samples, combine=opts.combine, method=opts.method, seed=opts.seed, threads=opts.threads,
                categorical=opts.categorical, preset=opts.preset, t_T=opts.t_T, jump_length=opts.jump_length,
                jump_n_sample=opts.jump_n_sample, eta=opts.eta, rounds=opts.rounds, guidance=opts.guidance,
                train_steps=opts.train.steps, width=opts.model.width, blocks=opts.model.blocks,
                members=opts.model.members, gaussian_base=opts.model.gaussian_base, fit_sample=opts.fit_sample)


def check_options(opts: ImputeOptions, model_path=None, schedule: bool = True) -> Optional[Schedule]:
    """TableError (one line, naming parameters) for options that cannot work together; a method of None (a loaded
    model's kind, else conditional) is checked again once settled. Each value is checked against the declared
    table (``constraints.IMPUTE``, which the CLI checks too, in the same words); with ``model_path`` (a saved
    model), an option the model fixes is refused by name. The RePaint methods' schedule is built and checked here
    (``schedule`` False: later, once the options are settled) and comes back."""
    from ..constraints import IMPUTE, OptionError, check_eta, check_t_T_within, check_values, fixed_by_model

    try:
        values = option_values(opts)
        if model_path is not None:
            fixed_by_model(IMPUTE, values, model_path)
        check_values(IMPUTE, values)
    except OptionError as e:
        raise TableError(parameter_words(str(e))) from None
    if opts.model.members not in (None, 1) and opts.method not in (None, "conditional"):
        raise TableError(said(f"`members` is for `method` conditional; `method` {opts.method} trains one model"))
    if opts.model.gaussian_base and opts.method not in (None, "conditional"):
        raise TableError(said(f"`gaussian_base` is for `method` conditional; leave it out with `method` {opts.method}"))
    if opts.method == "conditional":
        _check_conditional(opts)
        return None
    if opts.variance not in ("small", "large"):
        raise TableError(said(f"`variance`={opts.variance!r}: use small or large"))
    try:  # the schedule first, then the rules on it (each call goes down a floor: none comes back up between)
        built = opts.schedule() if schedule else None
        check_eta(opts.eta, opts.method)
        if built is not None:
            check_t_T_within(built.params.t_T, opts.model.diffusion_steps, "the table model")
    except ValueError as e:  # OptionError too
        raise TableError(parameter_words(str(e))) from None
    return built


def _check_conditional(opts: ImputeOptions) -> None:
    """The RePaint sampler's options, refused with the conditional model."""
    given = [name for name, value in (("preset", opts.preset), ("t_T", opts.t_T),
             ("jump_length", opts.jump_length), ("jump_n_sample", opts.jump_n_sample),
             ("guidance", opts.guidance), ("eta", opts.eta or None),
             ("rounds", opts.rounds if opts.rounds not in (None, 1) else None)) if value is not None]
    if given == ["eta"]:
        raise TableError(said(f"`eta`={opts.eta}: applies to `method` ddim only"))
    if given:
        raise TableError(said(f"`{given[0]}` applies to `method` repaint, ddnm or ddim (the RePaint sampler); the "
                              f"conditional model (the default) reads each cell in one call: leave `{given[0]}` out, "
                              f"or pass `method` repaint"))


def sample_rows(model, x: np.ndarray, keep: np.ndarray, clip: np.ndarray, opts: ImputeOptions, sample: int,
                schedule: Schedule, on_step: Optional[Callable[[int], None]] = None,
                keys: Optional[np.ndarray] = None) -> np.ndarray:
    """One RePaint imputation of encoded rows over ``schedule``: kept cells exactly as given, the others sampled.
    ``keys``: the rows' noise keys (``conditional.row_keys``; by default of their numbers and the seed)."""
    keys = torch.from_numpy(np.asarray(keys if keys is not None else row_keys(range(len(x)), opts.seed), np.int64))
    # x0 clipped per column to the data's own range
    diffusion = make_diffusion(model.cfg, respacing=str(schedule.params.t_T), clip_x0=np.asarray(clip, np.float32),
                               fixed_variance=opts.variance)
    coefs = diffusion.coefficients(eta=opts.eta if opts.method == "ddim" else None)
    out = np.empty_like(x, dtype=np.float32)
    callback = (lambda info: on_step(1)) if on_step is not None else None
    for start in range(0, len(x), BLOCK_ROWS):
        gt = torch.from_numpy(np.ascontiguousarray(x[start:start + BLOCK_ROWS], np.float32))
        kp = torch.from_numpy(np.ascontiguousarray(keep[start:start + BLOCK_ROWS]))
        own = stream_keys(keys[start:start + len(gt)], "repaint", sample)
        cond = Conditioning(gt=gt, keep=kp, keys=own, coefs=coefs, method=opts.method, noise_source=row_noise)
        net = model
        if opts.guidance > 0:
            net = KeepsGraph(model)
            cond.cond_fn = reconstruction_guidance(net, gt, kp, opts.guidance)
        with torch.no_grad():
            filled = repaint(net, cond, schedule.times, callback=callback)
        out[start:start + len(gt)] = torch.where(kp, gt, filled).numpy()
    return out


def reconstruction_guidance(model: KeepsGraph, gt: torch.Tensor, keep: torch.Tensor, scale: float):
    """The core's reconstruction guidance (``core/guidance.py``) for the table's denoiser, which
    predicts eps over its own (unrespaced) diffusion.

    Why tables use it by default: RePaint's replacement couples the missing cells to the observed
    ones only through freshly noised copies of them; with a handful of columns, unlike an image's
    many neighbouring pixels, that coupling is weak; guidance improved both a label's accuracy and a
    number's MAE, and too large a scale diverges (benchmarks/RESULTS.md#tables-guidance)."""
    abar = make_diffusion(model.cfg).arrays.alphas_cumprod
    return core_reconstruction_guidance(model, gt, keep, scale, abar)


@dataclass
class ImputePlan:
    """Everything :func:`train` and :func:`impute` need, settled once by :func:`plan_impute`."""

    table: Table
    opts: ImputeOptions  # settled: the method, the model's config (a given model's own), the training's steps
    encoder: TableEncoder  # the columns (a given model's, written as this table writes them)
    x: np.ndarray  # (rows, encoded width) values, 0 where missing
    keep: np.ndarray  # (rows, encoded width) True where observed
    schedule: Optional[Schedule]  # the RePaint methods' jump schedule; None for the conditional model
    rounds: int  # training rounds (EM for the RePaint methods); 0 with a given model
    phases: list  # (name, units, cost of a unit in row-passes) for Progress.plan
    card: dict  # what a saved model's card says of its training
    stats: dict
    model: object = None  # a given model (loaded or fitted); None: train one
    row_keys: Optional[np.ndarray] = None  # (rows, 2) each row's noise key (conditional.row_keys)
    fit_rows: Optional[np.ndarray] = None  # the rows trained on (fit_sample); None: every row
    draws: bool = False  # the completed tables of each sample too (multiple imputation)

    @property
    def columns(self) -> list[Column]:
        return self.encoder.columns

    @property
    def given(self) -> bool:
        return self.model is not None

    @property
    def need(self) -> bool:
        """Something to fill: a modelled column and a missing cell in it."""
        return self.x.shape[1] > 0 and not self.keep.all()


def plan_impute(table: Table, opts: ImputeOptions, progress: Optional[Progress] = None, model_path=None,
                fitted: Optional[tuple] = None, draws: bool = False, saving: bool = False,
                fit_only: bool = False) -> ImputePlan:
    """Settle a run once: the options checked and settled (a given model's kind chooses the method), the columns
    (or ``fitted``'s: (model, columns), or ``model_path``'s, checked against this table), the encoded table, the
    schedule and the phases ahead. ``saving``: the model will be saved (its card is checked now, not after
    training); ``fit_only``: the plan of :func:`fit_table` (train, fill nothing)."""
    progress = progress or Progress()
    check_options(opts, model_path, schedule=False)  # the schedule once settled, below
    here = TableEncoder().fit(table, opts.categorical, warn=lambda msg: progress.log(msg, "warning"))
    model, card, encoder = None, {}, here
    if fitted is not None:
        model, columns = fitted
    elif model_path is not None:
        model, columns, card = load_table_model(model_path)
    if model is not None:
        why = schema_difference(columns, table, here.columns)
        if why:
            raise TableError(said(f"{table.path}: does not fit the model {model_path}: {why}; train a new one "
                                  "(leave out `model`)"))
        encoder = TableEncoder(adopt_constants(columns, here.columns))
    fit_rows = _fit_rows(len(table.frame), opts) if model is None else None
    # a copy: the caller's options stay as given; a given model brings its kind and config
    opts = opts.settled(model.cfg.kind if model is not None else None,
                        rows=len(table.frame) if fit_rows is None else len(fit_rows))
    if model is not None:
        if opts.conditional != (model.cfg.kind == "conditional"):
            raise TableError(said(f"{model_path}: a {model.cfg.kind} model, which `method` {opts.method} cannot "
                                  "use; leave out `method` (the model's kind chooses it)"))
        opts.model = model.cfg
    schedule = check_options(opts)
    if not fit_only:
        _warn_constants(table, encoder.columns, progress)
    card_fields = _card_fields(table, opts, card if model_path is not None else None, model_path, fit_rows)
    if saving:
        card_text(encoder.columns, card_fields)  # a value no card can hold is found now, not after training
    x, keep = encoder.transform(table)
    rounds = 0 if model is not None else 1 if opts.conditional else opts.rounds
    plan = ImputePlan(table, opts, encoder, x, keep, schedule, rounds, [], card_fields, {}, model,
                      row_keys(table.frame.index.tolist(), opts.seed), fit_rows, draws)
    plan.stats = _stats(plan, fit_only)
    plan.phases = _phases(plan, fit_only)
    return plan


def _fit_rows(rows: int, opts: ImputeOptions) -> Optional[np.ndarray]:
    """``fit_sample`` rows of ``rows``, drawn by the seed, in their order; None for every row."""
    if opts.fit_sample is None or opts.fit_sample >= rows:
        return None
    return np.sort(np.random.default_rng(opts.seed).choice(rows, opts.fit_sample, replace=False))


def _stats(plan: ImputePlan, fit_only: bool) -> dict:
    table, opts = plan.table, plan.opts
    stats = {"rows": len(table.frame), "columns": len(plan.columns)}
    if plan.fit_rows is not None:
        stats["trained_rows"] = len(plan.fit_rows)
    if fit_only:
        return {**stats, "encoded_width": int(plan.x.shape[1]), "seed": opts.seed, "method": opts.method}
    unfilled = sum(int((~table.observed[:, j]).sum()) for j, c in enumerate(plan.columns) if c.kind == "identifier")
    stats.update({"missing": table.n_missing, "filled": table.n_missing - unfilled,
                  "encoded_width": int(plan.x.shape[1]), "samples": opts.samples, "seed": opts.seed,
                  "method": opts.method, "model_calls_per_row": calls_per_row(opts, plan.draws, plan.schedule)})
    if opts.conditional:
        stats["members"] = opts.model.members
    else:
        stats["schedule"] = {k: plan.schedule.params.as_dict()[k] for k in ("t_T", "jump_length", "jump_n_sample")}
        stats["guidance"] = opts.guidance
    return stats


def calls_per_row(opts: ImputeOptions, draws: bool = False, schedule: Optional[Schedule] = None) -> int:
    """Model calls per row (all samples; ``draws``: with the draws' chains too), for settled options."""
    if opts.conditional:
        return opts.samples * (opts.model.members + (DRAW_STEPS if draws else 0))  # each member's samples
    return (schedule or opts.schedule()).calls * opts.samples


def _phases(plan: ImputePlan, fit_only: bool) -> list[tuple[str, int, float]]:
    """The phases ahead with their units and each unit's cost in row-passes of the model (a training step:
    forward and backward over a batch, about 3 passes; a sampling step: one pass per row, 3 with guidance, and
    none for an undo step). Nothing to fill: none (nothing is trained either)."""
    opts, rows = plan.opts, len(plan.x)
    if not fit_only and not plan.need or fit_only and plan.x.shape[1] == 0:
        return []
    train_cost = 3.0 * min(opts.train.batch_size, len(_training_rows(plan)[0]))
    if opts.conditional:
        training = [] if plan.given else [("training", opts.train.steps * opts.model.members, train_cost)]
        if fit_only:
            return training
        points = opts.samples * opts.model.members
        units = points + opts.samples * plan.draws  # a unit: one sample's pass over the rows (a draw's: DRAW_STEPS)
        return training + [("imputing", units, rows * (points + opts.samples * DRAW_STEPS * plan.draws) / units)]
    schedule, rounds = plan.schedule, max(1, plan.rounds)
    per_step = min(rows, BLOCK_ROWS) * schedule.calls / max(1, schedule.steps) * (3 if opts.guidance > 0 else 1)
    out = []
    for rnd in range(rounds):
        if not plan.given:
            out.append((_phase_name("training", rnd, rounds), _round_steps(opts, rnd), train_cost))
        out.append((_phase_name("imputing", rnd, rounds), _sampling_units(plan), per_step))
    return out[:-1] if fit_only else out


def _round_steps(opts: ImputeOptions, rnd: int) -> int:
    """Training steps of EM round ``rnd``: the first trains in full, the later ones go on for half as many."""
    return opts.train.steps if rnd == 0 else max(1, opts.train.steps // 2)


def _sampling_units(plan: ImputePlan) -> int:
    """Progress units of one RePaint imputation: a schedule step per sample and block of rows."""
    return plan.schedule.steps * plan.opts.samples * math.ceil(len(plan.x) / BLOCK_ROWS)


def _phase_name(what: str, rnd: int, rounds: int) -> str:
    return what if rounds == 1 else f"{what}, round {rnd + 1}/{rounds}"


@contextlib.contextmanager
def _timed(stats: dict, key: str):
    """Adds the seconds of the ``with`` body to ``stats[key]``."""
    t0 = time.perf_counter()
    yield
    stats[key] = stats.get(key, 0.0) + time.perf_counter() - t0


@contextlib.contextmanager
def _keeps_model(plan: ImputePlan, model):
    """Ctrl-C while imputing with a model trained here raises :class:`Interrupted` carrying it (a given model
    is not lost: plain KeyboardInterrupt)."""
    try:
        yield
    except KeyboardInterrupt:
        if plan.given:
            raise
        raise Interrupted(model, plan.columns, plan.card) from None


def _training_rows(plan: ImputePlan, fill: Optional[np.ndarray] = None):
    """(values, keep, fill) of the rows trained on (``fit_sample`` of them, or all)."""
    if plan.fit_rows is None:
        return plan.x, plan.keep, fill
    rows = plan.fit_rows
    return plan.x[rows], plan.keep[rows], None if fill is None else fill[rows]


def train(plan: ImputePlan, progress: Optional[Progress] = None):
    """The model trained on the plan's table: the conditional model's members, or the eps model over the EM rounds
    (each but the last imputes the table, and the next trains on it)."""
    progress = progress or Progress()
    opts = plan.opts
    set_threads(opts.threads)  # None: the free cores (runtime.threads); the members train side by side on them
    if opts.conditional:
        return _train_conditional(plan, progress)
    model, fill = None, None
    for rnd in range(plan.rounds):
        progress.phase(_phase_name("training", rnd, plan.rounds), _round_steps(opts, rnd))
        settings = TrainSettings(**{**opts.train.__dict__, "steps": _round_steps(opts, rnd),
                                    "seed": opts.train.seed + rnd})
        x, keep, rows_fill = _training_rows(plan, fill)
        with _timed(plan.stats, "train_s"):
            model = train_table_model(x, keep, opts.model, settings, fill=rows_fill, model=model,
                                      on_step=lambda s, total, loss: progress.advance(1, loss=f"{loss:.4f}"))
        if rnd < plan.rounds - 1:
            fill = np.mean(_repaint_samples(plan, model, progress, rnd), axis=0)  # the next round's stand-in
    return model


def _train_conditional(plan: ImputePlan, progress: Progress):
    opts = plan.opts
    progress.phase("training", opts.train.steps * opts.model.members)
    trained = [0]  # steps reported so far (reports come every few steps, summed over the members)

    def on_step(step: int, total: int, loss: float) -> None:
        progress.advance(step - trained[0], loss=f"{loss:.4f}")
        trained[0] = step

    # the members train side by side on the threads' cores (the same weights as one after another)
    x, keep, _ = _training_rows(plan)
    with _timed(plan.stats, "train_s"):
        return train_conditional(x, keep, column_groups(plan.columns), opts.model, opts.train,
                                 on_step=on_step, category_dims=category_dims(plan.columns),
                                 workers=torch.get_num_threads())


def _repaint_samples(plan: ImputePlan, model, progress: Progress, rnd: int) -> list[np.ndarray]:
    """``samples`` RePaint imputations of the encoded table (round ``rnd`` of the EM rounds)."""
    rounds = max(1, plan.rounds)
    progress.phase(_phase_name("imputing", rnd, rounds), _sampling_units(plan))
    clip = plan.encoder.clip()
    with _timed(plan.stats, "impute_s"), _keeps_model(plan, model):
        return [sample_rows(model, plan.x, plan.keep, clip, plan.opts, k, plan.schedule, on_step=progress.advance,
                            keys=plan.row_keys) for k in range(plan.opts.samples)]


def impute(plan: ImputePlan, model, progress: Optional[Progress] = None) -> Imputed:
    """The plan's table with its missing cells filled by ``model`` (and its draws where the plan asks)."""
    progress = progress or Progress()
    set_threads(plan.opts.threads)  # the same cells at any count (each sampler says how)
    cols, rows = plan.columns, len(plan.x)
    nothing = [np.zeros(rows, np.int64)] * len(cols)
    if not plan.need:
        values, drawn = nothing, []
    elif plan.opts.conditional:
        values, drawn = _conditional_values(plan, model, progress)
    else:
        drawn = [plan.encoder.inverse_transform(s)
                 for s in _repaint_samples(plan, model, progress, max(1, plan.rounds) - 1)]
        values = combine(drawn, cols, plan.opts.combine)
    frame = filled_frame(plan.table, cols, values)
    draws = [filled_frame(plan.table, cols, d) for d in drawn] if plan.draws else []
    return Imputed(frame, draws, cols, plan.stats, model, plan.card)


def _conditional_values(plan: ImputePlan, model, progress: Progress):
    """The conditional model's point estimate (``samples`` calls at t = 1 per member, combined in encoded space)
    and, for draws, ``samples`` draws: (values per column, [values per column of each draw])."""
    opts = plan.opts
    points = opts.samples * opts.model.members
    progress.phase("imputing", points + opts.samples * plan.draws)
    clip = plan.encoder.clip()
    with _timed(plan.stats, "impute_s"), _keeps_model(plan, model):
        points = point_samples(model, plan.x, plan.keep, opts.samples, opts.seed, clip, on_sample=progress.advance,
                               keys=plan.row_keys)
        drawn = (draw_samples(model, plan.x, plan.keep, opts.samples, opts.seed, clip, on_sample=progress.advance,
                              keys=plan.row_keys) if plan.draws else [])
    # numbers: mean or median over the samples in encoded space (normal scores); categories: their mean
    # one-hot score, argmax on decoding
    point = np.median(points, 0) if opts.combine == "median" else points.mean(0)
    return plan.encoder.inverse_transform(point), [plan.encoder.inverse_transform(d) for d in drawn]


def impute_table(table: Table, opts: ImputeOptions, progress: Optional[Progress] = None, model_path=None,
                 keep_draws: bool = False, fitted: Optional[tuple] = None, saving: bool = False) -> Imputed:
    """Fill a table's missing cells, as ``repaint impute`` does: train on it (or use a given model), then impute.

    Parameters
    ----------
    table : Table
        The table as read (``table_files.read_table``).
    opts : ImputeOptions
        How to train and impute; checked here (``check_options``).
    progress : Progress, optional
        Receives the phases, progress and warnings; by default nothing is shown.
    model_path : str or Path, optional
        A saved model (``repaint impute --save-model``'s files) to fill with instead of training.
    keep_draws : bool, default False
        Also return each sample's completed table (multiple imputation).
    fitted : tuple, optional
        ``(model, columns)`` from :func:`fit_table`: fill with that model instead of training.
    saving : bool, default False
        The caller saves the model (``model_files.save_table_model`` with the result's ``card``): the card is
        checked before training, and a table with nothing to train on is refused.

    Returns
    -------
    Imputed
        The filled frame, the draws (with ``keep_draws``), the columns, the run's stats, the model and what
        its card says of its training.

    Raises
    ------
    TableError
        Bad input or options (one line naming the file or the parameter and the fix).
    Interrupted
        Ctrl-C while imputing, carrying the trained model so that the caller can keep it.
    """
    progress = progress or Progress()
    plan = plan_impute(table, opts, progress, model_path=model_path, fitted=fitted, draws=keep_draws, saving=saving)
    t0 = time.perf_counter()
    if plan.phases:
        progress.plan(plan.phases)
    model = plan.model if plan.given or not plan.need else train(plan, progress)
    result = impute(plan, model, progress)
    _round_times(result.stats, time.perf_counter() - t0)
    if saving and model is None:
        raise TableError(said(f"{table.path}: nothing to train on (no missing cell or no column to model); "
                              "`save_model` needs a table with missing cells"))
    return result


def _round_times(stats: dict, seconds: float) -> None:
    for key in ("train_s", "impute_s"):
        if key in stats:
            stats[key] = round(stats[key], 3)
    stats["seconds"] = round(seconds, 3)


@dataclass
class Fitted:
    model: "object"  # None where the table has no column to model (every column constant)
    columns: list[Column]
    card: dict  # what a saved model's card says of its training
    stats: dict


def fit_table(table: Table, opts: ImputeOptions, progress: Optional[Progress] = None) -> Fitted:
    """Train on ``table`` without imputing it (``DiffusionImputer.fit``): the model :func:`impute_table` would
    train on it, the same bits, to be given to it later as ``fitted``."""
    progress = progress or Progress()
    plan = plan_impute(table, opts, progress, fit_only=True)
    if plan.x.shape[1] == 0:
        return Fitted(None, plan.columns, plan.card, plan.stats)
    t0 = time.perf_counter()
    progress.plan(plan.phases)
    model = train(plan, progress)
    _round_times(plan.stats, time.perf_counter() - t0)
    return Fitted(model, plan.columns, plan.card, plan.stats)


def _warn_constants(table: Table, cols: list[Column], progress: Progress) -> None:
    """A warning for each column whose missing cells are not imputed: a constant's get the constant, an
    identifier's (a different value in every row) are left as they are."""
    for j, col in enumerate(cols):
        n_missing = int((~table.observed[:, j]).sum())
        if col.kind == "constant" and n_missing:
            progress.log(f"column '{col.name}' has one value only ({col.constant!r}): its missing cells get it",
                         "warning")
        if col.kind == "identifier" and n_missing:
            progress.log(f"column '{col.name}' has a different value in every row (an identifier): its {n_missing} "
                         f"missing cell{'s are' if n_missing > 1 else ' is'} left as {'they are' if n_missing > 1 else 'it is'} "
                         "(no value could be right; a filled one would copy another row's)", "warning")


def _card_fields(table: Table, opts: ImputeOptions, loaded_card: Optional[dict], model_path,
                 fit_rows: Optional[np.ndarray] = None) -> dict:
    """What a saved model's card says of its training: this table's (the rows trained on: a sample of them with
    ``fit_sample``), or a loaded model's own (saved again, it was not trained here)."""
    if loaded_card is None:
        sample = {} if fit_rows is None else {"sampled_from": len(table.frame), "sample_seed": opts.seed}
        rows = len(table.frame) if fit_rows is None else len(fit_rows)
        return {"trained_on": str(table.path), "rows": rows, **sample, "train": dataclasses.asdict(opts.train)}
    return {**{k: loaded_card[k] for k in CARD_TRAINING if k in loaded_card},
            "copied_from": str(model_path)}


def predict_table(train_table: Table, test_table: Table, target: str, opts: ImputeOptions, progress=None,
                  model_path=None, keep_draws: bool = False, saving: bool = False) -> Imputed:
    """Prediction as imputation: the test rows' ``target`` is treated as missing; the model is fitted on the
    training rows and the test rows' other cells together (or is ``model_path``'s, checked against them), then
    fills the test rows alone, which come back with their target filled. The stats count the rows and missing
    cells of both tables (what the model was fitted on), ``filled`` those of the test rows."""
    progress = progress or Progress()
    test, both = _prediction_tables(train_table, test_table, target)
    plan = plan_impute(both, opts, progress, model_path=model_path, draws=keep_draws, saving=saving)
    t0 = time.perf_counter()
    if plan.phases:
        progress.plan(plan.phases)
    model = plan.model if plan.given or not plan.need else train(plan, progress)
    n = len(train_table.frame)  # the test rows, encoded as the table fitted on encodes them
    rows = dataclasses.replace(plan, table=test, x=plan.x[n:], keep=plan.keep[n:],
                               row_keys=row_keys(test.frame.index.tolist(), plan.opts.seed))
    result = impute(rows, model, progress)
    _round_times(result.stats, time.perf_counter() - t0)
    unfilled = sum(int((~test.observed[:, j]).sum()) for j, c in enumerate(result.columns) if c.kind == "identifier")
    result.stats.update(filled=test.n_missing - unfilled, predicted_rows=len(test.frame))
    if saving and model is None:
        raise TableError(said(f"{train_table.path}: nothing to train on (no missing cell or no column to model); "
                              "`save_model` needs a table with missing cells"))
    return result


def _prediction_tables(train: Table, test: Table, target: str) -> tuple[Table, Table]:
    """(the test rows with the training table's columns, ``target`` missing; both tables' rows, one under the other),
    or TableError for tables that cannot be paired."""
    import pandas as pd

    if target not in train.columns:
        raise TableError(said(f"{train.path}: no column '{target}' (`target`); columns: {', '.join(train.columns)}"))
    if train.fmt != test.fmt:
        raise TableError(said(f"{test.path}: give `predict` in the same format as the training table ({train.fmt})"))
    extra = [c for c in test.columns if c not in train.columns]
    if extra:
        raise TableError(f"{test.path}: column '{extra[0]}' is not in the training table {train.path}")
    test_frame = test.frame.reindex(columns=train.frame.columns)
    test_obs = np.zeros((len(test_frame), len(train.columns)), bool)
    for j, name in enumerate(train.columns):
        if name in test.columns and name != target:
            test_obs[:, j] = test.observed[:, test.columns.index(name)]
        elif train.fmt == "parquet":  # a column the test table lacks: empty, of the training table's dtype
            test_frame[name] = pd.Series(index=test_frame.index, dtype=train.frame[name].dtype)
    train_frame = train.frame
    if train.fmt == "csv":
        train_frame, test_frame = train_frame.astype(object), test_frame.astype(object)
    both = Table(pd.concat([train_frame, test_frame], ignore_index=True),
                 np.concatenate([train.observed, test_obs]), train.path, train.fmt, dtypes=train.dtypes)
    # the test table's row names, if any, kept
    return Table(test_frame, test_obs, test.path, train.fmt, test.style, dtypes=train.dtypes), both
