"""Running as one of several processes: torchrun ranks and array-job shards.

Work is split by the sorted input list only, and every image's result depends
only on (image, mask, model, schedule, seed), so any split gives the same bytes.
Under torchrun each rank takes its shard from RANK/WORLD_SIZE, binds to GPU
LOCAL_RANK when there is one, and rank 0 prints the combined summary.

The ranks exchange nothing but that summary, a few Python objects at the very
end, so the process group is gloo (CPU sockets) with a long timeout, also on
GPUs: over nccl its watchdog (10 minutes) would abort the whole job when one
rank finishes its shard more than 10 minutes before the slowest.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterable, Optional

import torch
import torch.distributed as tdist


# How long a rank that has finished waits for the others at the end (uneven shards, reruns, retries).
SUMMARY_TIMEOUT = timedelta(days=7)


@dataclass
class Rank:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def shard(self) -> Optional[str]:
        return f"{self.rank}/{self.world}" if self.world > 1 else None


def from_env() -> Rank:
    """The torch.distributed environment set by torchrun (or a single process)."""
    try:
        return Rank(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        return Rank()


def init(rank: Rank, device: str = "auto") -> str:
    """Join the process group (gloo, long timeout: see above); returns the device this rank uses."""
    use_cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    if rank.world <= 1:
        return device
    if not tdist.is_initialized():
        tdist.init_process_group("gloo", timeout=SUMMARY_TIMEOUT)
    if use_cuda:  # this rank's own GPU, also as the current device (CUDA graphs capture on it)
        torch.cuda.set_device(rank.local_rank)
        return f"cuda:{rank.local_rank}"
    return device


_object_group = None  # a gloo group for Python objects when someone else set up an nccl default group


def _objects_group():
    global _object_group
    if tdist.get_backend() == "gloo":
        return None  # the default group
    if _object_group is None:
        _object_group = tdist.new_group(backend="gloo", timeout=SUMMARY_TIMEOUT)
    return _object_group


def gather(obj, rank: Rank) -> list:
    """Every rank's object on every rank (a list of one where there is no process group), over gloo."""
    if rank.world <= 1 or not tdist.is_initialized():
        return [obj]
    out = [None] * rank.world
    tdist.all_gather_object(out, obj, group=_objects_group())
    return out


def finish(rank: Rank) -> None:
    global _object_group
    if tdist.is_initialized():
        tdist.barrier(group=_objects_group())
        tdist.destroy_process_group()
        _object_group = None


def manifest_path(path: Optional[str], rank: Rank) -> Optional[Path]:
    """One manifest per shard: ``{rank}`` in the name is filled in (0 for a single process), else
    ``.rankN`` is added under torchrun."""
    if not path:
        return None
    if "{rank}" in path:
        return Path(path.format(rank=rank.rank))
    p = Path(path)
    return p.with_name(f"{p.stem}.rank{rank.rank}{p.suffix}") if rank.world > 1 else p


STATUS_ORDER = {"done": 3, "skipped": 2, "failed": 1}


def merge_manifests(paths: Iterable[Path]) -> list[dict]:
    """Join manifests (JSON lines); per input the best status wins (done > skipped > failed), then the latest."""
    best: dict[str, dict] = {}
    for path in paths:
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: not a JSON line; is this a repaint manifest?") from None
            key = rec.get("input")
            old = best.get(key)
            if old is None or STATUS_ORDER.get(rec.get("status"), 0) >= STATUS_ORDER.get(old.get("status"), 0):
                best[key] = rec
    return [best[k] for k in sorted(best)]
