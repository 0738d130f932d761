"""What made an output: the settings recorded in each output PNG and in a run record in ``--out``.

An output's settings are a compact JSON object in its PNG text chunk ``repaint``: the model (name,
sha256), the jump schedule, seed, the input image's sha256, mask source (with a mask file's or
preset's sha256), mask convention, fit, context, paste, guidance, preset, device and repaint's version.
A rerun compares them with its own (:data:`COMPARED`: what changes the pixels) to say which existing
outputs were made otherwise; an input replaced by another picture under the same name is one of them. No tensors and no OpenCV here (the hashing of files lives here for that reason), so
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
COMPARED = ("model_sha256", "schedule", "method", "eta", "guidance", "guidance_calls", "seed", "image", "mask",
            "mask_convention", "fit", "context", "paste", "class_label", "classifier_scale", "device")
# recorded, and not compared on their own: names (the model by its sha256, the preset by the schedule it gives),
# the version, and the sha256s, which go with "image" and "mask" (a content changed under the same name)
NOT_COMPARED = ("model", "preset", "version", "image_sha256", "mask_sha256")
# what an output recorded before a setting existed was made with; guidance 0 is recorded as nothing
IMPLIED = {"method": "repaint", "guidance": 0.0, "guidance_calls": "all"}
_CONTENT = {"image": "image_sha256", "mask": "mask_sha256"}  # compared by content where both outputs know it


def job_settings(run: dict, job: "Job", hashes: dict) -> dict:
    """The run's settings plus this image's input and mask (by name, and a file's or preset's content by its
    sha256: a file replaced between two runs is told apart). ``hashes``: sha256s by resolved path, kept for the
    run (one mask file serves many images)."""
    source = job.mask_file if job.mask_file is not None else job.mask_kind
    d = {**run, "image": str(job.image), "mask": str(source)}
    for key, path in (("image_sha256", Path(job.image)), ("mask_sha256", Path(str(source)))):
        if path.is_file():
            real = os.path.realpath(path)
            if real not in hashes:
                hashes[real] = sha256_file(path)
            d[key] = hashes[real]
    return d


def _brief(v) -> str:
    return f"{v[:12]}.." if isinstance(v, str) and len(v) == 64 else json.dumps(v) if v is None else str(v)


def settings_changes(old: dict, new: dict) -> list[str]:
    """What differs between the recorded settings of an output and this run's, e.g. ['seed 0 -> 1']."""
    changes = []
    for key in COMPARED:
        a, b = old.get(key, IMPLIED.get(key)), new.get(key, IMPLIED.get(key))
        content = _CONTENT.get(key)
        if content and old.get(content) and new.get(content):
            if old[content] != new[content]:
                changes.append(f"{key} {a} -> {b} (other content)" if a != b else f"{key} {a} (other content)")
            continue
        if key == "image":  # an output made before images were recorded: nothing to compare
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
