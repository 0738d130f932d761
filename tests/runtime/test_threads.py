"""The default thread count reads the cores busy now (issue 34), with a real busy process started here."""
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

import repaint_cli.runtime.threads as threads

pytestmark = pytest.mark.skipif(not os.path.isfile("/proc/stat") or not hasattr(os, "sched_setaffinity"),
                                reason="needs Linux's /proc/stat and CPU affinity")

BUSY_LOOP = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture
def busy_process():
    """A bounded busy loop (30 s at most) pinned to the first usable CPU; killed at the end."""
    cpu = threads.usable_cpus()[0]
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        os.sched_setaffinity(proc.pid, {cpu})
        time.sleep(0.3)  # past its start-up
        yield cpu
    finally:
        proc.kill()
        proc.wait()


def test_a_busy_process_counts_as_a_busy_core(busy_process):
    busy = threads.busy_cores([busy_process], window=0.3)
    assert busy is not None and busy >= 0.8  # others' work can only add to it


def test_the_choice_leaves_the_busy_core_to_its_process(busy_process, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_CHOICE", [])
    monkeypatch.setattr(threads, "_TORCH_THREADS", 64)
    usable = len(threads.usable_cpus())
    n, why = threads.thread_choice()
    assert n <= max(1, usable - 1) and f"{usable} usable cores" in why and "/proc/stat" in why


def test_our_own_work_is_not_counted_as_busy():
    """A thread of our own spinning through the window (a reader thread, say) is not another process."""
    cpu = threads.usable_cpus()[0]
    stop = threading.Event()
    own_cpus_before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # this process (its spinning thread) on the measured core
    try:
        spinner = threading.Thread(target=lambda: [None for _ in iter(lambda: stop.is_set(), True)])
        spinner.start()
        busy, own = threads.cpu_busy_sample([cpu], 0.3)
    finally:
        stop.set()
        spinner.join()
        os.sched_setaffinity(0, own_cpus_before)
    # the spinning counted as ours (on a shared machine it gets a share of the core, not all of it), and it was
    # on the measured core, inside what that core spent busy
    assert own >= 0.2 and busy >= own - 0.1


def test_the_info_line_and_run_record_say_the_threads_and_why(small_checkpoint, tmp_path):
    import json

    import numpy as np
    from typer.testing import CliRunner

    from conftest import write_png
    from repaint_cli.cli.app import app
    from repaint_cli.images.provenance import RUN_RECORD

    write_png(tmp_path / "a.png", np.random.default_rng(0).integers(0, 256, (16, 16, 3)))
    args = ["inpaint", tmp_path / "a.png", "--model", small_checkpoint, "--preset", "draft", "--out", tmp_path / "o"]
    r = CliRunner().invoke(app, [str(a) for a in args + ["--threads", "1"]])
    assert r.exit_code == 0, r.output
    assert "fp32; 1 thread (--threads 1)" in r.stderr
    record = json.loads((tmp_path / "o" / RUN_RECORD).read_text().splitlines()[-1])
    assert record["engine"] == {"precision": "fp32", "threads": 1, "threads_why": "--threads 1"}


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_one_thread_inside_the_block_and_the_count_restored_after_it_even_on_an_error(two_threads):
    """Issue 35: the one "run on one thread, then restore" (the batch-invariant layers' own, offered here)."""
    from repaint_cli.models import batch_invariant

    assert threads.one_thread is batch_invariant.one_thread
    with threads.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyboardInterrupt), threads.one_thread():
        raise KeyboardInterrupt
    assert torch.get_num_threads() == 2


def test_the_tables_train_and_sample_on_one_thread_and_give_the_count_back_when_stopped(two_threads):
    """Both table models train, and the conditional one samples, on one thread; a Ctrl-C in a progress
    callback leaves PyTorch's count as the caller set it."""
    import numpy as np

    from repaint_cli.tables.conditional import point_samples, train_conditional
    from repaint_cli.tables.denoiser import TableModelConfig, TrainSettings, train_table_model

    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    keep = np.ones_like(x, bool)
    seen = []

    def stop(*_):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt

    cfg, settings = TableModelConfig(width=8, blocks=1, members=1), TrainSettings(steps=10, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        train_table_model(x, keep, cfg, settings, on_step=stop)
    with pytest.raises(KeyboardInterrupt):
        train_conditional(x, keep, [[0], [1], [2]], cfg, settings, on_step=stop)
    model = train_conditional(x, keep, [[0], [1], [2]], cfg, settings)
    with pytest.raises(KeyboardInterrupt):
        point_samples(model, x, keep, 1, 0, on_sample=stop)
    assert seen == [1, 1, 1] and torch.get_num_threads() == 2


@pytest.mark.parametrize("cpus,busy,cap,want", [
    (2, 0.06, 2, 2),    # idle: every core
    (2, 1.9, 2, 1),     # both cores busy with other work: one thread (never 0)
    (16, 3.4, 16, 13),  # three cores busy
    (16, 0.0, 8, 8),    # no more than PyTorch's default (physical cores, not hyper-threads)
    (4, 1.5, 4, 2),     # 1.5 rounds to 2 busy cores
])
def test_default_threads_are_the_free_cores(monkeypatch, cpus, busy, cap, want):
    import repaint_cli.runtime.threads as engine

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(engine, "_CHOICE", [])
    monkeypatch.setattr(engine, "_TORCH_THREADS", cap)
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(engine, "busy_cores", lambda c: busy)
    assert engine.default_threads() == want
    assert engine.thread_choice()[1] == f"{cpus} usable cores, {busy:.1f} busy with other work over 0.2 s (/proc/stat)"
    monkeypatch.setattr(engine, "busy_cores", lambda c: 0.0)
    assert engine.default_threads() == want  # decided once per process: our own load never changes it
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(cap)  # PyTorch's own default: replaced by the free cores
        engine.set_threads(None)
        assert engine.threads_in_use() == (want, engine.thread_choice()[1])
        engine.set_threads(3)  # --threads wins
        assert engine.threads_in_use() == (3, "--threads 3")
        torch.set_num_threads(cap + 1)  # a count the caller chose with torch.set_num_threads is kept
        engine.set_threads(None)
        assert torch.get_num_threads() == cap + 1
    finally:
        torch.set_num_threads(old)


def test_default_threads_leave_omp_num_threads_and_systems_without_proc_stat(monkeypatch):
    import repaint_cli.runtime.threads as engine

    monkeypatch.setattr(engine, "_CHOICE", [])
    monkeypatch.setattr(engine, "_TORCH_THREADS", 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's one thread per process, or the user's choice
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert engine.thread_choice() == (1, "OMP_NUM_THREADS=1")

    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(engine, "_CHOICE", [])
    monkeypatch.setattr(engine, "_TORCH_THREADS", 4)
    monkeypatch.setattr(engine, "_cpu_times", lambda cpus: None)  # macOS, Windows: no /proc/stat
    monkeypatch.delattr(engine.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 6)
    assert engine.default_threads() == 4
    assert "no /proc/stat" in engine.thread_choice()[1]
