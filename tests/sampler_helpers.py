"""Small sampler set-ups several test files share: a random 16 px UNet with a keyed batch, and a
deterministic eps-predictor (Sine) on two 6x6 images."""
import torch

from conftest import randomize, small_unet_config
from repaint_cli.core.diffusion import Diffusion
from repaint_cli.core.noise import image_key, keys_tensor
from repaint_cli.core.sampler import Conditioning, repaint
from repaint_cli.core.schedule import JumpParams, jump_schedule
from repaint_cli.models.unet import UNetModel


def sampler_setup():
    """(model, diffusion, times, gt, keep, keys): a random small UNet, 20 respaced steps, four keyed images."""
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


def batch(model_seed_stems, seed=0):
    """Random 16 px images and keep masks, each image keyed by its stem."""
    g = torch.Generator().manual_seed(seed)
    n = len(model_seed_stems)
    gt = torch.rand((n, 3, 16, 16), generator=g) * 2 - 1
    keep = torch.rand((n, 1, 16, 16), generator=g) > 0.5
    keys = keys_tensor([image_key(0, s) for s in model_seed_stems])
    return gt, keep, keys


class Sine(torch.nn.Module):
    """Any deterministic eps-predictor of x's shape (fixed variance)."""

    def forward(self, x, t, **_):
        return torch.sin(3 * x) + 0.001 * t.float().reshape(-1, *([1] * (x.dim() - 1)))


def images():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand((2, 3, 6, 6), generator=g) * 2 - 1
    keep = torch.rand((2, 1, 6, 6), generator=g) > 0.5
    return gt, keep, keys_tensor([image_key(0, "a"), image_key(0, "b")])


TIMES = jump_schedule(JumpParams(t_T=8, jump_length=2, jump_n_sample=2))


def sample(cond):
    with torch.no_grad():
        return repaint(Sine(), cond, TIMES)
