"""core/diffusion.py: the diffusion takes what tables need as parameters (fixed variance, a per-column x0 clip);
typed, frozen coefficients; one clip of x0 for images, tables and the reference math."""
import numpy as np
import pytest
import torch

from repaint_cli.core.diffusion import Diffusion
from repaint_cli.core.noise import keys_tensor
from repaint_cli.core.sampler import Conditioning
from sampler_helpers import images, sample


def test_fixed_variance_small_is_the_posterior_variance_and_large_is_beta():
    small = Diffusion.create(1000, "linear", "10", learn_sigma=False, fixed_variance="small")
    large = Diffusion.create(1000, "linear", "10", learn_sigma=False)
    cs, cl = small.coefficients(), large.coefficients()
    assert torch.equal(cs.fixed_log_variance, cs.posterior_log_variance_clipped)
    assert torch.equal(cl.fixed_log_variance[1:], cl.log_betas[1:])  # guided-diffusion's FIXED_LARGE
    x, t = torch.zeros(2, 4), torch.tensor([3, 7])
    _, log_var, _ = small.p_mean_variance(torch.zeros(2, 4), x, t)
    assert torch.equal(log_var[:, 0], small.arrays.posterior_log_variance_clipped[t].to(log_var.dtype))
    with pytest.raises(ValueError, match="fixed_variance"):
        Diffusion.create(1000, "linear", "10", fixed_variance="medium")


class Constant(torch.nn.Module):
    """Predicts x0 itself (prediction_type 'sample'): the same row for every input."""

    def __init__(self, row):
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, x, t, **_):
        return self.row.expand_as(x).clone()


def test_a_per_column_clip_clamps_each_column_to_its_own_range():
    d = Diffusion.create(1000, "linear", "5", learn_sigma=False, prediction_type="sample", clip_x0=[0.5, 3.0, 1.0])
    c = d.coefficients()
    assert torch.equal(c.x0_clip, torch.tensor([0.5, 3.0, 1.0]))
    x = torch.zeros(4, 3)
    cond = Conditioning(x, torch.zeros(4, 3, dtype=torch.bool), keys_tensor([(1, 2)]), c,
                        noise_source=lambda k, draw, shape, i: torch.zeros(shape))
    _, x0 = repaint_once(Constant([2.0, -2.0, 0.25]), cond)
    assert torch.equal(x0, torch.tensor([[0.5, -2.0, 0.25]] * 4))
    _, _, x0_ref = d.p_mean_variance(torch.tensor([[2.0, -2.0, 0.25]] * 4), x, torch.tensor([2] * 4))
    assert torch.equal(x0_ref.float(), x0)


def repaint_once(model, cond):
    from repaint_cli.core.sampler import reverse_step

    with torch.no_grad():
        return reverse_step(model, cond.gt.clone(), cond, torch.tensor(2), torch.tensor(0), torch.tensor(False))


def test_tables_use_the_core_as_it_is(monkeypatch):
    """No subclass of Conditioning, no edited coefficients: the variance and the clip are asked for."""
    from repaint_cli.tables import impute
    from repaint_cli.tables.model_config import TableModelConfig

    made, coefficients = [], []
    original = Diffusion.coefficients
    monkeypatch.setattr(Diffusion, "coefficients",
                        lambda self, *a, **k: coefficients.append(original(self, *a, **k)) or coefficients[-1])

    def fake_repaint(model, cond, times, callback=None):
        made.append(cond)
        return cond.noise(torch.tensor(0))

    monkeypatch.setattr(impute, "repaint", fake_repaint)

    class Model:
        cfg = TableModelConfig(width=8, blocks=1)

    x = np.zeros((5, 2), np.float32)
    keep = np.array([[True, False]] * 5)
    clip = np.array([1.5, 2.5], np.float32)
    opts = impute.ImputeOptions(samples=1, t_T=10, jump_length=5, jump_n_sample=1, guidance=0.0, variance="small")
    out = impute.sample_rows(Model(), x, keep, clip, opts, 0, opts.schedule())
    cond = made[0]
    assert type(cond) is Conditioning
    assert cond.coefs is coefficients[0]  # as the core made them (and frozen: nothing can edit them)
    assert torch.equal(cond.coefs.x0_clip, torch.from_numpy(clip))
    assert torch.equal(cond.coefs.fixed_log_variance, cond.coefs.posterior_log_variance_clipped)
    assert out.shape == x.shape and (out[:, 0] == 0).all() and (out[:, 1] != 0).all()


def test_the_coefficients_are_typed_frozen_attributes_and_the_arrays_derived_once():
    """Issue 35: a misspelt coefficient fails where it is read, nothing can overwrite one, the float64
    arrays are a cached property, and a graph runner's copy is its own."""
    import dataclasses

    from repaint_cli.core.diffusion import Coefficients, DiffusionArrays

    d = Diffusion.create(1000, "linear", "8", clip_x0=[0.5, 3.0, 1.0])
    assert d.arrays is d.arrays and isinstance(d.arrays, DiffusionArrays) and d.arrays.betas.dtype == torch.float64
    c = d.coefficients(eta=0.5)
    assert isinstance(c, Coefficients) and c.ddim_sigma.dtype == torch.float32 and c.timestep_map.dtype == torch.int64
    with pytest.raises(AttributeError):
        c.posterior_mean_coef3
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.betas = c.betas * 2
    assert d.coefficients().ddim_sigma is None and "ddim_sigma" not in d.coefficients().tensors()
    copy = c.clone()
    assert all(torch.equal(v, c.tensors()[k]) and v.data_ptr() != c.tensors()[k].data_ptr()
               for k, v in copy.tensors().items())
    copy.posterior_mean_coef1.zero_()
    assert copy.copy_(c) is copy and torch.equal(copy.posterior_mean_coef1, c.posterior_mean_coef1)
    assert all(torch.equal(getattr(c, k), v.float()) for k, v in d.arrays.tensors().items())


def test_ddim_without_its_coefficients_says_which_to_ask_for():
    gt, keep, keys = images()
    cond = Conditioning(gt, keep, keys, Diffusion.create(1000, "linear", "8").coefficients(), method="ddim")
    with pytest.raises(ValueError, match=r"coefficients\(eta=\.\.\.\)"):
        sample(cond)


def test_one_clip_of_x0_for_images_tables_and_the_reference_math():
    """clip_to_bound: one bound for all, one per column, inf or None for none; the sampler, p_mean_variance and
    the tables' conditional model all clip through it."""
    import pathlib

    import repaint_cli
    from repaint_cli.core.diffusion import clip_to_bound

    x = torch.tensor([[2.0, -5.0, 0.25], [-0.75, 1.5, -3.0]])
    assert torch.equal(clip_to_bound(x, torch.tensor([1.0])), x.clamp(-1, 1))
    assert torch.equal(clip_to_bound(x, torch.tensor([0.5, 3.0, 1.0])),
                       torch.tensor([[0.5, -3.0, 0.25], [-0.5, 1.5, -1.0]]))
    assert clip_to_bound(x, None) is x and torch.equal(clip_to_bound(x, torch.tensor([float("inf")])), x)
    package = pathlib.Path(repaint_cli.__file__).parent
    clips = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
             for line in p.read_text().splitlines() if "torch.maximum(torch.minimum(" in line]
    assert clips == ["core/diffusion.py"]
