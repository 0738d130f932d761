"""What every loader of a model gives back, and how it says no: shared by the guided-diffusion checkpoints
(``checkpoints.py``) and the diffusers models (``diffusers_unet.py``), which know nothing of each other's files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..core.diffusion import Diffusion
from .cards import ModelCard


# what a file holding a model (its weights, or a conf beside them) ends with: a --model with one of these is a
# path, never a model's name nor a hub id
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".yaml", ".yml")


class ModelError(Exception):
    """A one-line, user-facing problem with a model, card or checkpoint."""


@dataclass
class LoadedModel:
    model: torch.nn.Module  # our UNetModel, or diffusers' UNet2DModel behind its adapter
    diffusion: Diffusion
    hparams: dict
    card: Optional[ModelCard]
    path: Path
    weights: bool = True  # False: read from the card or sidecar alone; ``model`` holds only ``cfg`` and ``num_classes``
    classifier: Optional[torch.nn.Module] = None  # class-conditional models: the guiding classifier, when one loads
    classifier_scale: float = 0.0  # class-conditional models: its scale (--classifier-scale, the conf's, the card's)
