"""How many CPU threads PyTorch uses: the cores that are free now by default (the usable cores less those
busy over a short window), or what the user or OMP_NUM_THREADS says; and why, for the info line and the
run record."""
from __future__ import annotations

import os
import time
from typing import Optional
import torch

# "run on one thread, then restore" lives with the batch-invariant layers, a floor below (models/ may not
# import runtime/), which need it inside a forward; offered here to every other user
from ..models.batch_invariant import one_thread  # noqa: F401


def set_threads(threads: Optional[int]) -> None:
    """``threads`` for PyTorch; None: :func:`default_threads` (the cores that are free), unless the
    caller already chose a count with ``torch.set_num_threads`` (it is then left as it is)."""
    if threads:
        torch.set_num_threads(int(threads))
        _LAST_REASON[:] = [f"--threads {int(threads)}"]
    elif torch.get_num_threads() == _TORCH_THREADS:
        torch.set_num_threads(default_threads())
        _LAST_REASON[:] = [thread_choice()[1]]
    else:
        _LAST_REASON[:] = ["set by the caller (torch.set_num_threads)"]


def threads_in_use() -> tuple[int, str]:
    """(PyTorch's thread count now, why it is that), for the info line and the run record."""
    return torch.get_num_threads(), (_LAST_REASON[0] if _LAST_REASON else "PyTorch's default")


_TORCH_THREADS = torch.get_num_threads()  # PyTorch's own choice: one per physical core, or OMP_NUM_THREADS

_CHOICE: list = []  # (count, reason), decided once per process (see default_threads)
_LAST_REASON: list = []  # why the count set last by set_threads is what it is
WINDOW_S = 0.2  # the window over which busy cores are measured: short, and after any earlier run has ended


def default_threads() -> int:
    """Threads when --threads is not given: the usable cores that are not busy now, at least 1.

    PyTorch takes one thread per core whatever else runs; on a busy machine its
    threads wait for each other at every layer, many times slower than one thread
    (benchmarks/RESULTS.md#threads-busy-machine). Busy cores: the CPU time our usable cores spent
    on other processes over :data:`WINDOW_S` (``/proc/stat``, our own process's time
    taken out), rounded. Not the 1-minute load average: it lags, so a run started
    right after another (a shell loop, a pipeline) saw the finished run's load and
    took 1 thread of 2. Where ``/proc/stat`` is missing (macOS, Windows), every
    usable core. Decided once per process (the fp32 retry's model gets the same
    count). OMP_NUM_THREADS, when set (torchrun sets it to 1), is left as PyTorch
    read it; and no more threads than PyTorch's own default (one per physical
    core). The UNet's CPU output is batch- and thread-invariant there
    (models/batch_invariant.py; benchmarks/RESULTS.md#threads-busy-machine), so
    there the choice never changes a result.
    """
    return thread_choice()[0]


def thread_choice() -> tuple[int, str]:
    """(the default thread count, the reason in words), decided once per process."""
    if not _CHOICE:
        if os.environ.get("OMP_NUM_THREADS"):
            _CHOICE.append((_TORCH_THREADS, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"))
        else:
            cpus = usable_cpus()
            busy = busy_cores(cpus)
            if busy is None:
                n = max(1, min(_TORCH_THREADS, len(cpus)))
                _CHOICE.append((n, f"{len(cpus)} usable cores (no /proc/stat here to see which are busy)"))
            else:
                n = free_cores(len(cpus), busy, _TORCH_THREADS)
                _CHOICE.append((n, f"{len(cpus)} usable cores, {busy:.1f} busy with other work over "
                                   f"{WINDOW_S:g} s (/proc/stat)"))
    return _CHOICE[0]


def free_cores(usable: int, busy: float, cap: int) -> int:
    """``usable`` cores less the busy ones (``busy`` rounded half up), at most ``cap``, at least 1."""
    return max(1, min(cap, usable - int(max(busy, 0.0) + 0.5)))


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return list(range(os.cpu_count() or 1))


def busy_cores(cpus: list[int], window: float = WINDOW_S) -> Optional[float]:
    """Cores' worth of ``cpus``' time spent on other processes than ours over ``window`` seconds; None
    where ``/proc/stat`` cannot be read."""
    sample = cpu_busy_sample(cpus, window)
    return None if sample is None else max(0.0, sample[0] - sample[1])


def cpu_busy_sample(cpus: list[int], window: float) -> Optional[tuple[float, float]]:
    """(cores' worth of ``cpus`` busy over ``window`` seconds, of which our own process's), or None."""
    before, own_before, t0 = _cpu_times(cpus), time.process_time(), time.monotonic()
    if before is None:
        return None
    time.sleep(window)
    after, own, elapsed = _cpu_times(cpus), time.process_time() - own_before, time.monotonic() - t0
    if after is None:
        return None
    busy = 0.0
    for cpu, (idle_a, total_a) in before.items():
        idle_b, total_b = after.get(cpu, (idle_a, total_a))
        if total_b > total_a:
            busy += 1.0 - (idle_b - idle_a) / (total_b - total_a)
    return busy, own / max(elapsed, 1e-6)


def _cpu_times(cpus: list[int]) -> Optional[dict]:
    """{cpu: (idle ticks, all ticks)} from ``/proc/stat`` for the given CPUs (idle counts iowait)."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted, found = set(cpus), {}
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in wanted):
            continue
        ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        if len(ticks) >= 5:
            found[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return found or None
