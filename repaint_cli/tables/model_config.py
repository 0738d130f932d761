"""What a table model is and how it trains: the settings both kinds share (``conditional.py``, the default,
and the eps denoiser of ``denoiser.py``), each None settled to its kind's default. Standard library only,
so that options can be settled and checked before torch is imported."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

EPS_STEPS = 3000  # the eps model's training steps when --train-steps is not given

# The conditional model's steps per member when --train-steps is not given: about PASSES passes over the rows
# (batches of 256), between STEPS_MIN and STEPS_MAX. With the Gaussian base, tables of up to about 1,000 rows gain
# nothing from more than 1,500 steps (breast_cancer and diabetes over-fit at 3,000; anes96, 944 rows, is within
# its seeds' spread) while fair (6,366 rows) still gains up to 3,000 (benchmarks/RESULTS.md#tables-steps-rule).
PASSES, STEPS_MIN, STEPS_MAX = 400, 1500, 3000


def conditional_steps(rows: int, batch_size: int = 256) -> int:
    """Training steps per member for a table of ``rows`` rows (a multiple of 100): 1,500 up to 991 rows,
    3,000 from 1,888, in between about 400 passes over the rows."""
    steps = round(PASSES * rows / batch_size / 100) * 100
    return int(min(STEPS_MAX, max(STEPS_MIN, steps)))


# The two kinds of table model: "conditional" (conditional.py, the default: predicts hidden cells from given
# ones) and "eps" (denoiser.py: an unconditional noise predictor, sampled with RePaint). Cards saved before
# the conditional model existed name no kind: they are "eps".
_DEFAULTS = {"conditional": {"width": 128, "dropout": 0.4, "lr": 3e-3, "members": 2, "gaussian_base": True},
             "eps": {"width": 256, "dropout": 0.0, "lr": 1e-3, "members": 1, "gaussian_base": False}}
# (how these were chosen: benchmarks/RESULTS.md#tables-gaussian-base and the sections after it)


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
    l1_on_categories: bool = False  # conditional: that L1 on categories' one-hot scores too (off: MSE there
    # keeps the MAE and gives better class accuracy, benchmarks/RESULTS.md#tables-l1-on-numbers)

    def settled(self, kind: str, rows: Optional[int] = None) -> "TrainSettings":
        """Every None replaced by ``kind``'s default; the conditional model's steps need the table's ``rows``
        (left None without them)."""
        steps = self.steps
        if steps is None:
            steps = EPS_STEPS if kind == "eps" else (None if rows is None else conditional_steps(rows, self.batch_size))
        return replace(self, lr=self.lr or _DEFAULTS[kind]["lr"], steps=steps)
