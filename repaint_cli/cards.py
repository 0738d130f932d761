"""Model cards: one YAML file per known checkpoint, in the weights folders.

A card gives the checkpoint's file name, its architecture and diffusion settings
in RePaint's conf keys, the sampling preset that suits it, and where a user gets
the file. Reading cards needs only PyYAML, so ``repaint models list`` answers at once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from .resources import weight_dirs

DEFAULT_MODEL = "emoji32"


@dataclass
class ModelCard:
    name: str
    file: str
    hparams: dict  # RePaint conf keys: architecture + diffusion
    description: str = ""
    source: str = ""
    sha256: Optional[str] = None
    sampling: dict = field(default_factory=dict)  # default jump schedule for this model
    classifier: Optional[dict] = None  # {file, hparams, source} for guided models
    extra: dict = field(default_factory=dict)
    card_path: Optional[Path] = None

    @classmethod
    def load(cls, path: Path) -> "ModelCard":
        d = yaml.safe_load(Path(path).read_text())
        if not isinstance(d, dict) or not {"name", "file", "hparams"} <= set(d):
            raise TypeError(f"{path}: not a model card (needs name, file, hparams)")
        known = {"name", "file", "hparams", "description", "source", "sha256", "sampling", "classifier"}
        return cls(**{k: d[k] for k in known if k in d}, extra={k: v for k, v in d.items() if k not in known},
                   card_path=Path(path))

    def find_file(self, file: Optional[str] = None) -> Optional[Path]:
        file = file or self.file
        candidates = [self.card_path.parent / file] if self.card_path else []
        candidates += [d / file for d in weight_dirs()]
        return next((p for p in candidates if p.is_file()), None)

    def missing_message(self, file: Optional[str] = None) -> str:
        return (f"model '{self.name}': checkpoint {file or self.file} not found; put it in ~/.cache/repaint/weights/ "
                f"(or ./weights/, or a folder named by $REPAINT_WEIGHTS)"
                f"{'; get it from ' + self.source if self.source else ''}")


def list_cards() -> list[ModelCard]:
    seen, cards = set(), []
    for d in weight_dirs():
        for p in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            try:
                card = ModelCard.load(p)
            except (TypeError, yaml.YAMLError, AttributeError):
                continue  # not a card: e.g. the sidecar hyper-parameters of an exported model
            if card.name not in seen:
                seen.add(card.name)
                cards.append(card)
    return cards


def find_card(name: str) -> Optional[ModelCard]:
    return next((c for c in list_cards() if c.name == name), None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
