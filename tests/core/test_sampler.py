"""core/sampler.py: the fused sampler. Per-image determinism, the noise source, the methods beside RePaint's
(ddnm, ddim: their step math), guidance in the DDIM step, and steps that never synchronise with the host."""
import pytest
import torch

from conftest import randomize, small_unet_config
from repaint_cli.core.diffusion import Diffusion
from repaint_cli.core.noise import gaussian, image_key, keys_tensor
from repaint_cli.core.sampler import Conditioning, repaint
from repaint_cli.core.schedule import JumpParams, jump_schedule
from repaint_cli.models.unet import UNetModel
from repaint_cli.runtime.cuda_graphs import graph_signature
from repaint_cli.core.sampler import METHODS, ddim_step, ddnm_step, draw_id, repaint_step
from repaint_cli.runtime.cuda_graphs import CudaGraphSteps, EagerReplay
from repaint_cli.runtime.device import EngineOptions, prepare_model
from repaint_cli.core.sampler import reverse_step, undo_step
from repaint_cli.core.noise import per_image_noise
from sampler_helpers import batch, images, run, sample, sampler_setup


@pytest.fixture(scope="module")
def setup():
    return sampler_setup()


def test_per_image_determinism_across_batch_size_and_position(setup):
    model, diffusion, times, gt, keep, keys = setup
    full = run(*setup)
    for i in range(4):
        alone = run(model, diffusion, times, gt[i:i + 1], keep[i:i + 1], keys[i:i + 1])
        assert torch.allclose(alone[0], full[i], atol=1e-5)
    order = [2, 0, 3, 1]
    shuffled = run(model, diffusion, times, gt[order], keep[order], keys[order])
    assert torch.allclose(shuffled, full[order], atol=1e-5)


def test_seed_changes_the_sample(setup):
    model, diffusion, times, gt, keep, keys = setup
    other = keys_tensor([image_key(1, f"img{i}") for i in range(4)])
    a, b = run(*setup), run(model, diffusion, times, gt, keep, other)
    assert (a - b).abs().mean() > 0.05


def test_known_region_is_injected_and_callback_sees_every_step(setup):
    model, diffusion, times, gt, keep, keys = setup
    seen = []
    final = run(model, diffusion, times, gt, keep, keys, lambda info: seen.append((info.index, info.t, info.t_next, info.is_undo)))
    assert len(seen) == len(times) - 1
    assert [s[1] for s in seen] == times[:-1]
    assert sum(1 for s in seen if s[3]) == sum(1 for a, b in zip(times[:-1], times[1:]) if b > a)
    # with a random model the known region still follows gt far more closely than the hole does
    err_known = (final - gt).abs()[keep.expand_as(gt)].mean()
    err_hole = (final - gt).abs()[~keep.expand_as(gt)].mean()
    assert err_known < err_hole


@pytest.fixture(scope="module")
def model():
    return randomize(UNetModel(small_unet_config())).eval()


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


class Oracle(torch.nn.Module):
    """Predicts the true noise of a known clean image X: eps = (x_t - sqrt(abar) X) / sqrt(1 - abar).
    ``variance``: None for 3 channels (fixed variance), else a constant learned-range value."""

    def __init__(self, clean, alphas_cumprod, variance=None):
        super().__init__()
        self.clean, self.ac, self.variance = clean, alphas_cumprod.float(), variance

    def forward(self, x, t, **_):
        ac = self.ac[t].reshape(-1, 1, 1, 1)
        eps = (x - ac.sqrt() * self.clean) / (1 - ac).sqrt()
        return eps if self.variance is None else torch.cat([eps, torch.full_like(eps, self.variance)], 1)


class Garbage(torch.nn.Module):
    def forward(self, x, t, **_):
        return torch.sin(3 * x) + 0.1 * t.float().reshape(-1, 1, 1, 1) / 1000


@pytest.fixture(scope="module")
def batch_methods():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand((3, 3, 8, 8), generator=g) * 1.8 - 0.9
    keep = torch.rand((3, 1, 8, 8), generator=g) > 0.5
    keys = keys_tensor([image_key(0, f"im{i}") for i in range(3)])
    return clean, keep, keys


def cond_for(method, diffusion, clean, keep, keys, eta=0.0):
    coefs = diffusion.coefficients(eta=eta if method == "ddim" else None)
    return Conditioning(clean, keep, keys, coefs, method=method)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("jump", [JumpParams(t_T=20, jump_length=1, jump_n_sample=1),
                                  JumpParams(t_T=20, jump_length=4, jump_n_sample=3)])
def test_a_model_that_predicts_the_true_noise_recovers_the_image(batch_methods, method, jump):
    clean, keep, keys = batch_methods
    full = Diffusion.create(1000, "linear", "")
    diffusion = Diffusion.create(1000, "linear", str(jump.t_T))
    model = Oracle(clean, full.arrays.alphas_cumprod)
    with torch.no_grad():
        out = repaint(model, cond_for(method, diffusion, clean, keep, keys), jump_schedule(jump))
    assert (out - clean).abs().max() < 1e-4  # the hole too: the oracle knows it


def test_ddnm_puts_the_known_pixels_into_x0_and_leaves_x_t_alone(batch_methods):
    clean, keep, keys = batch_methods
    diffusion = Diffusion.create(1000, "linear", "10")
    cond = cond_for("ddnm", diffusion, clean, keep, keys)
    x = torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    t, step = torch.tensor(6), torch.tensor(2)
    with torch.no_grad():
        x_prev, x0 = ddnm_step(Garbage(), x, cond, t, step, torch.tensor(True))
        _, x0_repaint_no_inject = repaint_step(Garbage(), x, cond, t, step, torch.tensor(False))
    k = keep.expand_as(clean)
    assert torch.equal(x0[k], clean[k])  # A^+ y exactly
    assert torch.equal(x0[~k], x0_repaint_no_inject[~k])  # the model's null space, from the untouched x_t
    c = diffusion.coefficients()
    mean = c.posterior_mean_coef1[6] * x0 + c.posterior_mean_coef2[6] * x
    noise = cond.noise(draw_id(step, 1))  # the reverse step's own draw
    assert torch.allclose(x_prev, mean + (0.5 * c.fixed_log_variance[6]).exp() * noise, atol=1e-6)


def test_ddim_with_eta_1_is_the_ancestral_step_with_posterior_variance(batch_methods):
    clean, keep, keys = batch_methods
    diffusion = Diffusion.create(1000, "linear", "10")
    x = torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    model = Oracle(clean * 0.5, Diffusion.create(1000, "linear", "").arrays.alphas_cumprod, variance=-1.0)
    for t in (9, 5, 1, 0):
        args = (x, None, torch.tensor(t), torch.tensor(1), torch.tensor(True))
        with torch.no_grad():
            a, a0 = ddim_step(model, args[0], cond_for("ddim", diffusion, clean, keep, keys, eta=1.0), *args[2:])
            b, b0 = repaint_step(model, args[0], cond_for("repaint", diffusion, clean, keep, keys), *args[2:])
        assert torch.allclose(a0, b0, atol=1e-6) and torch.allclose(a, b, atol=1e-5), t


def test_ddim_with_eta_0_draws_no_step_noise(batch_methods):
    clean, keep, keys = batch_methods
    diffusion = Diffusion.create(1000, "linear", "10")
    other = keys_tensor([image_key(9, f"im{i}") for i in range(3)])
    x = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    outs = []
    for k in (keys, other):
        with torch.no_grad():  # inject False: the known part's noise is not used either
            outs.append(ddim_step(Garbage(), x, cond_for("ddim", diffusion, clean, keep, k), torch.tensor(5),
                                  torch.tensor(1), torch.tensor(False))[0])
    assert torch.equal(outs[0], outs[1])


def test_a_captured_graph_belongs_to_one_method(batch_methods):
    clean, keep, keys = batch_methods
    d = Diffusion.create(1000, "linear", "10")
    sigs = {graph_signature(Garbage(), cond_for(m, d, clean, keep, keys)) for m in ("repaint", "ddnm")}
    assert len(sigs) == 2


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


def test_ddim_step_uses_the_guidance_term():
    """The DDIM step moves its predicted noise by -sqrt(1 - abar) * term: x0 by (1 - abar) / sqrt(abar) * term."""
    from repaint_cli.core.diffusion import Diffusion
    from repaint_cli.core.sampler import Conditioning, ddim_step

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    coefs = Diffusion.create(steps=1000, timestep_respacing="10").coefficients(eta=0.0)
    args = dict(gt=torch.zeros(2, 3), keep=torch.zeros(2, 3, dtype=torch.bool), keys=torch.zeros(2, 2, dtype=torch.int64),
                coefs=coefs, method="ddim")
    x, t = torch.full((2, 3), 0.1), torch.tensor(5)
    plain, x0 = ddim_step(Zero(), x, Conditioning(**args), t, torch.tensor(0), torch.tensor(True))
    term = torch.full((2, 3), 0.01)
    guided, gx0 = ddim_step(Zero(), x, Conditioning(**args, cond_fn=lambda x, t: term), t, torch.tensor(0),
                            torch.tensor(True))
    i = t.reshape(1)
    shift = coefs.sqrt_one_minus_alphas_cumprod[i] ** 2 * coefs.sqrt_recip_alphas_cumprod[i] * term
    assert torch.allclose(gx0, x0 + shift) and not torch.equal(guided, plain)


def test_the_default_noise_source_is_the_per_image_keyed_noise():
    gt, keep, keys = images()
    coefs = Diffusion.create(1000, "linear", "8", learn_sigma=False).coefficients()
    implicit = sample(Conditioning(gt, keep, keys, coefs))
    explicit = sample(Conditioning(gt, keep, keys, coefs, noise_source=per_image_noise))
    assert torch.equal(implicit, explicit)


def test_the_sampler_draws_every_noise_from_the_given_source():
    gt, keep, keys = images()
    coefs = Diffusion.create(1000, "linear", "8", learn_sigma=False).coefficients()
    asked = []

    def recording(keys_, draw, shape, index):
        asked.append(int(draw))
        assert keys_ is keys and tuple(shape) == tuple(gt.shape)
        return per_image_noise(keys_, draw, shape, index) * 0.5  # a different noise than the default

    out = sample(Conditioning(gt, keep, keys, coefs, noise_source=recording))
    assert asked[0] == 0 and draw_id(0, 0) in asked  # the start x_T, then the known part at step 0
    assert not torch.equal(out, sample(Conditioning(gt, keep, keys, coefs)))
