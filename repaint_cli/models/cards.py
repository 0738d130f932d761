"""Model cards: one YAML file per known checkpoint, in the weights folders.

A card gives the checkpoint's file name, its architecture and diffusion settings
in RePaint's conf keys, the sampling preset that suits it, and where a user gets
the file. Reading cards needs only PyYAML, so ``repaint models list`` answers at once.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from ..resources import cached_snapshot, hf_hub_cache, weight_dirs

DEFAULT_MODEL = "emoji32"


class IncompleteCard(TypeError):
    """A YAML file meant as a model card (it has ``file`` or ``hparams``) that lacks a required key."""


@dataclass
class ModelCard:
    name: str
    file: str
    hparams: dict  # RePaint conf keys: architecture + diffusion
    description: str = ""
    source: str = ""
    sha256: Optional[str] = None
    url: object = None  # where the checkpoint can be downloaded: one URL or a list (repaint models fetch)
    size: Optional[str] = None  # the download's size as shown by 'repaint models list' (e.g. "about 2.2 GB")
    sampling: dict = field(default_factory=dict)  # default jump schedule for this model
    classifier: Optional[dict] = None  # {file, hparams, source} for guided models
    extra: dict = field(default_factory=dict)
    card_path: Optional[Path] = None

    @classmethod
    def load(cls, path: Path) -> "ModelCard":
        d = yaml.safe_load(Path(path).read_text())
        if not isinstance(d, dict) or not {"name", "file", "hparams"} <= set(d):
            if isinstance(d, dict) and {"file", "hparams"} & set(d):  # meant as a card (no RePaint conf has these)
                missing = ", ".join(k for k in ("name", "file", "hparams") if k not in d)
                raise IncompleteCard(f"{path}: a model card without {missing}; skipped (a card needs name, file "
                                     f"and hparams)")
            raise TypeError(f"{path}: not a model card (needs name, file, hparams)")
        known = {"name", "file", "hparams", "description", "source", "sha256", "url", "size", "sampling", "classifier"}
        return cls(**{k: d[k] for k in known if k in d}, extra={k: v for k, v in d.items() if k not in known},
                   card_path=Path(path))

    @property
    def urls(self) -> list[str]:
        """The checkpoint's download URLs, from ``url:`` (a string or a list)."""
        if self.url is None:
            return []
        return [str(u) for u in self.url] if isinstance(self.url, (list, tuple)) else [str(self.url)]

    @property
    def format(self) -> str:
        """'guided-diffusion' (a checkpoint file) or 'diffusers' (a model folder; ``file`` is its hub id)."""
        return self.extra.get("format", "guided-diffusion")

    def find_file(self, file: Optional[str] = None) -> Optional[Path]:
        file = file or self.file
        if self.format == "diffusers" and file == self.file:
            # a folder named like the card in a weights folder, else the Hugging Face cache
            folders = [d / self.name for d in weight_dirs() if (d / self.name).is_dir()]
            return folders[0] if folders else cached_snapshot(self.file)
        candidates = [self.card_path.parent / file] if self.card_path else []
        candidates += [d / file for d in weight_dirs()]
        return next((p for p in candidates if p.is_file()), None)

    def missing_message(self, file: Optional[str] = None) -> str:
        if self.format == "diffusers" and (file or self.file) == self.file:
            return (f"model '{self.name}': {self.file} is not in the Hugging Face cache ({hf_hub_cache()}) nor a "
                    f"folder ~/.cache/repaint/weights/{self.name}/; download it where a network exists: "
                    f"huggingface-cli download {self.file} (needs repaint-cli[diffusers])")
        if self.fetchable(file):
            return (f"model '{self.name}': checkpoint {file or self.file} not found in the weights folders "
                    f"(~/.cache/repaint/weights/, ./weights/, $REPAINT_WEIGHTS); download it with 'repaint models "
                    f"fetch {self.name}' (or rerun with --fetch)")
        return (f"model '{self.name}': checkpoint {file or self.file} not found; put it in ~/.cache/repaint/weights/ "
                f"(or ./weights/, or a folder named by $REPAINT_WEIGHTS)"
                f"{'; get it from ' + self.source if self.source else ''}")

    def fetchable(self, file: Optional[str] = None) -> bool:
        """Whether the card names where ``file`` (default: the checkpoint) can be downloaded from."""
        if file in (None, self.file):
            return bool(self.urls) or self.format == "diffusers"
        return bool(self.classifier and self.classifier.get("file") == file and self.classifier.get("url"))


def list_cards() -> list[ModelCard]:
    seen, cards = set(), []
    for d in weight_dirs():
        for p in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            try:
                card = ModelCard.load(p)
            except yaml.YAMLError as e:  # a broken card must not make its model vanish without a word
                where = getattr(e, "problem_mark", None)
                at = f" (line {where.line + 1})" if where is not None else ""
                warnings.warn(f"{p}: not valid YAML{at}; skipped as a model card", stacklevel=2)
                continue
            except IncompleteCard as e:  # named, as a broken-YAML card is: its model must not vanish silently
                warnings.warn(str(e), stacklevel=2)
                continue
            except UnicodeDecodeError:  # any stray *.yaml in ./weights (Latin-1 notes, a binary) is read here
                warnings.warn(f"{p}: not UTF-8 text; skipped as a model card", stacklevel=2)
                continue
            except OSError as e:  # unreadable, or a folder named *.yaml
                warnings.warn(f"{p}: cannot be read ({e.strerror or e}); skipped as a model card", stacklevel=2)
                continue
            except (TypeError, AttributeError):
                continue  # not a card: e.g. the sidecar hyper-parameters of an exported model
            if card.name not in seen:
                seen.add(card.name)
                cards.append(card)
    return cards


def find_card(name: str) -> Optional[ModelCard]:
    return next((c for c in list_cards() if c.name == name), None)


