"""Jobs side by side, one forked process per core (the table model's members train here).

A job that runs on one thread with its own seed gives the same bits in a child as in this process
(a table model's member trains so): only the wall time changes (two members on two cores: about
half). Knows nothing of tables: a job is a function of a progress callback that returns arrays. Fork keeps the
job's arguments without pickling them; results come back as numpy arrays (by value, so a child may
exit before they are read). Where fork is not safe (not Linux), the caller trains in turn.
"""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import signal
import sys
from typing import Callable, Optional

import numpy as np

# job(report) -> {name: array}; report(step, loss) as it trains
Job = Callable[[Callable[[int, float], None]], dict]


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def run_apart(jobs: list[Job], workers: int,
              on_progress: Optional[Callable[[int, int, float], None]] = None) -> list[dict[str, np.ndarray]]:
    """The jobs' results in order, run in up to ``workers`` forked processes; ``on_progress(job, step, loss)``
    is called here as their reports arrive. Ctrl-C here ends the children (they ignore it themselves)."""
    ctx = mp.get_context("fork")
    messages = ctx.Queue()
    lanes = [list(range(i, len(jobs), workers)) for i in range(min(workers, len(jobs)))]
    children = [ctx.Process(target=_lane, args=(jobs, lane, messages), daemon=True) for lane in lanes]
    for child in children:
        child.start()
    results: dict[int, dict] = {}
    try:
        while len(results) < len(jobs):
            try:
                kind, k, *rest = messages.get(timeout=0.5)
            except queue_module.Empty:
                if any(child.exitcode not in (None, 0) for child in children):
                    raise RuntimeError("a training process ended without its model") from None
                continue
            if kind == "step":
                if on_progress is not None:
                    on_progress(k, *rest)
            elif kind == "error":
                raise RuntimeError(f"training member {k}: {rest[0]}")
            else:
                results[k] = rest[0]
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
    return [results[k] for k in range(len(jobs))]


def _lane(jobs: list[Job], lane: list[int], messages) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent, which ends this process
    k = lane[0]
    try:
        for k in lane:
            messages.put(("done", k, jobs[k](lambda step, loss, k=k: messages.put(("step", k, step, loss)))))
    except BaseException as e:  # reported, so the parent fails with a reason instead of waiting
        messages.put(("error", k, f"{type(e).__name__}: {e}"))
