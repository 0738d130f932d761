"""The reverse steps beside RePaint's (--method ddnm, ddim): their step math, and the CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import write_png
from repaint_cli.cli.app import app
from repaint_cli.core.diffusion import Diffusion
from repaint_cli.runtime.cuda_graphs import graph_signature
from repaint_cli.core.noise import image_key, keys_tensor
from repaint_cli.core.sampler import (METHODS, Conditioning, ddim_step, ddnm_step, draw_id, repaint,
                                 repaint_step)
from repaint_cli.core.schedule import JumpParams, jump_schedule


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
def batch():
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
def test_a_model_that_predicts_the_true_noise_recovers_the_image(batch, method, jump):
    clean, keep, keys = batch
    full = Diffusion.create(1000, "linear", "")
    diffusion = Diffusion.create(1000, "linear", str(jump.t_T))
    model = Oracle(clean, full.arrays.alphas_cumprod)
    with torch.no_grad():
        out = repaint(model, cond_for(method, diffusion, clean, keep, keys), jump_schedule(jump))
    assert (out - clean).abs().max() < 1e-4  # the hole too: the oracle knows it


def test_ddnm_puts_the_known_pixels_into_x0_and_leaves_x_t_alone(batch):
    clean, keep, keys = batch
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


def test_ddim_with_eta_1_is_the_ancestral_step_with_posterior_variance(batch):
    clean, keep, keys = batch
    diffusion = Diffusion.create(1000, "linear", "10")
    x = torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    model = Oracle(clean * 0.5, Diffusion.create(1000, "linear", "").arrays.alphas_cumprod, variance=-1.0)
    for t in (9, 5, 1, 0):
        args = (x, None, torch.tensor(t), torch.tensor(1), torch.tensor(True))
        with torch.no_grad():
            a, a0 = ddim_step(model, args[0], cond_for("ddim", diffusion, clean, keep, keys, eta=1.0), *args[2:])
            b, b0 = repaint_step(model, args[0], cond_for("repaint", diffusion, clean, keep, keys), *args[2:])
        assert torch.allclose(a0, b0, atol=1e-6) and torch.allclose(a, b, atol=1e-5), t


def test_ddim_with_eta_0_draws_no_step_noise(batch):
    clean, keep, keys = batch
    diffusion = Diffusion.create(1000, "linear", "10")
    other = keys_tensor([image_key(9, f"im{i}") for i in range(3)])
    x = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    outs = []
    for k in (keys, other):
        with torch.no_grad():  # inject False: the known part's noise is not used either
            outs.append(ddim_step(Garbage(), x, cond_for("ddim", diffusion, clean, keep, k), torch.tensor(5),
                                  torch.tensor(1), torch.tensor(False))[0])
    assert torch.equal(outs[0], outs[1])


def test_a_captured_graph_belongs_to_one_method(batch):
    clean, keep, keys = batch
    d = Diffusion.create(1000, "linear", "10")
    sigs = {graph_signature(Garbage(), cond_for(m, d, clean, keep, keys)) for m in ("repaint", "ddnm")}
    assert len(sigs) == 2


def test_cli_methods(tmp_path, small_checkpoint):
    d = tmp_path / "imgs"
    d.mkdir()
    write_png(d / "a.png", np.random.default_rng(0).integers(0, 256, (16, 16, 3)))
    runner = CliRunner()
    results = {}
    for method, extra in (("repaint", []), ("ddnm", []), ("ddim", ["--eta", "0.5"])):
        out = tmp_path / method
        r = runner.invoke(app, ["inpaint", str(d), "--model", str(small_checkpoint), "--preset", "draft", "--mask", "box",
                                "--seed", "1", "--out", str(out), "--method", method, "--quiet", *extra])
        assert r.exit_code == 0, r.output
        results[method] = np.asarray(Image.open(out / "a.png"))
        assert json.loads(Image.open(out / "a.png").info["repaint"])["method"] == method
    assert not np.array_equal(results["repaint"], results["ddnm"])
    assert not np.array_equal(results["repaint"], results["ddim"])
    for bad in (["--method", "ddpm"], ["--eta", "0.5"], ["--method", "ddim", "--eta", "2"]):
        r = runner.invoke(app, ["inpaint", str(d), "--model", str(small_checkpoint), "--out", str(tmp_path / "x"), *bad])
        assert r.exit_code == 2 and len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, (bad, r.stderr)
    # a rerun with another method says so instead of skipping silently
    r = runner.invoke(app, ["inpaint", str(d), "--model", str(small_checkpoint), "--preset", "draft", "--mask", "box",
                            "--seed", "1", "--out", str(tmp_path / "ddnm"), "--method", "repaint"])
    assert r.exit_code == 0 and "method ddnm -> repaint" in r.stderr, r.stderr
