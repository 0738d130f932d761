"""How many CPU threads PyTorch uses: the free cores by default (usable cores less the load), or what the
user or OMP_NUM_THREADS says."""
from __future__ import annotations

import os
from typing import Optional
import torch


def set_threads(threads: Optional[int]) -> None:
    """``threads`` for PyTorch; None: :func:`default_threads` (the cores that are free), unless the
    caller already chose a count with ``torch.set_num_threads`` (it is then left as it is)."""
    if threads:
        torch.set_num_threads(int(threads))
    elif torch.get_num_threads() == _TORCH_THREADS:
        torch.set_num_threads(default_threads())


_TORCH_THREADS = torch.get_num_threads()  # PyTorch's own choice: one per physical core, or OMP_NUM_THREADS

_DEFAULT_THREADS: list = []  # the choice, made once per process (see default_threads)


def default_threads() -> int:
    """Threads when --threads is not given: the usable cores that are not busy, at least 1.

    PyTorch takes one thread per core whatever else runs; on a busy machine its
    threads wait for each other at every layer (one emoji took 256 s on 2 threads
    against 21.7 s on 1 at load 8). Busy cores: the 1-minute load average, rounded.
    Decided once per process, before our own work weighs on the load (the fp32
    retry's model gets the same count). OMP_NUM_THREADS, when set (torchrun sets
    it to 1), is left as PyTorch read it; and no more threads than PyTorch's own
    default (one per physical core). The UNet's CPU output was the same bits at
    1 to 5 threads on this project's CPU (invariant.py, tests/test_invariant.py),
    so there the choice never changes a result.
    """
    if not _DEFAULT_THREADS:
        if os.environ.get("OMP_NUM_THREADS"):
            _DEFAULT_THREADS.append(_TORCH_THREADS)
        else:
            _DEFAULT_THREADS.append(free_cores(usable_cores(), load_average(), _TORCH_THREADS))
    return _DEFAULT_THREADS[0]


def free_cores(usable: int, load: float, cap: int) -> int:
    """``usable`` cores less the busy ones (``load`` rounded), at most ``cap``, at least 1."""
    return max(1, min(cap, usable - int(round(max(load, 0.0)))))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (runnable processes); 0 where the system has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
