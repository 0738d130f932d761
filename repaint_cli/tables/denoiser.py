"""A small diffusion model per table: an MLP denoiser that fits any number of columns.

The denoiser predicts the noise (eps) of an encoded row at a diffusion time,
with fixed variance; it is trained on the table itself with a loss over the
observed cells only (a missing cell's input is a stand-in, see
``train_table_model``). Saved as safetensors (weights and each numeric
column's quantile map) beside a YAML card with the column schema.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..core.diffusion import Diffusion
from ..models.unet import timestep_embedding
from ..runtime.threads import one_thread
from .steps import adamw, conditional_steps, learning_rate, optimiser_step

CARD_FORMAT = "repaint-table-model"
EPS_STEPS = 3000  # the eps model's training steps when --train-steps is not given


# The two kinds of table model: "conditional" (conditional.py, the default: predicts hidden cells from given
# ones) and "eps" (this file: an unconditional noise predictor, sampled with RePaint). Cards saved before
# the conditional model existed name no kind: they are "eps".
_DEFAULTS = {"conditional": {"width": 128, "dropout": 0.4, "lr": 3e-3, "members": 2, "gaussian_base": True},
             "eps": {"width": 256, "dropout": 0.0, "lr": 1e-3, "members": 1, "gaussian_base": False}}  # RESULTS.md


@dataclass
class TableModelConfig:
    width: Optional[int] = None  # None: the kind's (128 conditional, 256 eps)
    blocks: Optional[int] = None  # None: 3
    time_dim: int = 64
    diffusion_steps: int = 1000
    noise_schedule: str = "cosine"
    kind: str = "eps"
    dropout: Optional[float] = None  # None: the kind's (0.4 conditional, 0 eps)
    members: Optional[int] = None  # models trained apart (each the steps) and averaged; None: the kind's
    # (2 conditional, 1 eps). A card saved before members existed holds one model (load_table_model)
    gaussian_base: Optional[bool] = None  # conditional: the first layer also reads a fitted Gaussian's conditional
    # of every cell (conditional.py); None: the kind's (on for conditional). A card saved before it existed has none

    def settled(self, kind: Optional[str] = None) -> "TableModelConfig":
        """This config for ``kind`` (default its own), every None replaced by that kind's default."""
        kind = kind or self.kind
        d = _DEFAULTS[kind]
        return replace(self, kind=kind, width=self.width or d["width"], blocks=3 if self.blocks is None else self.blocks,
                       dropout=d["dropout"] if self.dropout is None else self.dropout,
                       members=self.members or d["members"],
                       gaussian_base=d["gaussian_base"] if self.gaussian_base is None else self.gaussian_base)


@dataclass
class TrainSettings:
    steps: Optional[int] = None  # None: conditional_steps(rows) for the conditional model (steps.py), 3,000 eps
    batch_size: int = 256
    lr: Optional[float] = None  # None: the model kind's (3e-3 conditional, 1e-3 eps)
    warmup: int = 100
    seed: int = 0
    hide_max: Optional[float] = None  # conditional: a training row hides a share U(0, hide_max) of its observed
    # cells; None: min(1, HIDE_COLUMNS / the table's columns) (conditional.py)
    point_share: float = 0.8  # conditional: training rows drawn at t = 1, where the point estimate is read
    l1_at_point: bool = True  # conditional: L1 on those rows (the conditional median), MSE on the others
    l1_on_categories: bool = False  # conditional: that L1 on categories' one-hot scores too (measured: MSE
    # there kept MAE and raised iris' class accuracy at MCAR30 from 0.88 to 0.92 over 3 seeds)

    def settled(self, kind: str, rows: Optional[int] = None) -> "TrainSettings":
        """Every None replaced by ``kind``'s default; the conditional model's steps need the table's ``rows``
        (left None without them)."""
        steps = self.steps
        if steps is None:
            steps = EPS_STEPS if kind == "eps" else (None if rows is None else conditional_steps(rows, self.batch_size))
        return replace(self, lr=self.lr or _DEFAULTS[kind]["lr"], steps=steps)


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, h, temb):
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h) + temb)))


class TableDenoiser(nn.Module):
    """eps(x_t, t) for rows of ``dim`` encoded values."""

    def __init__(self, dim: int, cfg: TableModelConfig, seed: int = 0):
        super().__init__()
        self.dim, self.cfg = dim, cfg
        with torch.random.fork_rng(devices=[]):  # the layers' own init draws from the global RNG: undone below
            self.inp = nn.Linear(dim, cfg.width)
            self.time = nn.Sequential(nn.Linear(cfg.time_dim, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
            self.blocks = nn.ModuleList(ResBlock(cfg.width) for _ in range(cfg.blocks))
            self.out = nn.Sequential(nn.LayerNorm(cfg.width), nn.SiLU(), nn.Linear(cfg.width, dim))
        self._init_weights(torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def _init_weights(self, gen: torch.Generator) -> None:
        """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from a local generator
        (a library must not reseed or consume the caller's global RNG)."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                bound = 1 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
        nn.init.zeros_(self.out[-1].weight)  # starts by predicting zero noise
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, t):
        if len(t) > 1 and bool((t == t[0]).all()):  # sampling: one time for the block, embedded once
            temb = self.time(timestep_embedding(t[:1], self.cfg.time_dim)).expand(len(t), -1)
        else:
            temb = self.time(timestep_embedding(t, self.cfg.time_dim))
        h = self.inp(x) + temb
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


def build_model(dim: int, cfg: TableModelConfig, seed: int = 0) -> nn.Module:
    """A fresh model of ``cfg.kind`` (settled) for rows of ``dim`` encoded values."""
    if cfg.kind == "conditional":
        from .conditional import ConditionalDenoiser, ConditionalEnsemble

        if cfg.members > 1:
            return ConditionalEnsemble([ConditionalDenoiser(dim, cfg) for _ in range(cfg.members)])
        return ConditionalDenoiser(dim, cfg, seed=seed)
    return TableDenoiser(dim, cfg, seed=seed)


def make_diffusion(cfg: TableModelConfig, respacing="", clip_x0=None, fixed_variance: str = "large") -> Diffusion:
    """The diffusion the table models use: eps prediction, a fixed variance ('large': beta, or
    'small': the posterior's; training does not depend on it), x0 not clipped unless ``clip_x0``
    gives a bound (sampling gives one per encoded column: the data's range)."""
    return Diffusion.create(cfg.diffusion_steps, cfg.noise_schedule, respacing, learn_sigma=False, clip_x0=clip_x0,
                            fixed_variance=fixed_variance)


def train_table_model(x: np.ndarray, keep: np.ndarray, cfg: TableModelConfig, settings: TrainSettings,
                      fill: Optional[np.ndarray] = None, model: Optional[TableDenoiser] = None,
                      on_step: Optional[Callable[[int, int, float], None]] = None) -> TableDenoiser:
    """Train (or go on training ``model``) on encoded rows ``x`` whose kept cells are observed.

    The loss is the eps MSE over observed cells only. A missing cell still needs an
    input value: ``fill`` (an earlier imputation, EM style) where given, else a fresh
    draw per step from the same column's observed cells (hot deck), so the model never
    learns a constant stand-in as if it were data.

    Training runs on one thread whatever torch's setting: the weight gradients' sums over the
    batch are split by thread, so two thread counts gave two models (and two tables).
    """
    cfg = cfg.settled("eps")
    settings = settings.settled("eps")
    with one_thread():
        return _train(x, keep, cfg, settings, fill, model, on_step)


def _train(x, keep, cfg: TableModelConfig, settings: TrainSettings, fill, model, on_step) -> TableDenoiser:
    gen = torch.Generator().manual_seed(settings.seed)
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    K = torch.from_numpy(np.ascontiguousarray(keep))
    n, dim = X.shape
    if model is None:
        model = TableDenoiser(dim, cfg, seed=settings.seed)
    model.train()
    diffusion = make_diffusion(cfg)
    hot_deck = _hot_deck_sources(keep) if fill is None else None
    F = torch.from_numpy(np.ascontiguousarray(fill, dtype=np.float32)) if fill is not None else None
    opt = adamw(model, settings.lr)
    batch = min(settings.batch_size, n)
    for step in range(settings.steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        x0, k = X[idx], K[idx]
        if F is not None:
            x0 = torch.where(k, x0, F[idx])
        elif hot_deck:
            x0 = _hot_deck(x0, k, X, hot_deck, gen)
        t = torch.randint(0, diffusion.num_steps, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        eps = model(diffusion.q_sample(x0, t, noise), t)
        loss = (((eps - noise) ** 2) * k).sum() / k.sum().clamp(min=1)
        optimiser_step(model, opt, loss, learning_rate(settings, step))
        if on_step is not None:
            on_step(step + 1, settings.steps, loss.item())
    model.eval()
    return model


def _hot_deck_sources(keep: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per group of encoded dimensions missing together (a column): its dims and its observed rows."""
    groups: dict[bytes, list[int]] = {}
    for d in range(keep.shape[1]):
        if not keep[:, d].all():
            groups.setdefault(keep[:, d].tobytes(), []).append(d)
    return [(torch.tensor(dims), torch.from_numpy(np.flatnonzero(keep[:, dims[0]]))) for dims in groups.values()]


def _hot_deck(x0, k, X, sources, gen):
    x0 = x0.clone()
    for dims, rows in sources:
        donors = X[rows[torch.randint(0, len(rows), (len(x0),), generator=gen)]][:, dims]
        x0[:, dims] = torch.where(k[:, dims], x0[:, dims], donors)
    return x0


# --- saving and loading ------------------------------------------------------------------------

def model_paths(path) -> tuple[Path, Path]:
    """(PATH.safetensors, PATH.yaml) for a --save-model PATH (given with or without either suffix)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".yaml") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".yaml")


def save_table_model(path, model: TableDenoiser, columns, extra: dict) -> tuple[Path, Path]:
    """PATH.safetensors (weights, quantile maps) and PATH.yaml (card: schema, sizes); both atomic."""
    from safetensors.torch import save_file

    from ..files import atomic_paths

    weights, card = model_paths(path)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for col in columns:
        if col.numeric:
            tensors[f"column.{col.name}.values"] = torch.from_numpy(np.asarray(col.values, np.float64))
            tensors[f"column.{col.name}.scores"] = torch.from_numpy(np.asarray(col.scores, np.float64))
    body = card_text(columns, {"weights": weights.name, "dim": model.dim, "model": asdict(model.cfg), **extra})
    with atomic_paths(weights, card, option="--save-model") as (tmp_weights, tmp_card):
        # both written in full before either is renamed into place: both or neither
        save_file(tensors, str(tmp_weights))
        tmp_card.write_text(body, encoding="utf-8")
    return weights, card


def card_text(columns, fields: dict) -> str:
    """The YAML card; raises TableError naming a column whose values YAML cannot hold (found
    before training: the card is made from the columns alone)."""
    import yaml

    from .codec import TableError

    for col in columns:
        try:
            yaml.safe_dump(col.to_card())
        except yaml.YAMLError as e:
            raise TableError(f"column '{col.name}': its values cannot go into a model card ({_first_line(e)}); "
                             "leave out --save-model, or convert the column to text") from None
    return yaml.safe_dump({"format": CARD_FORMAT, **fields, "columns": [c.to_card() for c in columns]},
                          sort_keys=False, allow_unicode=True)


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def load_table_model(path):
    """(model, columns, card) from a card or weights path written by :func:`save_table_model`."""
    import yaml
    from safetensors.torch import load_file

    from .codec import Column, TableError

    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".yaml") else path
    card_path = base.with_name(base.name + ".yaml")
    if not card_path.is_file():
        raise TableError(f"{path}: no table model card ({card_path.name}); give the path --save-model wrote")
    try:
        card = yaml.safe_load(card_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        card = None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or "weights" not in card:
        raise TableError(f"{card_path}: not a table model card (format: {CARD_FORMAT} expected)")
    weights = card_path.with_name(str(card["weights"]))
    if not weights.is_file():
        raise TableError(f"{weights}: no such file, but the card {card_path.name} names it; "
                         "copy the .safetensors beside the card, or train a new model (leave out --model)")
    try:
        tensors = load_file(str(weights))
        arrays = {k[len("column."):]: v.numpy() for k, v in tensors.items() if k.startswith("column.")}
        columns = [Column.from_card(d, arrays) for d in card["columns"]]
        model = build_model(int(card["dim"]), TableModelConfig(**{"members": 1, "gaussian_base": False, **card["model"]}).settled())
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except Exception as e:  # a truncated file, another model's weights, a card edited by hand
        raise TableError(f"{weights}: not the weights of {card_path.name} ({_first_line(e)}); "
                         "give the files --save-model wrote together, or train a new model") from None
    model.eval()
    return model, columns, card
