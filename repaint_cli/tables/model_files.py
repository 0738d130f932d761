"""A table model's files, either kind: PATH.safetensors (the weights and each numeric column's quantile
map) beside PATH.yaml (the card: format, sizes, the model's config, the column schema, how it was trained).
Both are written atomically, together or not at all (``files.atomic_paths``)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import atomic_paths

from .conditional import ConditionalDenoiser, ConditionalEnsemble
from .denoiser import TableDenoiser
from .model_config import TableModelConfig
from .schema import Column
from .messages import TableError, said

CARD_FORMAT = "repaint-table-model"


def build_model(dim: int, cfg: TableModelConfig, seed: int = 0) -> nn.Module:
    """A fresh model of ``cfg.kind`` (settled) for rows of ``dim`` encoded values."""
    if cfg.kind == "conditional":
        if cfg.members > 1:
            return ConditionalEnsemble([ConditionalDenoiser(dim, cfg) for _ in range(cfg.members)])
        return ConditionalDenoiser(dim, cfg, seed=seed)
    return TableDenoiser(dim, cfg, seed=seed)


def model_paths(path) -> tuple[Path, Path]:
    """(PATH.safetensors, PATH.yaml) for a model saved as PATH (given with or without either suffix)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".yaml") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".yaml")


def save_table_model(path, model: TableDenoiser, columns, extra: dict, option: str = "save_model") -> tuple[Path, Path]:
    """PATH.safetensors (weights, quantile maps) and PATH.yaml (card: schema, sizes); both atomic. ``option``
    names the output in a message about its folder (the command gives its flag)."""
    from safetensors.torch import save_file

    weights, card = model_paths(path)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for col in columns:
        if col.numeric:
            tensors[f"column.{col.name}.values"] = torch.from_numpy(np.asarray(col.values, np.float64))
            tensors[f"column.{col.name}.scores"] = torch.from_numpy(np.asarray(col.scores, np.float64))
    body = card_text(columns, {"weights": weights.name, "dim": model.dim, "model": asdict(model.cfg), **extra})
    with atomic_paths(weights, card, option=option) as (tmp_weights, tmp_card):
        # both written in full before either is renamed into place: both or neither
        save_file(tensors, str(tmp_weights))
        tmp_card.write_text(body, encoding="utf-8")
    return weights, card


def card_text(columns, fields: dict) -> str:
    """The YAML card; raises TableError naming a column whose values YAML cannot hold (found
    before training: the card is made from the columns alone)."""
    import yaml


    for col in columns:
        try:
            yaml.safe_dump(col.to_card())
        except yaml.YAMLError as e:
            raise TableError(said(f"column '{col.name}': its values cannot go into a model card ({_first_line(e)}); "
                                  "leave out `save_model`, or convert the column to text")) from None
    return yaml.safe_dump({"format": CARD_FORMAT, **fields, "columns": [c.to_card() for c in columns]},
                          sort_keys=False, allow_unicode=True)


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def load_table_model(path):
    """(model, columns, card) from a card or weights path written by :func:`save_table_model`."""
    import yaml
    from safetensors.torch import load_file


    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".yaml") else path
    card_path = base.with_name(base.name + ".yaml")
    if not card_path.is_file():
        raise TableError(said(f"{path}: no table model card ({card_path.name}); give the path `save_model` wrote"))
    try:
        card = yaml.safe_load(card_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        card = None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT or "weights" not in card:
        raise TableError(f"{card_path}: not a table model card (format: {CARD_FORMAT} expected)")
    weights = card_path.with_name(str(card["weights"]))
    if not weights.is_file():
        raise TableError(said(f"{weights}: no such file, but the card {card_path.name} names it; "
                              "copy the .safetensors beside the card, or train a new model (leave out `model`)"))
    try:
        tensors = load_file(str(weights))
        arrays = {k[len("column."):]: v.numpy() for k, v in tensors.items() if k.startswith("column.")}
        columns = [Column.from_card(d, arrays) for d in card["columns"]]
        model = build_model(int(card["dim"]), TableModelConfig(**{"members": 1, "gaussian_base": False, **card["model"]}).settled())
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except Exception as e:  # a truncated file, another model's weights, a card edited by hand
        raise TableError(said(f"{weights}: not the weights of {card_path.name} ({_first_line(e)}); "
                              "give the files `save_model` wrote together, or train a new model")) from None
    model.eval()
    return model, columns, card
