"""The engine's CPU-testable parts: static-buffer plumbing of the graph runner, fallbacks, batch sizing."""
import pytest
import torch

from conftest import randomize, small_unet_config
from repaint_cli.core.diffusion import Diffusion
from repaint_cli.runtime.device import (CudaGraphSteps, EagerReplay, EngineOptions, GraphCache, auto_batch_size, is_oom,
                                make_steps, pick_device, prepare_model, resolve_precision)
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
