"""Running as one of several processes: torchrun ranks and array-job shards.

Work is split by the sorted input list only, and every image's result depends
only on (image, mask, model, schedule, seed), so any split gives the same bytes.
Under torchrun each rank takes its shard from RANK/WORLD_SIZE, binds to GPU
LOCAL_RANK when there is one, and rank 0 prints the combined summary.

The ranks exchange nothing but that summary, a few Python objects at the very
end, so the process group is gloo (CPU sockets) with a long timeout, also on
GPUs: over nccl its watchdog (10 minutes) would abort the whole job when one
rank finishes its shard more than 10 minutes before the slowest. The timeout is
REPAINT_DIST_TIMEOUT (default 24 hours): how long a finished rank waits for the
others, and so how long it idles when another rank died where no torchrun agent
ends the job. A rank that gives up still has its images written; it says so and
reports its own summary only.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterable, Optional

import torch
import torch.distributed as tdist


# How long a rank that has finished waits for the others at the end (uneven shards, reruns, retries): long enough
# for a rerun whose shards differ by hours, short enough that a batch job whose rank died does not idle for days.
TIMEOUT_ENV = "REPAINT_DIST_TIMEOUT"
DEFAULT_SUMMARY_TIMEOUT = timedelta(hours=24)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def summary_timeout() -> timedelta:
    """REPAINT_DIST_TIMEOUT: seconds, or a number with s, m, h or d (90m, 12h); unset: 24 hours.
    ValueError (one line) for anything else."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_SUMMARY_TIMEOUT
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={text}: expected a duration such as 3600, 90m or 12h")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


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
    try:
        timeout = summary_timeout()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if not tdist.is_initialized():
        tdist.init_process_group("gloo", timeout=timeout)
    if use_cuda and device in ("auto", "cuda"):  # an explicit cuda:N is the user's choice and stays
        return f"cuda:{rank_gpu(rank)}"  # made the current device by runtime.device.pick_device
    return device


def rank_gpu(rank: Rank) -> int:
    """This rank's GPU among those it sees: LOCAL_RANK where each rank sees every GPU of the node; 0 where each
    sees only its own (CUDA_VISIBLE_DEVICES per rank, as some launchers set); shared round-robin where ranks
    outnumber the GPUs."""
    return rank.local_rank % max(1, torch.cuda.device_count())


_object_group = None  # a gloo group for Python objects when someone else set up an nccl default group


def _objects_group():
    global _object_group
    if tdist.get_backend() == "gloo":
        return None  # the default group
    if _object_group is None:
        _object_group = tdist.new_group(backend="gloo", timeout=summary_timeout())
    return _object_group


_gave_up = False  # gather timed out: no barrier then (it would wait as long again)


def gather(obj, rank: Rank) -> list:
    """Every rank's object on every rank (a list of one where there is no process group, or where the other
    ranks did not report within the timeout), over gloo."""
    global _gave_up
    if rank.world <= 1 or not tdist.is_initialized():
        return [obj]
    out = [None] * rank.world
    try:
        tdist.all_gather_object(out, obj, group=_objects_group())
    except RuntimeError as e:  # a rank died or is still busy past the timeout: this rank's images are written
        _gave_up = True
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"warning: rank {rank.rank}: no summary from the other ranks (one died, or is still busy after "
              f"{summary_timeout()}, which {TIMEOUT_ENV} sets: {why}); this rank's summary only", file=sys.stderr)
        return [obj]
    return out


def finish(rank: Rank) -> None:
    global _object_group, _gave_up
    if tdist.is_initialized():
        if not _gave_up:
            tdist.barrier(group=_objects_group())
        tdist.destroy_process_group()
        _object_group = None
    _gave_up = False


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
            if not isinstance(rec, dict) or not isinstance(rec.get("input"), str):
                what = ("a run record line (.repaint-run.jsonl), not a manifest's" if isinstance(rec, dict)
                        and "settings" in rec else "a JSON line without an \"input\"")
                raise ValueError(f"{path}:{n}: {what}; give the files written by --manifest") from None
            key = rec["input"]
            old = best.get(key)
            if old is None or STATUS_ORDER.get(rec.get("status"), 0) >= STATUS_ORDER.get(old.get("status"), 0):
                best[key] = rec
    return [best[k] for k in sorted(best)]
