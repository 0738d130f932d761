"""The engine's CPU-testable parts: static-buffer plumbing of the graph runner, fallbacks, batch sizing."""
import pytest
import torch

from conftest import randomize, small_unet_config
from repaint_cli.core.diffusion import Diffusion
from repaint_cli.runtime.cuda_graphs import CudaGraphSteps, EagerReplay, GraphCache, make_steps
from repaint_cli.runtime.device import EngineOptions, pick_device, prepare_model, resolve_precision
from repaint_cli.runtime.memory import auto_batch_size, is_oom
from repaint_cli.core.noise import image_key, keys_tensor
from repaint_cli.core.sampler import Conditioning, EagerSteps, repaint
from repaint_cli.core.schedule import JumpParams, jump_schedule
from repaint_cli.models.unet import UNetModel


def batch(model_seed_stems, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(model_seed_stems)
    gt = torch.rand((n, 3, 16, 16), generator=g) * 2 - 1
    keep = torch.rand((n, 1, 16, 16), generator=g) > 0.5
    keys = keys_tensor([image_key(0, s) for s in model_seed_stems])
    return gt, keep, keys


@pytest.fixture(scope="module")
def model():
    return randomize(UNetModel(small_unet_config())).eval()


def test_graph_runner_buffers_match_eager_and_are_reused(model):
    diffusion = Diffusion.create(1000, "linear", "12")
    times = jump_schedule(JumpParams(t_T=12, jump_length=3, jump_n_sample=2))
    cache = {}
    for stems, seed in ((["a", "b"], 0), (["c", "d"], 1)):  # two batches of one shape: one capture
        gt, keep, keys = batch(stems, seed)
        cond = Conditioning(gt, keep, keys, diffusion.coefficients())
        with torch.no_grad():
            eager = repaint(model, cond, times, None, EagerSteps(model, cond)).clone()
            sig_cond = Conditioning(gt, keep, keys, diffusion.coefficients())
            if not cache:
                runner = CudaGraphSteps(model, sig_cond, capture=EagerReplay.capture)
                cache["only"] = runner
            else:
                runner = cache["only"].load_batch(sig_cond)
            graphed = repaint(model, sig_cond, times, None, runner)
        assert torch.allclose(graphed, eager, atol=1e-6)
        assert graphed.data_ptr() in (runner.out_x.data_ptr(), runner.out_undo.data_ptr())  # static outputs
    # the runner never aliases the caller's tensors: changing them later does not change its inputs
    gt[:] = 0
    assert not torch.equal(runner.cond.gt, gt)


def test_make_steps_falls_back_to_eager_on_cpu(model):
    diffusion = Diffusion.create(1000, "linear", "5")
    gt, keep, keys = batch(["a"])
    cond = Conditioning(gt, keep, keys, diffusion.coefficients())
    assert isinstance(make_steps(model, cond, EngineOptions(cuda_graphs=True), cache=GraphCache()), EagerSteps)


def test_precision_and_device_fallbacks():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32
    with pytest.warns(UserWarning, match="CUDA"):
        assert resolve_precision("fp16", cpu) == torch.float32
    from repaint_cli.runtime.device import cpu_has_bf16

    if cpu_has_bf16():  # issue 34: bf16 on CPUs with its instructions (tests/test_devices.py)
        assert resolve_precision("bf16", cpu) == torch.bfloat16
    else:
        with pytest.warns(UserWarning):
            assert resolve_precision("bf16", cpu) == torch.float32
    with pytest.raises(ValueError):
        resolve_precision("fp8", cpu)
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            pick_device("cuda")


def test_prepare_model_layouts_give_the_same_output(model):
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        ref = model(x, t)
        import copy
        cl = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(channels_last=True))
        assert torch.allclose(cl(x, t), ref, atol=1e-5)


def test_auto_batch_size_and_oom_detection(model):
    cpu = torch.device("cpu")
    assert auto_batch_size(model, 32, cpu, 100) == 16 and auto_batch_size(model, 32, cpu, 3) == 3
    assert auto_batch_size(model, 128, cpu, 100) == 4 and auto_batch_size(model, 256, cpu, 100) == 1
    assert is_oom(torch.cuda.OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA out of memory. Tried"))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_steps_never_synchronise_with_the_host(model):
    """No .item() in a step (it would break CUDA graph capture): counted with a dispatch mode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from repaint_cli.core.noise import gaussian
    from repaint_cli.core.sampler import reverse_step, undo_step

    class CountSyncs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.syncs = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                self.syncs += 1
            return func(*args, **(kwargs or {}))

    diffusion = Diffusion.create(1000, "linear", "10")
    gt, keep, keys = batch(["a", "b"])
    cond = Conditioning(gt, keep, keys, diffusion.coefficients(), noise_index=torch.arange(gt[0].numel()))
    cond.noise = lambda draw: gaussian(keys, draw, tuple(gt.shape[1:]), cond.noise_index)  # the CUDA noise path
    t, step, inject = torch.tensor(5), torch.tensor(3), torch.tensor(True)
    with torch.no_grad(), CountSyncs() as counter:
        x, _ = reverse_step(model, gt.clone(), cond, t, step, inject)
        undo_step(x, cond, t, step)
    assert counter.syncs == 0


def test_compile_that_fails_at_its_first_call_warns_once_and_runs_eager(model, monkeypatch):
    """torch.compile compiles at the first call (BackendCompilerFailed there, not at torch.compile):
    that call and every later one run eager, batch-invariant on the CPU as without --compile."""
    import copy
    import warnings
    from repaint_cli.models.batch_invariant import is_batch_invariant

    calls = []

    def broken_compile(fn, **kw):
        def compiled(*a, **k):
            calls.append(1)
            raise RuntimeError("BackendCompilerFailed: backend='inductor' raised: no C compiler here")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([3, 700, 999])
    run = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(device="cpu", compile=True))
    eager = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(device="cpu"))
    with torch.no_grad():
        with pytest.warns(UserWarning, match="torch.compile failed .*BackendCompilerFailed.*running eager"):
            out = run(x, t)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            again = run(x[:1], t[:1])
        assert torch.equal(out, eager(x, t)) and torch.equal(again, out[:1])
    assert calls == [1] and is_batch_invariant(run.inner)


def test_compile_out_of_memory_is_not_swallowed(model, monkeypatch):
    import copy

    def oom_compile(fn, **kw):
        def compiled(*a, **k):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return compiled

    monkeypatch.setattr(torch, "compile", oom_compile)
    run = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(device="cpu", compile=True))
    with pytest.raises(torch.cuda.OutOfMemoryError), torch.no_grad():
        run(torch.randn(1, 3, 16, 16), torch.tensor([3]))


def test_failed_invariance_self_check_calls_the_unet_image_by_image(model, monkeypatch):
    """A PyTorch whose kernels break the batch-invariant layers (here: GroupNorm32 made to depend on
    the batch size) is caught at start-up: a warning, plain layers, one UNet call per image."""
    import copy
    import repaint_cli.models.batch_invariant as inv

    monkeypatch.setattr(inv, "_SELF_CHECKED", {})
    monkeypatch.setattr(inv.InvariantGroupNorm32, "forward",
                        lambda self, x: inv.GroupNorm32.forward(self, x) + 1e-3 * x.shape[0])
    with pytest.warns(UserWarning, match=r"self-check .*GroupNorm32: image 0 alone differs .*one image at a time"):
        run = prepare_model(copy.deepcopy(model), torch.device("cpu"), EngineOptions(device="cpu"))
    assert run.per_image and not inv.is_batch_invariant(run.inner)
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([3, 700, 999, 10])
    with torch.no_grad():
        out = run(x, t)
        assert all(torch.equal(out[i:i + 1], run(x[i:i + 1], t[i:i + 1])) for i in range(4))


def test_invariance_self_check_passes_on_this_cpu():
    import repaint_cli.models.batch_invariant as inv

    old = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert inv.self_check() is None, n
    finally:
        torch.set_num_threads(old)


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
