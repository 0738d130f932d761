"""Where the files that ship with repaint are: model cards, the embedded model, mask presets.

In the repository they live at the top level (``weights/``, ``masks/``), where a
reader looks. A wheel carries the same files inside the package
(``repaint_cli/_weights``, ``repaint_cli/_masks``; see pyproject.toml). This module
knows both places and nothing else, so it imports nothing heavy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = PACKAGE_DIR.parent


def _bundled(installed_name: str, repo_name: str) -> Optional[Path]:
    """The installed copy inside the package, else the source checkout's top-level folder."""
    installed = PACKAGE_DIR / installed_name
    if installed.is_dir():
        return installed
    repo = _SOURCE_ROOT / repo_name
    # pyproject.toml tells a source checkout from an unrelated folder beside site-packages
    if repo.is_dir() and (_SOURCE_ROOT / "pyproject.toml").is_file():
        return repo
    return None


def bundled_weights_dir() -> Optional[Path]:
    """Model cards and the embedded model shipped with repaint."""
    return _bundled("_weights", "weights")


def bundled_masks_dir() -> Optional[Path]:
    """Mask presets (``<kind>.yaml``) shipped with repaint."""
    return _bundled("_masks", "masks")


def user_weights_dirs() -> list[Path]:
    """Where users put checkpoints and cards, in the order they are searched:
    ``$REPAINT_WEIGHTS`` (several folders split by ':'), ``~/.cache/repaint/weights``, ``./weights``."""
    dirs = [Path(p) for p in os.environ.get("REPAINT_WEIGHTS", "").split(os.pathsep) if p]
    dirs += [Path.home() / ".cache" / "repaint" / "weights", Path("weights")]
    return dirs


def weight_dirs() -> list[Path]:
    """Every folder searched for checkpoints and cards, first match wins: the user's
    folders, then the files shipped with repaint. A folder reached twice is listed once."""
    dirs, seen = [], set()
    for d in user_weights_dirs() + [bundled_weights_dir()]:
        if d is None:
            continue
        key = os.path.realpath(d)
        if key not in seen:
            seen.add(key)
            dirs.append(d)
    return dirs
