"""runtime/cuda_graphs.py: the CUDA path's defects that the CPU can show (issue 14): graph guards and cache, the
post-capture check, the eager reference, the static buffers of the graph runner. Each test fails on the code
before the fix."""

import pytest
import torch

from conftest import randomize, small_unet_config
from repaint_cli.models.unet import UNetModel


# ----------------------------------------------------------------------------- graphs: guards and cache

from repaint_cli.core.diffusion import Diffusion  # noqa: E402
from repaint_cli.runtime.cuda_graphs import CaptureProblem, CudaGraphSteps, EagerReplay, GraphCache, make_steps  # noqa: E402
from repaint_cli.runtime.device import EngineOptions  # noqa: E402
from repaint_cli.core.noise import image_key, keys_tensor  # noqa: E402
from repaint_cli.core.sampler import Conditioning, EagerSteps, repaint  # noqa: E402
from repaint_cli.core.schedule import JumpParams, jump_schedule  # noqa: E402
from sampler_helpers import Sine, TIMES, batch, images


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


# ----------------------------------------------------------------------------- the CUDA code path on meta


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


def test_the_graph_runner_keeps_the_noise_source_and_tells_sources_apart():
    """runtime/device.py copies the Conditioning into static buffers: the copy draws from the same source,
    and a graph captured for one source is never reused for another."""
    from repaint_cli.runtime.cuda_graphs import CudaGraphSteps, EagerReplay, graph_signature
    from repaint_cli.tables.conditional import row_noise

    gt, keep, keys = images()
    d = Diffusion.create(1000, "linear", "8", learn_sigma=False)
    custom = Conditioning(gt, keep, keys, d.coefficients(), noise_source=row_noise)
    with torch.no_grad():
        eager = repaint(Sine(), custom, TIMES)
        runner = CudaGraphSteps(Sine(), custom, capture=EagerReplay.capture)
        graphed = repaint(Sine(), custom, TIMES, steps=runner)
    assert runner.cond.noise_source is row_noise
    assert torch.equal(graphed, eager)
    default = Conditioning(gt, keep, keys[:1], d.coefficients())
    assert graph_signature(Sine, custom) != graph_signature(Sine, default)
