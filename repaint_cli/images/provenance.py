"""What made an output: the settings recorded in each output PNG and in a run record in ``--out``.

An output's settings are a compact JSON object in its PNG text chunk ``repaint``: the model (name,
sha256), the jump schedule, seed, mask source (with a mask file's or preset's sha256), mask
convention, fit, context, paste, preset, device and repaint's version. A rerun compares them with
its own (:data:`COMPARED`: what changes the pixels) to say which existing outputs were made
otherwise. No tensors and no OpenCV here (the hashing of files lives here for that reason), so
reading what made an output stays quick.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional
from ..files import sha256_file

if TYPE_CHECKING:
    from .jobs import Job

SETTINGS_KEY = "repaint"  # the PNG text chunk holding an output's settings (compact JSON)
RUN_RECORD = ".repaint-run.jsonl"  # in --out: one JSON line per run
# settings that change an output's pixels; version and preset (a name for the schedule) do not count. The
# device does: the CPU and CUDA draw different noise from the same seed.
COMPARED = ("model_sha256", "schedule", "method", "eta", "seed", "mask", "mask_convention", "fit", "context", "paste",
            "class_label", "classifier_scale", "device")
IMPLIED = {"method": "repaint"}  # what an output recorded before a setting existed was made with


def job_settings(run: dict, job: "Job", hashes: dict) -> dict:
    """The run's settings plus this image's mask (a file's or preset's content by its sha256)."""
    source = job.mask_file if job.mask_file is not None else job.mask_kind
    d = {**run, "mask": str(source)}
    path = Path(str(source))
    if path.is_file():
        key = os.path.realpath(path)
        if key not in hashes:
            hashes[key] = sha256_file(path)
        d["mask_sha256"] = hashes[key]
    return d


def _brief(v) -> str:
    return f"{v[:12]}.." if isinstance(v, str) and len(v) == 64 else json.dumps(v) if v is None else str(v)


def settings_changes(old: dict, new: dict) -> list[str]:
    """What differs between the recorded settings of an output and this run's, e.g. ['seed 0 -> 1']."""
    changes = []
    for key in COMPARED:
        a, b = old.get(key, IMPLIED.get(key)), new.get(key, IMPLIED.get(key))
        if key == "mask" and old.get("mask_sha256") and new.get("mask_sha256"):
            if old["mask_sha256"] != new["mask_sha256"]:
                changes.append(f"mask {a} -> {b} (other content)")
            continue
        if a == b:
            continue
        if key == "model_sha256":
            changes.append(f"model {old.get('model')} ({_brief(a)}) -> {new.get('model')} ({_brief(b)})")
        elif isinstance(a, dict) and isinstance(b, dict):
            changes += [f"{key}.{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            changes.append(f"{key} {_brief(a)} -> {_brief(b)}")
    return changes


def recorded_settings(path: Path) -> Optional[dict]:
    """The settings an output was made with, or None (not made by repaint, or by a version before it recorded them)."""
    from PIL import Image  # the text chunks come before the pixels: only they are read

    try:
        with Image.open(path) as img:
            text = img.info.get(SETTINGS_KEY)
        d = json.loads(str(text)) if text else None
    except (OSError, ValueError, SyntaxError):
        return None
    return d if isinstance(d, dict) else None


def append_run_record(out_dir: Path, record: dict) -> None:
    """One JSON line per run in OUT/.repaint-run.jsonl (appended: shards and ranks each add theirs)."""
    try:
        with open(Path(out_dir) / RUN_RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    except OSError:
        pass  # the outputs carry their own settings; a record that cannot be written costs nothing else
