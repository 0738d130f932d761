"""core/reference_loop.py: the plain loop of RePaint's paper that the sampler is checked against."""
import pytest
import torch
from conftest import randomize, small_unet_config
from repaint_cli.core.diffusion import Diffusion
from repaint_cli.core.noise import image_key, keys_tensor
from repaint_cli.core.reference_loop import plain_repaint
from repaint_cli.core.sampler import Conditioning, repaint
from repaint_cli.core.schedule import JumpParams, jump_schedule
from repaint_cli.models.unet import UNetModel


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = randomize(UNetModel(small_unet_config())).eval()
    diffusion = Diffusion.create(1000, "linear", "20")
    times = jump_schedule(JumpParams(t_T=20, jump_length=3, jump_n_sample=2))
    g = torch.Generator().manual_seed(1)
    gt = torch.rand((4, 3, 16, 16), generator=g) * 2 - 1
    keep = torch.rand((4, 1, 16, 16), generator=g) > 0.5
    keys = keys_tensor([image_key(0, f"img{i}") for i in range(4)])
    return model, diffusion, times, gt, keep, keys


def run(model, diffusion, times, gt, keep, keys, callback=None):
    cond = Conditioning(gt, keep, keys, diffusion.coefficients())
    with torch.no_grad():
        return repaint(model, cond, times, callback)


def test_matches_the_plain_reference_loop(setup):
    model, diffusion, times, gt, keep, keys = setup
    fused = run(*setup)
    plain = plain_repaint(model, diffusion, gt, keep, times, keys)
    assert fused.shape == gt.shape
    assert (fused - plain).abs().max() < 1e-4
    assert fused.abs().max() <= 1.0 + 1e-6  # t=0 returns the clamped x0


@pytest.fixture(scope="module")
def model():
    return randomize(UNetModel(small_unet_config())).eval()
