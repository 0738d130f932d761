"""core/reference_loop.py: the plain loop of RePaint's paper that the sampler is checked against."""
import pytest

from conftest import randomize, small_unet_config
from repaint_cli.core.reference_loop import plain_repaint
from repaint_cli.models.unet import UNetModel
from sampler_helpers import run, sampler_setup


@pytest.fixture(scope="module")
def setup():
    return sampler_setup()


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
