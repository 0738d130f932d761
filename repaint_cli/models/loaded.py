"""What every loader of a model gives back, and how it says no: shared by the guided-diffusion checkpoints
(``checkpoints.py``) and the diffusers models (``diffusers_unet.py``), which know nothing of each other's files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..core.diffusion import Diffusion
from .cards import ModelCard


class ModelError(Exception):
    """A one-line, user-facing problem with a model, card or checkpoint."""


@dataclass
class LoadedModel:
    model: torch.nn.Module  # our UNetModel, or diffusers' UNet2DModel behind its adapter
    diffusion: Diffusion
    hparams: dict
    card: Optional[ModelCard]
    path: Path
