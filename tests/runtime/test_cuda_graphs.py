"""The CUDA path's defects that the CPU can show (issue 14): attention layout, OOM recovery, graph guards,
fp16 weights, the meta-device step. Each test fails on the code before the fix."""

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, randomize, small_unet_config
from repaint_cli.models.reference_attention import explicit_attention
from repaint_cli.models.unet import AttentionBlock, AttentionPool2d, ClassifierConfig, EncoderUNetModel, UNetModel


@pytest.fixture
def sdpa_strides(monkeypatch):
    """Records q, k, v strides of every scaled_dot_product_attention call."""
    seen = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v, *a, **kw):
        seen.append((q.stride(-1), k.stride(-1), v.stride(-1)))
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return seen


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_gives_sdpa_head_contiguous_qkv_and_the_same_output(sdpa_strides, new_order):
    block = randomize(AttentionBlock(64, 4, -1, new_order))
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        out = block(x)
        assert sdpa_strides == [(1, 1, 1)]
        assert torch.allclose(out, explicit_attention(block, x), atol=1e-5)


def test_whole_unet_and_classifier_reach_sdpa_with_stride_one(sdpa_strides):
    model = randomize(UNetModel(small_unet_config())).eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16), torch.tensor([1, 500]))
    clf = randomize(EncoderUNetModel(ClassifierConfig(image_size=16, classifier_width=64, classifier_depth=1,
                                                      classifier_attention_resolutions="8", classifier_channel_mult="1,2",
                                                      num_classes=5))).eval()
    with torch.no_grad():
        logits = clf(torch.randn(2, 3, 16, 16), torch.tensor([1, 500]))
    assert logits.shape == (2, 5)
    assert len(sdpa_strides) >= 3 and all(s == (1, 1, 1) for s in sdpa_strides)


def test_attention_pool_equals_the_conv_formulation():
    torch.manual_seed(0)
    pool = AttentionPool2d(4, 128, 64, 7)
    x = torch.randn(3, 128, 4, 4)
    with torch.no_grad():
        b, c = 3, 128
        h = x.reshape(b, c, -1)
        h = torch.cat([h.mean(dim=-1, keepdim=True), h], dim=-1) + pool.positional_embedding[None]
        qkv = pool.qkv_proj(h)
        q, k, v = qkv.reshape(b, 3, 2, 64, h.shape[-1]).unbind(1)
        a = torch.softmax(torch.einsum("bhct,bhcs->bhts", q, k) / 8.0, dim=-1)
        a = torch.einsum("bhts,bhcs->bhct", a, v).reshape(b, c, -1)
        want = pool.c_proj(a)[:, :, 0]
        assert torch.allclose(pool(x), want, atol=1e-5)


# ----------------------------------------------------------------------------- graphs: guards and cache

from repaint_cli.core.diffusion import Diffusion  # noqa: E402
from repaint_cli.runtime.cuda_graphs import CaptureProblem, CudaGraphSteps, EagerReplay, GraphCache, make_steps  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, PrecisionModel, default_channels_last, low_precision_copy, pick_device, prepare_model  # noqa: E402
from repaint_cli.runtime.memory import fit_batch, is_oom  # noqa: E402
from repaint_cli.core.noise import image_key, keys_tensor  # noqa: E402
from repaint_cli.core.sampler import Conditioning, EagerSteps, repaint, reverse_step, undo_step  # noqa: E402
from repaint_cli.core.schedule import JumpParams, jump_schedule  # noqa: E402


@pytest.fixture(scope="module")
def unet():
    return randomize(UNetModel(small_unet_config())).eval()


def make_cond(n=2, steps="10", seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand((n, 3, 16, 16), generator=g) * 2 - 1
    keep = torch.rand((n, 1, 16, 16), generator=g) > 0.5
    keys = keys_tensor([image_key(seed, f"s{i}") for i in range(n)])
    d = Diffusion.create(1000, "linear", steps)
    dev = torch.device(device)
    return Conditioning(gt.to(dev), keep.to(dev), keys.to(dev), d.coefficients(dev),
                        noise_index=torch.arange(gt[0].numel(), device=dev))


class EmptyGraph:
    """What a graph captured on the wrong device or stream is: replay does nothing, outputs stay as allocated."""

    def __init__(self, outs):
        self.outs = tuple(torch.empty_like(o).fill_(0.0) for o in outs)

    def replay(self):
        pass

    @staticmethod
    def capture(fn):
        g = EmptyGraph(fn())
        return g, g.outs, []


def test_a_graph_that_replays_nothing_is_caught_and_the_run_goes_on_eager(unet):
    cond = make_cond()
    said, cache = [], GraphCache()
    steps = make_steps(unet, cond, EngineOptions(), lambda m, level="info": said.append((level, m)), cache,
                       capture=EmptyGraph.capture)
    assert isinstance(steps, EagerSteps)
    assert cache.capture_failed and len(cache) == 0
    assert any(level == "warning" and "replay differs from the eager step" in m and "running eager" in m
               for level, m in said)
    # and the next batch does not try again
    assert isinstance(make_steps(unet, make_cond(seed=1), EngineOptions(), said.append, cache,
                                 capture=EmptyGraph.capture), EagerSteps)


def test_capture_warnings_are_never_silenced(unet):
    def warns_empty(fn):
        raise CaptureProblem("The CUDA Graph is empty. This usually means that the graph was attempted to be "
                             "captured on wrong device or stream.")

    said = []
    steps = make_steps(unet, make_cond(), EngineOptions(), lambda m, level="info": said.append(m), GraphCache(),
                       capture=warns_empty)
    assert isinstance(steps, EagerSteps) and any("Graph is empty" in m for m in said)

    def chatty(fn):
        g, outs, _ = EagerReplay.capture(fn)
        return g, outs, ["some note from PyTorch"]

    said.clear()
    steps = make_steps(unet, make_cond(), EngineOptions(), lambda m, level="info": said.append(m), GraphCache(),
                       capture=chatty)
    assert isinstance(steps, CudaGraphSteps) and any("some note from PyTorch" in m for m in said)
    with pytest.warns(UserWarning, match="running eager"):  # no log: a Python warning, not silence
        make_steps(unet, make_cond(), EngineOptions(), None, GraphCache(), capture=EmptyGraph.capture)


def test_a_good_capture_is_checked_cached_and_gives_eager_results(unet):
    cache = GraphCache(capacity=2)
    times = jump_schedule(JumpParams(t_T=10, jump_length=3, jump_n_sample=2))
    runners = []
    for n in (2, 3, 2, 1):  # shapes 2, 3, 2 (hit), 1 (evicts the least recently used: 3)
        cond = make_cond(n=n, seed=n)
        steps = make_steps(unet, cond, EngineOptions(), None, cache, capture=EagerReplay.capture)
        assert isinstance(steps, CudaGraphSteps)
        runners.append(steps)
        with torch.no_grad():
            got = repaint(unet, cond, times, None, steps).clone()
            want = repaint(unet, cond, times, None, EagerSteps(unet, cond))
        assert torch.allclose(got, want, atol=1e-5)
    assert runners[2] is runners[0]
    assert len(cache) == 2 and {s[1][0] for s in cache.runners} == {2, 1}


@pytest.mark.parametrize("t_T,jump_length", [(1, 1), (2, 1), (3, 2)])
def test_tiny_schedules_capture_within_bounds(unet, t_T, jump_length):
    """t_T 1 and 2: the warm-up and the check index betas in range; no undo graph where there is no undo."""
    from repaint_cli.images.sampling import has_undo

    times = jump_schedule(JumpParams(t_T=t_T, jump_length=jump_length, jump_n_sample=2))
    cond = make_cond(steps=str(t_T))
    steps = make_steps(unet, cond, EngineOptions(), None, GraphCache(), capture=EagerReplay.capture,
                       with_undo=has_undo(times))
    assert isinstance(steps, CudaGraphSteps)
    assert (steps.g_undo is None) == (not has_undo(times))
    with torch.no_grad():
        got = repaint(unet, cond, times, None, steps).clone()
        assert torch.allclose(got, repaint(unet, cond, times, None, EagerSteps(unet, cond)), atol=1e-5)


def test_cuda_library_allocation_failures_count_as_out_of_memory():
    assert is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_oom(RuntimeError("CUDA driver error: cudaErrorMemoryAllocation"))
    assert not is_oom(RuntimeError("CUDNN_STATUS_BAD_PARAM")) and not is_oom(ValueError("out of memory"))


def test_batch_fit_from_two_probes_and_no_64_cap():
    mib = 2 ** 20
    # small model on a big GPU: 10 MiB per image, 100 MiB fixed, 80 GiB free
    assert fit_batch(110 * mib, 120 * mib, 80 * 1024 * mib, 10_000) == 512
    assert fit_batch(110 * mib, 120 * mib, 80 * 1024 * mib, 10_000, cap=4096) > 64 * 40
    # big model: 1 GiB per image, 3 GiB fixed, 12 GiB free -> (9.6 - 3.3) / 1.1: what a capture holds (issue 37.2)
    assert fit_batch(4 * 1024 * mib, 5 * 1024 * mib, 12 * 1024 * mib, 100) == 5
    assert fit_batch(4 * 1024 * mib, 5 * 1024 * mib, 12 * 1024 * mib, 100, state_per_image=300 * mib) == 4
    assert fit_batch(10 * mib, 5 * mib, mib, 100) == 1  # never below 1


def test_picking_cuda_n_makes_it_the_current_device(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: chosen.append(i))
    assert pick_device("cuda:1") == torch.device("cuda", 1) and chosen == [1]
    assert pick_device("cuda") == torch.device("cuda", 0) and chosen == [1, 0]
    with pytest.raises(RuntimeError, match="cuda:0 to cuda:1"):
        pick_device("cuda:2")


def test_channels_last_defaults_on_for_cpu_off_for_cuda(unet):
    import copy

    assert default_channels_last(torch.device("cpu")) and not default_channels_last(torch.device("cuda", 0))
    m = prepare_model(copy.deepcopy(unet), torch.device("cpu"), EngineOptions())
    assert m.channels_last and m.inner.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_low_precision_weights_give_what_autocast_gives_and_keep_the_fp32_master(unet):
    """bf16 on the CPU stands in for fp16 on CUDA: autocast's casts of conv/linear weights are the same numbers."""
    import copy

    master = copy.deepcopy(unet)
    low = low_precision_copy(master, torch.bfloat16, torch.device("cpu"))
    assert all(p.dtype == torch.float32 for p in master.parameters())  # the NaN retry's weights are untouched
    kept = {id(k) for f in low.fp32_modules() for k in f.modules()}  # guided-diffusion's fp32 layers (issue 37.5)
    convs = [m for m in low.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear))
             and id(m) not in kept]
    norms = [m for m in low.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert any(isinstance(m, torch.nn.Conv1d) for m in convs)  # attention's qkv and proj_out too
    assert all(m.weight.dtype == torch.float32 for m in norms)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        cast_each_call = PrecisionModel(master, torch.bfloat16, torch.device("cpu"), False)(x, t)
        pre_converted = PrecisionModel(low, torch.bfloat16, torch.device("cpu"), False)(x, t)
    assert torch.equal(cast_each_call, pre_converted)


# ----------------------------------------------------------------------------- the CUDA code path on meta


def test_one_reverse_and_undo_step_of_the_device_path_touch_no_cpu_tensor_and_never_sync(unet):
    """The graph runner's reverse + undo on the meta device: every tensor an op sees is on the device, and no
    op reads a value back to the host (which would sync, and bake a value into a captured graph)."""
    import copy

    from torch.utils._python_dispatch import TorchDispatchMode

    meta = torch.device("meta")
    model = prepare_model(copy.deepcopy(unet), meta, EngineOptions(device="cpu", precision="fp32"))
    cond = make_cond(n=2, steps="10", device="meta")

    class Watch(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.host_tensors, self.syncs, self.ops = [], [], 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
                self.syncs.append(str(func))
            flat = list(args) + list((kwargs or {}).values())
            for a in flat:
                for t in (a if isinstance(a, (list, tuple)) else [a]):
                    if isinstance(t, torch.Tensor) and t.device.type != "meta":
                        self.host_tensors.append((str(func), t.device.type, tuple(t.shape)))
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (list, tuple)) else [out]):
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    self.host_tensors.append((str(func), "output " + t.device.type, tuple(t.shape)))
            return out

    with torch.no_grad():
        runner = CudaGraphSteps(model, cond, capture=EagerReplay.capture)
        t, step, inject = (torch.tensor(5, device=meta), torch.tensor(3, device=meta),
                           torch.tensor(True, device=meta))
        x0_noise = cond.noise(torch.tensor(0, device=meta))
        with Watch() as watch:
            runner.load_batch(cond)
            x, x0 = runner.reverse(x0_noise, t, step, inject)
            x = runner.undo(x, t, step)
            eager_x, _ = reverse_step(model, x0_noise, cond, t, step, inject)
            undo_step(eager_x, cond, t, step)
    assert watch.ops > 100  # the whole UNet ran under the watch
    assert watch.host_tensors == [] and watch.syncs == []
    assert x.device == meta and x.shape == (2, 3, 16, 16)
    # and the sampler's loop around the steps: a schedule with reverse and undo steps, start to end
    times = jump_schedule(JumpParams(t_T=10, jump_length=3, jump_n_sample=2))
    with torch.no_grad(), Watch() as loop_watch:
        out = repaint(model, cond, times, None, runner)
    assert loop_watch.host_tensors == [] and loop_watch.syncs == [] and out.device == meta


# ----------------------------------------------------------------------------- the capture's control flow


class FakeCuda:
    """Just enough of torch.cuda for _cuda_capture's control flow on the CPU: which stream is current,
    and a graph whose capture_end can raise or warn as PyTorch's does."""

    def __init__(self, monkeypatch, end_raises=None, end_warns=None):
        self.current = "default"
        self.mode = None
        fake = self

        class Stream:
            def __init__(self, device=None):
                self.name = "capture"

            def wait_stream(self, other):
                pass

        class StreamContext:
            def __init__(self, stream):
                self.stream, self.prev = stream, None

            def __enter__(self):
                self.prev, fake.current = fake.current, self.stream.name

            def __exit__(self, *exc):
                fake.current = self.prev

        class Graph:
            def capture_begin(self, pool=None, capture_error_mode="global"):
                fake.mode = capture_error_mode

            def capture_end(self):
                import warnings

                if end_warns:
                    warnings.warn(end_warns)
                if end_raises:
                    raise end_raises

        default = Stream()
        default.name = "default"
        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "stream", StreamContext)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: default)


def test_capture_end_raising_restores_the_stream(monkeypatch):
    from repaint_cli.runtime.cuda_graphs import _cuda_capture

    cuda = FakeCuda(monkeypatch, end_raises=RuntimeError("CUDA error: operation not permitted when stream is capturing"))
    with pytest.raises(RuntimeError, match="not permitted"):
        _cuda_capture(lambda: (torch.zeros(2),))
    assert cuda.current == "default"  # the eager fallback will not run on the dead capture stream
    assert cuda.mode == "thread_local"  # the writer thread's CUDA calls cannot invalidate the capture

    cuda = FakeCuda(monkeypatch)
    with pytest.raises(ValueError):
        _cuda_capture(lambda: (_ for _ in ()).throw(ValueError("an op failed during capture")))
    assert cuda.current == "default"


def test_an_empty_graph_warning_is_a_failure_even_under_the_clis_warning_filter(monkeypatch):
    import warnings

    from repaint_cli.runtime.cuda_graphs import _cuda_capture

    FakeCuda(monkeypatch, end_warns="The CUDA Graph is empty. This usually means that the graph was attempted "
                                    "to be captured on wrong device or stream.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what the CLI does to library warnings
        with pytest.raises(CaptureProblem, match="Graph is empty"):
            _cuda_capture(lambda: (torch.zeros(2),))
        FakeCuda(monkeypatch, end_warns="some harmless note")
        graph, outs, notes = _cuda_capture(lambda: (torch.ones(2),))
    assert notes == ["some harmless note"] and torch.equal(outs[0], torch.ones(2))


# ----------------------------------------------------------------------------- issue 37: fp32 means fp32


def test_fp32_on_cuda_runs_without_tf32_and_restores_the_process_settings():
    """Issue 37.6: cuDNN convolutions default to TF32; --precision fp32 (and the NaN retry) must be IEEE fp32.
    The flags are host settings read at kernel launch, so recording them inside the model's call checks it."""
    seen = []

    class Records(torch.nn.Module):
        def forward(self, x, t, **kw):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return x

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        PrecisionModel(Records(), torch.float32, torch.device("cuda"), False)(torch.zeros(1, 3, 2, 2), torch.zeros(1))
        assert seen == [(False, False)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (before[0], True)
        PrecisionModel(Records(), torch.float32, torch.device("cpu"), False)(torch.zeros(1, 3, 2, 2), torch.zeros(1))
        assert seen[-1] == (before[0], True)  # the CPU has no TF32: nothing changed there
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_fp32_uses_the_per_operator_tf32_settings_where_the_process_set_those_and_restores_them():
    """Where TF32 was set with PyTorch's newer per-operator API (reading the old flags then raises), those are
    set to IEEE and given back instead; in a child process, since the two APIs are not to be mixed in one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import torch\n"
            "from repaint_cli.runtime.device import ieee_fp32\n"
            "conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul\n"
            "mm.fp32_precision = 'tf32'\n"
            "with ieee_fp32():\n"
            "    print(conv.fp32_precision, mm.fp32_precision)\n"
            "print(conv.fp32_precision, mm.fp32_precision)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ieee", "ieee", "tf32", "tf32"]



# ----------------------------------------------------------------------------- issue 37: the first capture's memory


class RecordingReplay(EagerReplay):
    """An EagerReplay that logs when a capture begins and ends and when it is replayed."""

    events: list = []
    phase = ["eager"]

    def __init__(self, fn):
        RecordingReplay.events.append("capture_begin")
        RecordingReplay.phase[0] = "capture"
        super().__init__(fn)
        RecordingReplay.events.append("capture_end")
        RecordingReplay.phase[0] = "after"

    def replay(self):
        RecordingReplay.phase[0] = "replay"
        super().replay()
        RecordingReplay.phase[0] = "after"

    @staticmethod
    def capture(fn):
        g = RecordingReplay(fn)
        return g, g.outs, []


class CallLog(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, t, **kw):
        RecordingReplay.events.append(("model", RecordingReplay.phase[0]))
        return self.inner(x, t, **kw)


def test_the_eager_reference_is_computed_before_the_capture(unet):
    """Issue 37.2: the check's eager step ran while the graph's pool was held (two steps' activations at once);
    now it runs before the capture, and after the first capture_begin the model runs only captured or replayed."""
    RecordingReplay.events.clear()
    steps = make_steps(CallLog(unet), make_cond(), EngineOptions(), None, GraphCache(), capture=RecordingReplay.capture)
    assert isinstance(steps, CudaGraphSteps) and steps.check_diff == 0.0
    events = RecordingReplay.events
    first = events.index("capture_begin")
    assert ("model", "eager") in events[:first]  # the reference
    assert [e for e in events[first:] if isinstance(e, tuple)] and all(
        e[1] in ("capture", "replay") for e in events[first:] if isinstance(e, tuple)), events


def test_the_allocators_cache_is_emptied_right_before_capture_begin(monkeypatch):
    """Issue 37.2: a graph's private pool cannot reuse the blocks cached from the warm-up."""
    from repaint_cli.runtime.cuda_graphs import _cuda_capture

    order = []
    FakeCuda(monkeypatch)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: order.append("empty_cache"))
    begin = torch.cuda.CUDAGraph.capture_begin

    def capture_begin(self, *a, **k):
        order.append("capture_begin")
        return begin(self, *a, **k)

    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_begin", capture_begin)
    _cuda_capture(lambda: (torch.zeros(2),))
    assert order == ["empty_cache", "capture_begin"]


def test_the_full_batchs_capture_is_dropped_before_the_partial_last_batch_is_captured(unet):
    """Issue 37.2: the run's cache held the full batch's pool while capturing the last partial batch."""
    cache, held_at_capture = GraphCache(), []

    def capture(fn):
        held_at_capture.append(len(cache))
        return EagerReplay.capture(fn)

    for n in (3, 3, 1):  # two full batches (one capture, reused), then the partial last one
        make_steps(unet, make_cond(n=n, seed=n), EngineOptions(), None, cache, capture=capture)
    assert held_at_capture == [0, 0, 0, 0]  # reverse + undo for each of the two shapes: nothing else held
    assert len(cache) == 1


class PerturbedReplay(EagerReplay):
    """A replay 0.02 off the eager step: inside the old fp16 tolerance (0.03 x (1 + max |x|) ~ 0.15)."""

    def replay(self):
        super().replay()
        self.outs[0].add_(0.02)

    @staticmethod
    def capture(fn):
        g = PerturbedReplay(fn)
        return g, g.outs, []


class LabelledHalf(torch.nn.Module):
    dtype = torch.float16  # what the check reads to pick its tolerance

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, t, **kw):
        return self.inner(x, t, **kw)


def test_the_post_capture_check_is_near_exact_in_half_precision(unet):
    """Issue 37.6: replay and eager run the same kernels; a 0.02 difference is a fault, not rounding."""
    said = []
    steps = make_steps(LabelledHalf(unet), make_cond(), EngineOptions(), lambda m, level="info": said.append(m),
                       GraphCache(), capture=PerturbedReplay.capture)
    assert isinstance(steps, EagerSteps) and any("reverse x off by 0.02" in m for m in said)
    exact = make_steps(LabelledHalf(unet), make_cond(), EngineOptions(), None, GraphCache(),
                       capture=EagerReplay.capture)
    assert isinstance(exact, CudaGraphSteps) and exact.check_diff == 0.0


# ----------------------------------------------------------------------------- issue 37.5: Inf in the raw eps


class InfAt(torch.nn.Module):
    """eps = +Inf for batch row ``row`` at the call numbered ``call``: the clip into [-1, 1] would hide it."""

    def __init__(self, inner, row=1, call=3):
        super().__init__()
        self.inner, self.row, self.call, self.calls = inner, row, call, 0

    def forward(self, x, t, **kw):
        out = self.inner(x, t, **kw)
        self.calls += 1
        if self.calls == self.call:
            out = out.clone()
            out[self.row, :3] = float("inf")
        return out


@pytest.mark.parametrize("graphs", [False, True])
def test_an_inf_in_the_raw_model_output_is_flagged_per_image(unet, graphs):
    """Issue 37.5: x0 = clip((x - sqrt(1 - abar) eps) / sqrt(abar)) turns an Inf eps into -1, a finite but
    wrong sample; the batch's non-finite flags (on the device, read once) name the image."""
    times = jump_schedule(JumpParams(t_T=6, jump_length=2, jump_n_sample=2))
    cond = make_cond(n=3)
    cond.nonfinite = torch.zeros(3, dtype=torch.bool)
    model = InfAt(unet, row=1, call=12 if graphs else 3)  # the graph runner's warm-up and check call it first
    steps = (make_steps(model, cond, EngineOptions(), None, GraphCache(), capture=EagerReplay.capture) if graphs
             else EagerSteps(model, cond))
    assert model.calls < model.call
    with torch.no_grad():
        x = repaint(model, cond, times, None, steps)
    assert torch.isfinite(x).all()  # the Inf was clipped away
    assert steps.cond.nonfinite.tolist() == [False, True, False]



@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_guided_diffusions_fp32_layers_stay_fp32_under_half_precision(unet, dtype):
    """Issue 37.5: guided-diffusion's use_fp16 keeps the timestep embedding, every emb_layers and the final out
    in fp32 (celeba256 / places256 were trained in fp32); autocast and the half copy ran them in fp16. CPU
    autocast stands in for CUDA's: the same dispatch decides which dtype each layer runs in."""
    import copy

    low = low_precision_copy(copy.deepcopy(unet), dtype, torch.device("cpu"))
    parts = {"time_embed": low.time_embed, "emb_layers": low.input_blocks[1][0].emb_layers, "out": low.out,
             "trunk conv": low.input_blocks[1][0].in_layers[2]}
    assert all(p.dtype == torch.float32 for name in ("time_embed", "emb_layers", "out")
               for p in parts[name].parameters())
    assert parts["trunk conv"].weight.dtype == dtype
    seen = {}
    for name, m in parts.items():
        m.register_forward_hook(lambda mod, args, out, name=name: seen.update({name: out.dtype}))
    with torch.no_grad():
        y = PrecisionModel(low, dtype, torch.device("cpu"), False)(torch.randn(2, 3, 16, 16), torch.tensor([3, 700]))
    assert seen == {"time_embed": torch.float32, "emb_layers": torch.float32, "out": torch.float32,
                    "trunk conv": dtype}
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    # the names are the checkpoint format: a half copy's state dict has the fp32 model's keys
    assert list(low.state_dict()) == list(unet.state_dict())


def test_the_timed_batch_choice_takes_the_smallest_batch_near_the_best_time():
    from repaint_cli.runtime.memory import timed_batch_choice

    # per image: launch-bound at 1-4, the GPU full from 16 on (64 no faster than 16)
    assert timed_batch_choice({1: 0.040, 2: 0.021, 4: 0.012, 8: 0.0075, 16: 0.0061, 32: 0.0060, 64: 0.0059}) == 16
    assert timed_batch_choice({1: 0.01}) == 1
    with pytest.raises(ValueError):
        timed_batch_choice({})
