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


def hf_hub_cache() -> Path:
    """Hugging Face's hub cache, as huggingface_hub finds it (HF_HUB_CACHE, else HF_HOME/hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_snapshot(repo_id: str) -> Optional[Path]:
    """The local snapshot of a hub model (the revision 'main' points to, else the newest)."""
    repo = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted((d for d in snapshots.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    return found[-1] if found else None


def preset_quality() -> dict:
    """{preset: its measured paired difference to paper} from ``data/preset_quality.json`` (written by
    benchmarks/frontier.py), or {} where the file is missing or unreadable."""
    import json

    try:
        data = json.loads((PACKAGE_DIR / "data" / "preset_quality.json").read_text())
        return {name: {**v, "date": data.get("date", "")} for name, v in data["presets"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
