"""``repaint impute``: fill a table's missing cells with a diffusion model trained on that table.

Two kinds of model. The default, ``--method conditional`` (``conditional.py``), is trained to
predict hidden cells from the given ones and reads each cell in one call per sample. The others
(``--method repaint``, ``ddnm``, ``ddim``) train an unconditional noise predictor
(``denoiser.py``) and condition it at sampling time, as the paper does for images.

Orchestration only: the table codec is ``codec.py``, the models ``conditional.py`` and
``denoiser.py``, and the RePaint methods' sampling is the images' own RePaint loop (``sampler.repaint`` over a
``schedule.jump_schedule``), run on (rows, encoded width) tensors. The core is
used as it is, through its parameters: the diffusion's ``fixed_variance`` and
per-column ``clip_x0``, and the Conditioning's ``noise_source``. Each row block
draws its noise from one key made of the seed, the sample number and the
block's first row (:func:`row_block_noise`), so a seed gives the same table on
any machine.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from ..core.guidance import KeepsGraph, reconstruction_guidance as core_reconstruction_guidance
from ..core.noise import gaussian_seeded, image_key, keys_tensor
from ..core.sampler import Conditioning, repaint
from ..core.schedule import JumpParams, resolve_jump_params, jump_schedule, schedule_summary
from .conditional import DRAW_STEPS, category_dims, column_groups, draw_samples, point_samples, train_conditional
from .denoiser import (TableModelConfig, TrainSettings, card_text, load_table_model, make_diffusion,
                       save_table_model, train_table_model)
from .codec import (Column, Table, TableError, adopt_constants, cell_values, clip_range, combine, decode, encode,
                     filled_frame, infer_columns, schema_difference)
from ..runtime.threads import set_threads

TABLE_PRESET = "quick"  # the tables' default schedule (benchmarks/tabular.py measured it against the others)
BLOCK_ROWS = 4096  # rows per sampling block; fixed, so that the noise (and the result) does not depend on the machine


GUIDANCE = 10.0  # the RePaint methods' reconstruction guidance scale (see reconstruction_guidance)


@dataclass
class ImputeOptions:
    samples: int = 5
    combine: str = "mean"  # numeric cells over the samples: mean or median (categories: mode)
    method: Optional[str] = None  # choices.TABLE_METHODS; None: a loaded model's kind, else conditional
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    model: TableModelConfig = field(default_factory=TableModelConfig)
    threads: Optional[int] = None
    categorical: tuple = ()
    # the RePaint methods only (repaint, ddnm, ddim):
    preset: Optional[str] = None
    t_T: Optional[int] = None
    jump_length: Optional[int] = None
    jump_n_sample: Optional[int] = None
    eta: float = 0.0  # ddim only: as `repaint inpaint --eta` (0: deterministic between resamplings)
    rounds: Optional[int] = None  # EM rounds: train, impute, then re-train on the imputed table (DiffPuter's
    # idea); None: 1
    variance: str = "small"  # the reverse step's fixed variance: posterior ('small') or beta ('large')
    guidance: Optional[float] = None  # reconstruction guidance scale (0: plain RePaint); None: GUIDANCE

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
        return resolve_jump_params(self.preset or TABLE_PRESET, None, t_T=self.t_T, jump_length=self.jump_length,
                                   jump_n_sample=self.jump_n_sample)


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
    """Ctrl-C while imputing, after training: carries the trained model so the caller can keep it."""

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


def row_block_noise(keys: torch.Tensor, draw, shape: tuple, index=None) -> torch.Tensor:
    """The tables' noise source (see ``noise.per_image_noise``): a block of rows is one noise
    'image', with one key (``keys`` is (1, 2)) and one generator draw per purpose and step."""
    return gaussian_seeded(keys, int(draw), (math.prod(shape),)).reshape(shape)


def option_values(opts: ImputeOptions) -> dict:
    """The options' values by their CLI names (``constraints.IMPUTE``)."""
    return dict(samples=opts.samples, combine=opts.combine, method=opts.method, seed=opts.seed, threads=opts.threads,
                categorical=opts.categorical, preset=opts.preset, t_T=opts.t_T, jump_length=opts.jump_length,
                jump_n_sample=opts.jump_n_sample, eta=opts.eta, rounds=opts.rounds, guidance=opts.guidance,
                train_steps=opts.train.steps, width=opts.model.width, blocks=opts.model.blocks,
                members=opts.model.members, gaussian_base=opts.model.gaussian_base)


def check_options(opts: ImputeOptions, model_path=None) -> None:
    """TableError (one line) for options that cannot work together; a method of None (a loaded model's kind, else
    conditional) is checked again once settled. Each value is checked against the declared table
    (``constraints.IMPUTE``, which the CLI checks too, in the same words); with ``model_path`` (a saved model),
    an option the model fixes is refused by name."""
    from ..constraints import IMPUTE, OptionError, check_eta, check_t_T_within, check_values, fixed_by_model

    try:
        values = option_values(opts)
        check_values(IMPUTE, values)
        if model_path is not None:
            fixed_by_model(IMPUTE, values, model_path)
    except OptionError as e:
        raise TableError(str(e)) from None
    if opts.model.members not in (None, 1) and opts.method not in (None, "conditional"):
        raise TableError(f"--members is for --method conditional; --method {opts.method} trains one model")
    if opts.model.gaussian_base and opts.method not in (None, "conditional"):
        raise TableError(f"--gaussian-base is for --method conditional; leave it out with --method {opts.method}")
    if opts.method == "conditional":
        given = [flag for flag, value in (("--preset", opts.preset), ("--t-T", opts.t_T),
                 ("--jump-length", opts.jump_length), ("--jump-n-sample", opts.jump_n_sample),
                 ("--guidance", opts.guidance), ("--eta", opts.eta or None),
                 ("--rounds", opts.rounds if opts.rounds not in (None, 1) else None)) if value is not None]
        if given == ["--eta"]:
            raise TableError(f"--eta {opts.eta}: applies to --method ddim only")
        if given:
            raise TableError(f"{given[0]} applies to --method repaint, ddnm or ddim (the RePaint sampler); the "
                             f"conditional model (the default) reads each cell in one call: leave {given[0]} out, "
                             f"or pass --method repaint")
        return
    if opts.variance not in ("small", "large"):
        raise TableError(f"--variance {opts.variance!r}: use small or large")
    try:
        check_eta(opts.eta, opts.method)
        jp = opts.jump_params()
        jump_schedule(jp)
        check_t_T_within(jp.t_T, opts.model.diffusion_steps, "the table model")
    except ValueError as e:  # OptionError too
        raise TableError(str(e)) from None


def sample_rows(model, x: np.ndarray, keep: np.ndarray, clip: np.ndarray, opts: ImputeOptions, sample: int,
                on_step: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """One RePaint imputation of encoded rows: kept cells exactly as given, the others sampled."""
    cfg = model.cfg
    jp = opts.jump_params()
    # x0 clipped per column to the data's own range
    diffusion = make_diffusion(cfg, respacing=str(jp.t_T), clip_x0=np.asarray(clip, np.float32),
                               fixed_variance=opts.variance)
    coefs = diffusion.coefficients(eta=opts.eta if opts.method == "ddim" else None)
    times = jump_schedule(jp)
    out = np.empty_like(x, dtype=np.float32)
    callback = (lambda info: on_step(1)) if on_step is not None else None
    for start in range(0, len(x), BLOCK_ROWS):
        gt = torch.from_numpy(np.ascontiguousarray(x[start:start + BLOCK_ROWS], np.float32))
        kp = torch.from_numpy(np.ascontiguousarray(keep[start:start + BLOCK_ROWS]))
        key = keys_tensor([image_key(opts.seed, f"table/{sample}/{start}")])
        cond = Conditioning(gt=gt, keep=kp, keys=key, coefs=coefs, method=opts.method, noise_source=row_block_noise)
        net = model
        if opts.guidance > 0:
            net = KeepsGraph(model)
            cond.cond_fn = reconstruction_guidance(net, gt, kp, opts.guidance)
        with torch.no_grad():
            filled = repaint(net, cond, times, callback=callback)
        out[start:start + len(gt)] = torch.where(kp, gt, filled).numpy()
    return out


def reconstruction_guidance(model: KeepsGraph, gt: torch.Tensor, keep: torch.Tensor, scale: float):
    """The core's reconstruction guidance (``core/guidance.py``) for the table's denoiser, which
    predicts eps over its own (unrespaced) diffusion.

    Why tables use it by default: RePaint's replacement couples the missing cells to the observed
    ones only through freshly noised copies of them; with a handful of columns, unlike an image's
    many neighbouring pixels, that coupling is weak. Measured with the quick preset on a 3-class
    label set by one numeric column: accuracy 0.75 without guidance, 0.92 at scale 10; on
    b = 2a + noise(0.2): MAE 0.201 -> 0.166 (0.16 is the noise floor). Scale 100 diverges."""
    abar = make_diffusion(model.cfg).arrays.alphas_cumprod
    return core_reconstruction_guidance(model, gt, keep, scale, abar)


def calls_per_row(opts: ImputeOptions, draws: bool = False) -> int:
    """Model calls per row (all samples; ``draws``: with --draws' chains too), for settled options."""
    if opts.conditional:
        return opts.samples * (opts.model.members + (DRAW_STEPS if draws else 0))  # each member's samples
    return schedule_summary(jump_schedule(opts.jump_params()))["unet_calls"] * opts.samples


def impute_table(table: Table, opts: ImputeOptions, progress: Optional[Progress] = None, model_path=None,
                 save_model=None, keep_draws: bool = False, fitted: Optional[tuple] = None) -> Imputed:
    """Train on ``table`` (or load ``model_path``, or use ``fitted``: (model, columns) from :func:`fit_table`),
    impute its missing cells, return the filled table. Ctrl-C while imputing raises :class:`Interrupted` with the
    trained model."""
    progress = progress or Progress()
    check_options(opts, model_path)
    set_threads(opts.threads)  # None: the free cores (runtime.threads)
    cols_here = infer_columns(table, opts.categorical, warn=lambda msg: progress.log(msg, "warning"))
    model, loaded, card = None, False, {}
    if fitted is not None:
        model, cols = fitted
    elif model_path is not None:
        model, cols, card = load_table_model(model_path)
    if model is not None:
        why = schema_difference(cols, table, cols_here)
        if why:
            raise TableError(f"{table.path}: does not fit the model {model_path}: {why}; train a new one (leave out --model)")
        cols = adopt_constants(cols, cols_here)
        loaded = True
    else:
        cols = cols_here
    # a copy: the caller's options stay as given; a loaded model brings its kind and config
    opts = opts.settled(model.cfg.kind if model is not None else None, rows=len(table.frame))
    if model is not None:
        if opts.conditional != (model.cfg.kind == "conditional"):
            raise TableError(f"{model_path}: a {model.cfg.kind} model, which --method {opts.method} cannot use; "
                             f"leave out --method (the model's kind chooses it)")
        opts.model = model.cfg
    check_options(opts)
    _warn_constants(table, cols, progress)
    model_card = _card_fields(table, opts, card if model_path is not None else None, model_path)
    if save_model is not None:
        card_text(cols, model_card)  # a value no card can hold is found now, not after training
    x, keep = encode(cell_values(table, cols), cols)
    unfilled = sum(int((~table.observed[:, j]).sum()) for j, c in enumerate(cols) if c.kind == "identifier")
    stats = {"rows": len(table.frame), "columns": len(cols), "missing": table.n_missing,
             "filled": table.n_missing - unfilled,
             "encoded_width": int(x.shape[1]), "samples": opts.samples, "seed": opts.seed, "method": opts.method,
             "model_calls_per_row": calls_per_row(opts, draws=keep_draws)}
    if opts.conditional:
        stats["members"] = opts.model.members
    else:
        stats["schedule"] = {k: opts.jump_params().as_dict()[k] for k in ("t_T", "jump_length", "jump_n_sample")}
        stats["guidance"] = opts.guidance
    t0 = time.perf_counter()
    need = x.shape[1] > 0 and not keep.all()
    if opts.conditional:
        model, decoded, drawn = _conditional(model, x, keep, cols, opts, need, loaded, keep_draws, progress, stats,
                                             model_card)
        values = decoded[0] if decoded else [np.zeros(len(x), np.int64)] * len(cols)
    else:
        rounds = 1 if loaded else opts.rounds  # a loaded model is used as it is
        if need:
            progress.plan(_phases(opts, len(x), rounds, loaded))
        model, samples = _rounds(model, x, keep, cols, opts, rounds if need else 0, loaded, progress, stats,
                                 model_card)
        drawn = [decode(s, cols) for s in samples] if samples else [[np.zeros(len(x), np.int64)] * len(cols)]
        values = combine(drawn, cols, opts.combine)
        drawn = drawn if samples else []
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    frame = filled_frame(table, cols, values)
    draws = [filled_frame(table, cols, d) for d in drawn] if keep_draws else []
    if save_model is not None:
        if model is None:
            raise TableError(f"{table.path}: nothing to train on (no missing cell or no column to model); "
                             "--save-model needs a table with missing cells")
        w, c = save_table_model(save_model, model, cols, model_card)
        stats["model"] = str(c)
    return Imputed(frame, draws, cols, stats, model)


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
    check_options(opts)
    set_threads(opts.threads)
    cols = infer_columns(table, opts.categorical, warn=lambda msg: progress.log(msg, "warning"))
    opts = opts.settled(None, rows=len(table.frame))
    check_options(opts)
    card = {"trained_on": str(table.path), "rows": len(table.frame), "train": dataclasses.asdict(opts.train)}
    x, keep = encode(cell_values(table, cols), cols)
    stats = {"rows": len(table.frame), "columns": len(cols), "encoded_width": int(x.shape[1]), "seed": opts.seed,
             "method": opts.method}
    if x.shape[1] == 0:
        return Fitted(None, cols, card, stats)
    t0 = time.perf_counter()
    if opts.conditional:
        progress.plan([("training", opts.train.steps * opts.model.members, 3.0 * min(opts.train.batch_size, len(x)))])
        model = _train_conditional(x, keep, cols, opts, progress, stats)
    else:
        progress.plan(_phases(opts, len(x), opts.rounds, False)[:-1])
        model, _ = _rounds(None, x, keep, cols, opts, opts.rounds, False, progress, stats, card, impute_last=False)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return Fitted(model, cols, card, stats)


def _conditional(model, x, keep, cols, opts: ImputeOptions, need: bool, loaded: bool, keep_draws: bool,
                 progress: Progress, stats: dict, model_card: dict):
    """The conditional model: train (unless loaded), then the point estimate (``samples`` calls at t = 1,
    combined in encoded space) and, for --draws, ``samples`` draws. Returns (model, [point values], [draws])."""
    if not need:
        return model, [], []
    rows, points = len(x), opts.samples * opts.model.members
    units = points + opts.samples * keep_draws  # a unit: one sample's pass over the rows (a draw's: DRAW_STEPS)
    steps = opts.train.steps * opts.model.members  # every member's, side by side where cores allow
    progress.plan(([] if loaded else [("training", steps, 3.0 * min(opts.train.batch_size, rows))])
                  + [("imputing", units, rows * (points + opts.samples * DRAW_STEPS * keep_draws) / units)])
    if not loaded:
        model = _train_conditional(x, keep, cols, opts, progress, stats)
    t_imp = time.perf_counter()
    progress.phase("imputing", units)
    clip = clip_range(cols)
    try:
        points = point_samples(model, x, keep, opts.samples, opts.seed, clip, on_sample=progress.advance)
        drawn = (draw_samples(model, x, keep, opts.samples, opts.seed, clip, on_sample=progress.advance)
                 if keep_draws else [])
    except KeyboardInterrupt:
        if loaded:
            raise
        raise Interrupted(model, cols, model_card) from None
    stats["impute_s"] = round(time.perf_counter() - t_imp, 3)
    # numbers: mean or median over the samples in encoded space (normal scores); categories: their mean
    # one-hot score, argmax on decoding
    point = np.median(points, 0) if opts.combine == "median" else points.mean(0)
    return model, [decode(point, cols)], [decode(d, cols) for d in drawn]


def _train_conditional(x, keep, cols, opts: ImputeOptions, progress: Progress, stats: dict):
    progress.phase("training", opts.train.steps * opts.model.members)
    t_train = time.perf_counter()
    trained = [0]  # steps reported so far (reports come every few steps, summed over the members)

    def on_step(step: int, total: int, loss: float) -> None:
        progress.advance(step - trained[0], loss=f"{loss:.4f}")
        trained[0] = step

    # the members train side by side on the threads' cores (the same weights as one after another)
    model = train_conditional(x, keep, column_groups(cols), opts.model, opts.train, on_step=on_step,
                              category_dims=category_dims(cols), workers=torch.get_num_threads())
    stats["train_s"] = round(time.perf_counter() - t_train, 3)
    return model


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


def _card_fields(table: Table, opts: ImputeOptions, loaded_card: Optional[dict], model_path) -> dict:
    """What a saved model's card says of its training: this table's, or a loaded model's own (saved again
    with --save-model, it was not trained here)."""
    if loaded_card is None:
        return {"trained_on": str(table.path), "rows": len(table.frame), "train": dataclasses.asdict(opts.train)}
    return {**{k: loaded_card[k] for k in ("trained_on", "rows", "train") if k in loaded_card},
            "copied_from": str(model_path)}


def _phases(opts: ImputeOptions, rows: int, rounds: int, loaded: bool) -> list[tuple[str, int, float]]:
    """The phases ahead with their units and each unit's cost in row-passes of the model (a training
    step: forward and backward over a batch, about 3 passes; a sampling step: one pass per row, 3
    with guidance, and none for an undo step)."""
    times = jump_schedule(opts.jump_params())
    calls = schedule_summary(times)["unet_calls"] / max(1, len(times) - 1)
    per_step = min(rows, BLOCK_ROWS) * calls * (3 if opts.guidance > 0 else 1)
    units = (len(times) - 1) * opts.samples * math.ceil(rows / BLOCK_ROWS)
    out = []
    for rnd in range(rounds):
        if not loaded:
            steps = opts.train.steps if rnd == 0 else max(1, opts.train.steps // 2)
            out.append((_phase_name("training", rnd, rounds), steps, 3.0 * min(opts.train.batch_size, rows)))
        out.append((_phase_name("imputing", rnd, rounds), units, per_step))
    return out


def _phase_name(what: str, rnd: int, rounds: int) -> str:
    return what if rounds == 1 else f"{what}, round {rnd + 1}/{rounds}"


def _rounds(model, x, keep, cols, opts: ImputeOptions, rounds: int, loaded: bool, progress: Progress, stats: dict,
            model_card: dict, impute_last: bool = True):
    """Train (unless loaded) and impute, ``rounds`` times (EM); returns (model, the last round's samples);
    ``impute_last`` False: the last round trains only (fit_table), and no samples come back."""
    fill = None
    samples: list[np.ndarray] = []
    for rnd in range(rounds):
        if not loaded:
            steps = opts.train.steps if rnd == 0 else max(1, opts.train.steps // 2)
            progress.phase(_phase_name("training", rnd, rounds), steps)
            settings = TrainSettings(**{**opts.train.__dict__, "steps": steps, "seed": opts.train.seed + rnd})
            t_train = time.perf_counter()
            model = train_table_model(x, keep, opts.model, settings, fill=fill, model=model,
                                      on_step=lambda s, total, loss: progress.advance(1, loss=f"{loss:.4f}"))
            stats["train_s"] = stats.get("train_s", 0.0) + time.perf_counter() - t_train
        if rnd == rounds - 1 and not impute_last:
            return model, []
        t_imp = time.perf_counter()
        n_calls = len(jump_schedule(opts.jump_params())) - 1
        progress.phase(_phase_name("imputing", rnd, rounds), n_calls * opts.samples * math.ceil(len(x) / BLOCK_ROWS))
        clip = clip_range(cols)
        try:
            samples = [sample_rows(model, x, keep, clip, opts, k, on_step=progress.advance) for k in range(opts.samples)]
        except KeyboardInterrupt:
            if loaded:
                raise
            raise Interrupted(model, cols, model_card) from None
        stats["impute_s"] = stats.get("impute_s", 0.0) + time.perf_counter() - t_imp
        fill = np.mean(samples, axis=0)  # the next round's stand-in for missing cells
    return model, samples


def predict_table(train: Table, test: Table, target: str, opts: ImputeOptions, progress=None, **kw) -> Imputed:
    """Prediction as imputation: the test rows' ``target`` is treated as missing, the model is
    trained on the training rows and the test rows' other cells together, and the test rows
    come back with their target filled."""
    import pandas as pd

    if target not in train.columns:
        raise TableError(f"{train.path}: no column '{target}' (--target); columns: {', '.join(train.columns)}")
    if train.fmt != test.fmt:
        raise TableError(f"{test.path}: give --predict in the same format as the training table ({train.fmt})")
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
    result = impute_table(both, opts, progress, **kw)
    rows = np.arange(len(train.frame), len(both.frame))
    result.frame = result.frame.iloc[rows].set_axis(test.frame.index)  # the test table's row names, if any
    result.draws = [d.iloc[rows].set_axis(test.frame.index) for d in result.draws]
    result.stats["predicted_rows"] = len(rows)
    unfilled = sum(int((~test_obs[:, j]).sum()) for j, c in enumerate(result.columns) if c.kind == "identifier")
    result.stats["filled"] = int((~test_obs).sum()) - unfilled  # the cells filled in the rows written out
    return result
