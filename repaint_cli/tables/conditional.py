"""The tables' default imputer: a denoiser trained for exactly the conditional that imputation asks.

Why not RePaint's sampling-time conditioning (``--method repaint``): a row has a handful of cells,
not an image's many neighbours, so freshly noised copies of the observed cells couple weakly to the
missing ones; on four tables it lost to MissForest, at a model call per step of its schedule per row
and sample (benchmarks/RESULTS.md#tables-against-classic-imputers, and the research report that
benchmarks/RESULTS.md#tables-hidden-share links). Here, as in CSDI and ReMasker, training hides a
random share of each row's *observed* cells and learns to predict them from the rest:

- Each training row hides a share r ~ U(0, min(1, 14 / columns)) of its observed columns (a one-hot
  block as one; ``HIDE_COLUMNS``).
  The denoiser sees the visible cells, the mask, and the hidden cells noised to a time t; the
  loss is over the hidden cells only. Cells missing in the data are neither seen nor scored: they
  hold a random donor's value (hot deck), noised like the targets.
- The first layer reads ``[x * c, x_t * (1 - c), c]`` (c = 1 where a cell is given): separate
  weights for a given value and for a noisy one (the largest single gain measured:
  benchmarks/RESULTS.md#tables-hidden-share, its research report).
- The first layer also reads, for every cell, what a Gaussian fitted to the encoded table predicts
  from the given cells (its linear conditional; a Gaussian copula, as numbers are normal scores).
  The net learns what the linear relations miss instead of the relations themselves: a near-linear
  table such as breast_cancer gains most. Off (``gaussian_base``) past ``BASE_MAX_DIM`` values.
- The net predicts x0. t ~ U(0, 1) on a cosine schedule, but most rows are drawn at t = 1, where
  the point estimate is read, with an L1 loss there (its minimiser is the conditional median,
  which MAE rewards); the other rows keep MSE, so that sampling has a proper x0 predictor.
- Two models are trained apart, each on its own seed, and their samples averaged
  (:class:`ConditionalEnsemble`): a cell's error under the mean of two predictions is at most the
  mean of their errors, and on a small table one model's errors are largely its own. They train
  side by side, one process per core (runtime/apart.py), so on two cores they cost the wall time of one.
- Imputing: the point estimate is one call at t = 1 per sample and member, each with fresh noise in
  the missing cells, averaged over them all (:func:`point_samples`). Draws for multiple imputation
  run a short DDPM chain from t = 1 (:func:`draw_samples`).

Everything runs on one thread: a thread count must not change a table (the weight gradients'
sums, and a GEMM's, are split by thread). Noise is keyed per row (:func:`row_keys`: the seed and the row's
label) and sample, as the RePaint path's is, so a seed gives the same table on any machine and a row the
same cells in any partition of its table.
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..core.diffusion import clip_to_bound
from ..core.noise import gaussian, image_key
from ..runtime.apart import can_fork, run_apart
from ..runtime.threads import one_thread
from .steps import adamw, learning_rate, optimiser_step

BLOCK_ROWS = 4096  # rows per imputation block (memory only: each row's noise is its own)
# A training row hides U(0, min(1, HIDE_COLUMNS / columns)) of its observed cells: in a wide table, hiding up to all
# of them trains mostly on rows far sparser than the ones imputed. A cap helped breast_cancer (31 columns) and hurt
# wine (14 columns), so tables of up to 14 columns keep U(0, 1) (benchmarks/RESULTS.md#tables-hidden-share).
HIDE_COLUMNS = 14
# The Gaussian base (cfg.gaussian_base): the model also reads the linear conditional of a Gaussian fitted to the
# encoded table (a Gaussian copula: numbers are normal scores) for every cell. Its covariance is pairwise over the
# observed cells, shrunk toward its diagonal by the share of SHRINKS that predicts held-out observed cells best
# (tables differ in the shrink they want: benchmarks/RESULTS.md#tables-gaussian-solve), and made positive definite;
# GAUSSIAN_RIDGE is added to the given cells' variances in each solve. The model with and without the base:
# benchmarks/RESULTS.md#tables-gaussian-base.
SHRINKS, GAUSSIAN_RIDGE = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5), 1e-3
HOLD_OUT, HOLD_OUT_ROWS = 0.1, 2000  # the shrink's choice: a tenth of the observed cells of up to 2,000 rows
BASE_MAX_DIM = 96  # wider encoded rows train without the base: its solve per row grows as the cube of the width
BASE_ELEMENTS = 1 << 22  # the base's solves run in chunks of rows of at most this many matrix elements
# DDPM steps of a draw (--draws); a chain is no better than one call as a point estimate, so only draws use it
# (benchmarks/RESULTS.md#tables-hidden-share)
DRAW_STEPS = 10


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal) at continuous t in [0, 1]; alpha_bar(1) = 0: pure noise."""
    return torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def _time_features(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
    angle = (t[:, None] * 1000.0) * freqs[None]
    return torch.cat([torch.cos(angle), torch.sin(angle)], -1)


class ConditionalDenoiser(nn.Module):
    """x0 of a row's hidden cells from its given cells: ``forward(v, c, t)``, ``v`` holding the given values
    where ``c`` is 1 and noisy values x_t elsewhere."""

    def __init__(self, dim: int, cfg, seed: int = 0):
        super().__init__()
        w = cfg.width
        self.dim, self.cfg = dim, cfg
        with torch.random.fork_rng(devices=[]):  # a library leaves the caller's global RNG alone
            torch.manual_seed(seed)
            self.inp = nn.Linear((4 if cfg.gaussian_base else 3) * dim, w)
            self.time = nn.Sequential(nn.Linear(32, w), nn.SiLU(), nn.Linear(w, w))
            self.norms = nn.ModuleList(nn.LayerNorm(w) for _ in range(cfg.blocks))
            self.fc1 = nn.ModuleList(nn.Linear(w, 2 * w) for _ in range(cfg.blocks))
            self.fc2 = nn.ModuleList(nn.Linear(2 * w, w) for _ in range(cfg.blocks))
            self.out = nn.Sequential(nn.LayerNorm(w), nn.SiLU(), nn.Linear(w, dim))
        self.dropout = cfg.dropout  # the cure for over-fitting a small table
        if cfg.gaussian_base:  # fitted (fit_gaussian) before training; saved with the weights
            self.register_buffer("base_mean", torch.zeros(dim))
            self.register_buffer("base_cov", torch.eye(dim))
        else:
            self.base_mean = self.base_cov = None

    def forward(self, v: torch.Tensor, c: torch.Tensor, t: torch.Tensor,
                base: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``base``: :meth:`gaussian` of these rows if already computed (imputing reuses it for every call)."""
        te = self.time(_time_features(t))
        inputs = [v * c, v * (1 - c), c]
        if self.base_cov is not None:  # what a Gaussian would say of every cell, given these
            inputs.append(self.gaussian(v, c) if base is None else base)
        h = self.inp(torch.cat(inputs, -1)) + te
        for norm, fc1, fc2 in zip(self.norms, self.fc1, self.fc2):
            h = h + fc2(_dropout(nn.functional.silu(fc1(norm(h) + te)), self.dropout, self.training))
        return self.out(h)

    def gaussian(self, v: torch.Tensor, c: torch.Tensor) -> Optional[torch.Tensor]:
        """The base's conditional of every cell given the cells where ``c`` is 1 (None without a base): it reads
        only those, so it is the same for every noise in the others."""
        return None if self.base_cov is None else gaussian_conditional(self.base_mean, self.base_cov, v, c)


def choose_shrink(x: torch.Tensor, keep: torch.Tensor, group_of: Optional[torch.Tensor] = None,
                  seed: int = 0) -> float:
    """The one of :data:`SHRINKS` whose Gaussian best predicts (L1) a held-out tenth of the observed cells of
    encoded rows ``x`` (whole columns: ``group_of`` maps each encoded dimension to its column)."""
    n, dim = x.shape
    group_of = torch.arange(dim) if group_of is None else group_of
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n, generator=gen)[:HOLD_OUT_ROWS]
    held = (torch.rand(len(rows), int(group_of.max()) + 1 if dim else 0, generator=gen) < HOLD_OUT)[:, group_of]
    held &= keep[rows]
    if not bool(held.any()):
        return SHRINKS[1]
    fit_keep = keep.clone()
    fit_keep[rows] &= ~held
    errors = []
    for shrink in SHRINKS:
        mean, cov = fit_gaussian(x, fit_keep, shrink)
        guess = gaussian_conditional(mean, cov, x[rows], fit_keep[rows].float())
        errors.append(float((guess - x[rows]).abs()[held].mean()))
    return SHRINKS[int(np.argmin(errors))]


def fit_gaussian(x: torch.Tensor, keep: torch.Tensor, shrink: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of encoded rows ``x`` over their ``keep`` cells: the covariance pairwise (each pair over
    the rows holding both), shrunk toward its diagonal by ``shrink``, its eigenvalues held above a thousandth of the
    largest so that every conditional is defined. Float64 inside: the sums run over up to millions of cells."""
    k = keep.double()
    x = x.double()
    mean = (x * k).sum(0) / k.sum(0).clamp(min=1)
    centred = (x - mean) * k
    cov = (centred.T @ centred) / (k.T @ k).clamp(min=1)
    cov = (1 - shrink) * cov + shrink * torch.diag(torch.diag(cov))
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp(min=1e-3 * max(float(values.max()), 1e-6))
    return mean.float(), ((vectors * values) @ vectors.T).float()


@torch.no_grad()
def gaussian_conditional(mean: torch.Tensor, cov: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """E[x | the cells where ``c`` is 1 hold ``v``] under N(mean, cov), for every cell (a given cell: about its
    value). One solve per row: the given block of ``cov`` (plus the ridge), the identity elsewhere."""
    dim = len(mean)
    out = torch.empty_like(v)
    eye = torch.eye(dim)
    chunk = max(1, BASE_ELEMENTS // max(1, dim * dim))
    for start in range(0, len(v), chunk):
        cb, vb = c[start:start + chunk], v[start:start + chunk]
        both = cb[:, :, None] * cb[:, None, :]
        system = both * (cov + GAUSSIAN_RIDGE * eye) + (1 - both) * eye
        # positive definite by construction (fit_gaussian): Cholesky, faster than a general solve
        # (benchmarks/RESULTS.md#tables-gaussian-solve)
        weights = torch.cholesky_solve((cb * (vb - mean)).unsqueeze(-1), torch.linalg.cholesky(system)).squeeze(-1)
        out[start:start + chunk] = mean + weights @ cov
    return out


def _dropout(h: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout with its mask drawn by ``torch.rand`` (the global RNG, as nn.Dropout): on the CPU this is
    much faster than nn.Dropout's ``bernoulli_``, which took a large share of a training step
    (benchmarks/RESULTS.md#tables-training-step)."""
    if not training or p == 0:
        return h
    return h * (torch.rand(h.shape) >= p) * (1 / (1 - p))


class ConditionalEnsemble(nn.Module):
    """Members trained apart (:func:`train_conditional`), sampled alike; their samples are averaged."""

    def __init__(self, members: list[ConditionalDenoiser]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.dim, self.cfg = members[0].dim, members[0].cfg


def member_seed(seed: int, member: int) -> int:
    """Member 0 trains on the seed itself (one member is the single model, bit for bit); the others far from
    any seed a user picks next (seed + 1 must not share a member with seed)."""
    return seed + 1_000_003 * member


def _members(model) -> list[ConditionalDenoiser]:
    return list(model.members) if isinstance(model, ConditionalEnsemble) else [model]


def category_dims(columns) -> np.ndarray:
    """(encoded width,) bool: True for the dimensions of categorical columns."""
    return np.concatenate([np.full(col.width, col.kind == "category") for col in columns] or [np.zeros(0, bool)])


def column_groups(columns) -> list[list[int]]:
    """The encoded dimensions of each modelled column (a categorical one-hot block is one group)."""
    groups, at = [], 0
    for col in columns:
        if col.width and col.kind in ("float", "int", "date", "category"):
            groups.append(list(range(at, at + col.width)))
        at += col.width
    return groups


def group_index(groups: list[list[int]], dim: int) -> torch.Tensor:
    """(dim,) the column (index into ``groups``, from :func:`column_groups`) of each encoded dimension."""
    group_of = torch.zeros(dim, dtype=torch.long)
    for k, g in enumerate(groups):
        group_of[g] = k
    return group_of


def train_conditional(x: np.ndarray, keep: np.ndarray, groups: list[list[int]], cfg, settings,
                      on_step: Optional[Callable[[int, int, float], None]] = None,
                      category_dims: Optional[np.ndarray] = None, workers: int = 1):
    """Train on encoded rows ``x`` whose ``keep`` cells are observed; ``groups`` from :func:`column_groups`;
    ``cfg`` a ``TableModelConfig``, ``settings`` ``TrainSettings`` (denoiser.py). ``cfg.members`` models of
    ``settings.steps`` each (a :class:`ConditionalEnsemble`; one member: a ConditionalDenoiser), trained side by
    side in up to ``workers`` processes (runtime/apart.py), the same weights as in turn; ``on_step(step, total, loss)``
    counts the steps of all members."""
    cfg = cfg.settled("conditional")
    if cfg.gaussian_base and x.shape[1] > BASE_MAX_DIM:  # the card then says so
        cfg = replace(cfg, gaussian_base=False)
    settings = settings.settled("conditional", rows=len(x))
    plans = [replace(settings, seed=member_seed(settings.seed, k)) for k in range(cfg.members)]
    done = [0] * len(plans)

    def progress(k: int, step: int, loss: float) -> None:
        done[k] = step
        if on_step is not None:
            on_step(sum(done), settings.steps * len(plans), loss)

    jobs = [partial(_train_member, x, keep, groups, cfg, own, category_dims) for own in plans]
    with one_thread():
        if workers > 1 and len(jobs) > 1 and can_fork():
            states = run_apart(jobs, workers, progress)
        else:
            states = [job(partial(progress, k)) for k, job in enumerate(jobs)]
    members = []
    for own, state in zip(plans, states):
        member = ConditionalDenoiser(x.shape[1], cfg, seed=own.seed)
        member.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})
        members.append(member.eval())
    return members[0] if len(members) == 1 else ConditionalEnsemble(members)


def _train_member(x, keep, groups, cfg, own, category_dims, report) -> dict[str, np.ndarray]:
    """One member's weights (on the one thread train_conditional set, inherited by a forked child; its own
    seed), ``report(step, loss)`` every tenth step and the last."""
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seeded here, the caller's kept
        torch.manual_seed(own.seed)
        model = _train(x, keep, groups, cfg, own, lambda step, total, loss: (
            report(step, loss) if step % 10 == 0 or step == total else None), category_dims)
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}


def _donor_table(observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column, the rows where it is observed, padded into one table (for a vectorised hot deck)."""
    donors = [torch.nonzero(observed[:, k]).flatten() for k in range(observed.shape[1])]
    counts = torch.tensor([max(1, len(d)) for d in donors])
    table = torch.zeros(len(donors), int(counts.max()), dtype=torch.long)
    for k, d in enumerate(donors):
        table[k, :len(d)] = d
    return table, counts


def _train(x, keep, groups, cfg, s, on_step, category_dims) -> ConditionalDenoiser:
    gen = torch.Generator().manual_seed(s.seed)
    X = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    K = torch.from_numpy(np.ascontiguousarray(keep, bool))
    n, dim = X.shape
    group_of = group_index(groups, dim)
    n_groups = len(groups)
    hide_max = s.hide_max if s.hide_max is not None else min(1.0, HIDE_COLUMNS / max(1, n_groups))
    observed = K[:, [g[0] for g in groups]]  # (rows, columns)
    donors, n_donors = _donor_table(observed)
    model = ConditionalDenoiser(dim, cfg, seed=s.seed)
    if model.base_cov is not None:  # fitted on every row; out-of-fold Gaussians for the training rows (as
        # stacking does) measured no better: benchmarks/RESULTS.md#tables-gaussian-base
        model.base_mean, model.base_cov = fit_gaussian(X, K, choose_shrink(X, K, group_of, seed=s.seed))
    opt = adamw(model, s.lr)
    batch = s.batch_size
    l1_dims = torch.ones(dim, dtype=torch.bool)  # where the t = 1 rows take L1
    if category_dims is not None and not s.l1_on_categories:
        l1_dims &= ~torch.from_numpy(np.asarray(category_dims, bool))
    column_index, dim_index = torch.arange(n_groups)[None], torch.arange(dim)[None]
    model.train()
    for step in range(s.steps):
        rows = torch.randint(0, n, (batch,), generator=gen)
        x0, seen = X[rows], observed[rows]
        if not bool(seen.all()):  # a missing cell holds a donor's value, never a constant stand-in
            u = torch.rand(batch, n_groups, generator=gen)
            donor = donors[column_index, (u * n_donors[None]).long().clamp(max=donors.shape[1] - 1)]
            x0 = torch.where(seen[:, group_of], x0, X[donor[:, group_of], dim_index])
        share = torch.rand(batch, 1, generator=gen) * hide_max
        hidden = seen & (torch.rand(batch, n_groups, generator=gen) < share)
        given = (seen & ~hidden)[:, group_of]
        target = hidden[:, group_of].float()
        at_point = torch.rand(batch, generator=gen) < s.point_share
        t = torch.where(at_point, torch.ones(batch), torch.rand(batch, generator=gen))
        a = alpha_bar(t)[:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(batch, dim, generator=gen)
        out = model(torch.where(given, x0, xt), given.float(), t)
        err = (out - x0) ** 2
        if s.l1_at_point:
            err = torch.where(at_point[:, None] & l1_dims[None], (out - x0).abs(), err)
        loss = (err * target).sum() / target.sum().clamp(min=1)
        optimiser_step(model, opt, loss, learning_rate(s, step))
        if on_step is not None:
            on_step(step + 1, s.steps, loss.item())
    model.eval()
    return model


def row_keys(labels, seed: int) -> np.ndarray:
    """(rows, 2) int64 noise keys, one per row, from the seed and the row's label (its index label in a DataFrame,
    its number in a file): a row draws the same noise in the whole table and in any part of it."""
    return np.array([image_key(seed, f"table-row/{label}") for label in labels], np.int64).reshape(-1, 2)


def stream_keys(keys: torch.Tensor, stream: str, sample: int) -> torch.Tensor:
    """The rows' keys for one purpose (``stream``: point, draw, repaint) and sample: each a noise of its own."""
    return keys ^ torch.tensor(image_key(sample, f"table-{stream}"), dtype=torch.int64)


def row_noise(keys: torch.Tensor, draw, shape: tuple, index=None) -> torch.Tensor:
    """A noise source (``core.sampler.Conditioning``): draw ``draw`` of shape (rows, ...), one key per row, from
    the core's counter-based normals (the same bits on any machine, in one pass over the rows)."""
    return gaussian(keys, torch.as_tensor(draw, dtype=torch.int64), tuple(shape[1:]), index)


def _blocks(x: np.ndarray, keep: np.ndarray):
    for start in range(0, len(x), BLOCK_ROWS):
        yield (start, torch.from_numpy(np.ascontiguousarray(x[start:start + BLOCK_ROWS], np.float32)),
               torch.from_numpy(np.ascontiguousarray(keep[start:start + BLOCK_ROWS], bool)))


@torch.no_grad()
def point_samples(model, x: np.ndarray, keep: np.ndarray, samples: int, seed: int,
                  clip: Optional[np.ndarray] = None, on_sample: Optional[Callable[[], None]] = None,
                  keys: Optional[np.ndarray] = None) -> np.ndarray:
    """(members x samples, rows, width) encoded imputations, ``samples`` model calls of each member at t = 1
    (the conditional median given fresh noise in the missing cells); observed cells as given. Average them for
    one table. ``keys``: the rows' noise keys (:func:`row_keys`; by default of their numbers and ``seed``)."""
    members = _members(model)
    return _run(members, [k for k in range(len(members)) for _ in range(samples)], x, keep,
                _keys(keys, x, seed), "point", clip, on_sample, steps=1)


@torch.no_grad()
def draw_samples(model, x: np.ndarray, keep: np.ndarray, samples: int, seed: int,
                 clip: Optional[np.ndarray] = None, on_sample: Optional[Callable[[], None]] = None,
                 steps: int = DRAW_STEPS, keys: Optional[np.ndarray] = None) -> np.ndarray:
    """(samples, rows, width) draws for multiple imputation: an ancestral (DDPM) chain of ``steps`` calls
    from t = 1, each a sample of the missing cells given the observed ones; the members take turns."""
    members = _members(model)
    return _run(members, [k % len(members) for k in range(samples)], x, keep, _keys(keys, x, seed), "draw", clip,
                on_sample, steps=steps)


def _keys(keys: Optional[np.ndarray], x: np.ndarray, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(keys if keys is not None else row_keys(range(len(x)), seed), np.int64))


def _run(members, member_of: list[int], x, keep, keys: torch.Tensor, stream: str, clip, on_sample,
         steps: int) -> np.ndarray:
    """Sample k by ``members[member_of[k]]``, its noise keyed by each row's key, ``stream`` and k."""
    limit = torch.from_numpy(np.asarray(clip, np.float32)) if clip is not None else None
    out = np.empty((len(member_of),) + tuple(x.shape), np.float32)
    bases = {}  # (member, block): its Gaussian base, the same for every sample (smaller than out)
    with one_thread():  # the same table at any --threads
        for k, m in enumerate(member_of):
            for start, xb, kb in _blocks(x, keep):
                if (m, start) not in bases:
                    bases[m, start] = members[m].gaussian(xb, kb.float())
                own = stream_keys(keys[start:start + len(xb)], stream, k)
                x0 = _chain(members[m], xb, kb, limit, steps, lambda draw, shape: row_noise(own, draw, shape),
                            bases[m, start])
                out[k, start:start + len(xb)] = torch.where(kb, xb, x0).numpy()
            if on_sample is not None:
                on_sample()
    return out


def _chain(model, X, K, limit, steps: int, noise, base=None) -> torch.Tensor:
    """x0 after ``steps`` calls from t = 1 (one call: the point estimate); ``base``: ``model.gaussian`` of the
    rows, which reads their given cells only, so one for every call and sample."""
    n, c = len(X), K.float()
    ts = torch.linspace(1, 0, steps + 1)
    xt = noise(0, X.shape)
    x0 = xt
    for i in range(steps):
        x0 = clip_to_bound(model(torch.where(K, X, xt), c, ts[i].expand(n), base=base), limit)
        if i == steps - 1:
            break
        a, a_next = alpha_bar(ts[i]), alpha_bar(ts[i + 1])
        eps = (xt - a.sqrt() * x0) / (1 - a).sqrt().clamp(min=1e-4)
        sigma = ((1 - a_next) / (1 - a) * (1 - a / a_next)).clamp(min=0).sqrt()
        xt = a_next.sqrt() * x0 + (1 - a_next - sigma ** 2).clamp(min=0).sqrt() * eps + sigma * noise(i + 1, X.shape)
    return x0
