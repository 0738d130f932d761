"""Reconstruction guidance for images (--guidance, issue 24): the term, scale 0 as no guidance at
all, its pull towards the known pixels, the CLI, presets that carry a scale, and
`repaint schedule --list` with the measured paired numbers."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import randomize, small_unet_config, write_png
from repaint_cli.cli.app import app
from repaint_cli.core.diffusion import Diffusion
from repaint_cli.core.noise import image_key, keys_tensor
from repaint_cli.core.sampler import Conditioning, repaint
from repaint_cli.core.schedule import JumpParams, guided_calls, jump_schedule
from repaint_cli.images.guidance import reconstruction

runner = CliRunner()


class ZeroNoise(torch.nn.Module):
    """Predicts eps = 0, with learned-variance channels appended (as RePaint's models)."""

    def forward(self, x, t, **_):
        return torch.cat([torch.zeros_like(x), torch.full_like(x, 0.3)], 1) + 0 * x.sum()


def test_the_image_term_is_the_gradient_of_the_known_pixels_error():
    """eps = 0: x0 = x / sqrt(abar), so the term is -s * abar / (1 - abar) * keep * (x0 - gt) / sqrt(abar),
    with abar at the training time the model is given (the schedule is respaced)."""
    diffusion = Diffusion.create(steps=1000, timestep_respacing="50")
    g = torch.Generator().manual_seed(0)
    gt = torch.rand((2, 3, 4, 4), generator=g) * 2 - 1
    keep = torch.rand((2, 1, 4, 4), generator=g) > 0.5
    x = torch.randn((2, 3, 4, 4), generator=g)
    net, cond_fn = reconstruction(ZeroNoise(), diffusion, gt, keep, 2.0)
    t = diffusion.timestep_map[10].repeat(2)
    a = Diffusion.create(steps=1000).arrays.alphas_cumprod.float()[t[0]]
    expected = -2.0 * a / (1 - a) * keep * (x / a.sqrt() - gt) / a.sqrt()
    assert torch.allclose(cond_fn(x, t), expected, atol=1e-5)
    with torch.no_grad():
        net(x, t)  # the sampler's own forward pass, reused by the term
    assert torch.allclose(cond_fn(x, t), expected, atol=1e-5)


def test_scale_zero_is_no_guidance_at_all():
    model, classifier_fn = torch.nn.Identity(), (lambda x, t, **_: x)
    diffusion = Diffusion.create(steps=1000, timestep_respacing="10")
    gt, keep = torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool)
    assert reconstruction(model, diffusion, gt, keep, 0.0) == (model, None)
    assert reconstruction(model, diffusion, gt, keep, 0.0, classifier_fn) == (model, classifier_fn)


def test_a_classifier_and_the_reconstruction_term_add_up():
    diffusion = Diffusion.create(steps=1000, timestep_respacing="10")
    gt, keep = torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool)
    x, t = torch.full((1, 3, 4, 4), 0.5), diffusion.timestep_map[3].reshape(1)
    _, recon_only = reconstruction(ZeroNoise(), diffusion, gt, keep, 1.0)
    _, both = reconstruction(ZeroNoise(), diffusion, gt, keep, 1.0, lambda x, t, **_: torch.ones_like(x))
    assert torch.allclose(both(x, t), recon_only(x, t) + 1)


def _two_half_known_images():
    """(a random small UNet, gt, keep, keys): two 16 px images, their left halves known."""
    model = randomize(__import__("repaint_cli.models.unet", fromlist=["UNetModel"]).UNetModel(small_unet_config()))
    g = torch.Generator().manual_seed(1)
    gt = torch.rand((2, 3, 16, 16), generator=g) * 1.6 - 0.8
    keep = torch.zeros((2, 1, 16, 16), dtype=torch.bool)
    keep[..., :8] = True
    return model.eval(), gt, keep, keys_tensor([image_key(0, f"im{i}") for i in range(2)])


@pytest.mark.parametrize("method", ["repaint", "ddim"])
def test_guidance_pulls_the_sample_towards_the_known_pixels(method):
    """On a random model the raw sample (nothing pasted) matches the known pixels better with guidance."""
    model, gt, keep, keys = _two_half_known_images()
    diffusion = Diffusion.create(steps=1000, timestep_respacing="20")
    times = jump_schedule(JumpParams(t_T=20, jump_length=5, jump_n_sample=2))
    errors = {}
    for scale in (0.0, 1.0):
        net, cond_fn = reconstruction(model, diffusion, gt, keep, scale)
        cond = Conditioning(gt, keep, keys, diffusion.coefficients(eta=1.0 if method == "ddim" else None),
                            cond_fn=cond_fn, noise_index=torch.arange(gt[0].numel()), method=method)
        with torch.no_grad():
            x = repaint(net, cond, times)
        errors[scale] = float((((x - gt) ** 2) * keep).sum() / (keep.sum() * 3))
    assert errors[1.0] < errors[0.0], errors


def _inpaint(tmp_path, checkpoint, out, *extra):
    return _inpaint_with(tmp_path, checkpoint, out, "--preset", "draft", *extra)


def test_cli_guidance_zero_is_bit_identical_and_a_scale_is_recorded(tmp_path, small_checkpoint):
    plain, plain_settings = _inpaint(tmp_path, small_checkpoint, "plain")
    zero, zero_settings = _inpaint(tmp_path, small_checkpoint, "zero", "--guidance", "0")
    guided, guided_settings = _inpaint(tmp_path, small_checkpoint, "guided", "--guidance", "2")
    ddim, ddim_settings = _inpaint(tmp_path, small_checkpoint, "ddim", "--guidance", "2", "--method", "ddim")
    assert np.array_equal(plain, zero) and "guidance" not in plain_settings and "guidance" not in zero_settings
    assert not np.array_equal(plain, guided) and guided_settings["guidance"] == 2.0
    assert ddim_settings["guidance"] == 2.0 and not np.array_equal(ddim, guided)
    # a rerun with another scale says so instead of skipping silently
    r = runner.invoke(app, ["inpaint", str(tmp_path / "imgs"), "--model", str(small_checkpoint), "--preset", "draft",
                            "--mask", "box", "--seed", "1", "--out", str(tmp_path / "guided")])
    assert r.exit_code == 0 and "guidance" in r.stderr, r.stderr
    r = runner.invoke(app, ["inpaint", str(tmp_path / "imgs"), "--guidance", "-1", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--guidance -1" in r.stderr and not (tmp_path / "x").exists()


def test_a_preset_carries_its_guidance_and_the_option_overrides_it(tmp_path, small_checkpoint, monkeypatch):
    from repaint_cli.core import schedule

    monkeypatch.setitem(schedule.PRESET_GUIDANCE, "draft", 2.0)
    by_preset, settings = _inpaint(tmp_path, small_checkpoint, "preset")
    explicit, _ = _inpaint(tmp_path, small_checkpoint, "explicit", "--guidance", "2")
    off, off_settings = _inpaint(tmp_path, small_checkpoint, "off", "--guidance", "0")
    assert settings["guidance"] == 2.0 and np.array_equal(by_preset, explicit)
    assert "guidance" not in off_settings and not np.array_equal(off, by_preset)


def test_paper_has_no_guidance():
    from repaint_cli.core.schedule import preset_guidance

    assert preset_guidance("paper") == 0.0 and preset_guidance(None) == 0.0


def test_schedule_list_shows_the_measured_paired_difference_to_paper(monkeypatch):
    from repaint_cli.core import schedule
    from repaint_cli.resources import preset_quality

    measured = preset_quality()
    assert measured, "repaint_cli/data/preset_quality.json (written by benchmarks/frontier.py) is missing"
    r = runner.invoke(app, ["schedule", "--list"])
    lines = dict(line.split("\t", 1) for line in r.stdout.splitlines())
    assert "reference" in lines["paper"]
    for name, m in measured.items():
        thick = m["masks"]["thick"]
        assert "minus paper, paired" in lines[name], lines[name]
        assert f"thick {thick['psnr'][0]:+.2f} ± {thick['psnr'][1]:.2f} dB" in lines[name]
        assert f"{schedule.preset_guidance(name):g}" in lines[name] or not schedule.preset_guidance(name)
    # numbers measured for another schedule or scale are not shown as this preset's
    name = next(iter(measured))
    monkeypatch.setitem(schedule.PRESET_GUIDANCE, name, 123.0)
    r = runner.invoke(app, ["schedule", "--list"])
    line = dict(ln.split("\t", 1) for ln in r.stdout.splitlines())[name]
    assert "not measured" in line and "guidance 123" in line


class RecordsOutputGrad(torch.nn.Module):
    """A UNet whose output records the gradient that reaches it in the backward (what an fp16 UNet would see)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.grads = inner, []

    def forward(self, x, t, **kw):
        out = self.inner(x, t, **kw)
        if out.requires_grad:
            out.register_hook(lambda g: self.grads.append(g.detach().clone()))
        return out


def test_the_term_is_scaled_before_the_backward_and_equals_the_old_one():
    """Issue 37.4: the same term as the gradient of the unscaled error times -s a / (1 - a) (fp32), while the
    gradient flowing back through the model stays a few units at t near T, where it was ~2e4."""
    from repaint_cli.models.unet import UNetModel

    unet = RecordsOutputGrad(randomize(UNetModel(small_unet_config(image_size=8, attention_resolutions="4"))).eval())
    diffusion = Diffusion.create(steps=1000, timestep_respacing="50")
    g = torch.Generator().manual_seed(1)
    gt = torch.rand((2, 3, 8, 8), generator=g) * 2 - 1
    keep = torch.rand((2, 1, 8, 8), generator=g) > 0.5
    abar = Diffusion.create(steps=1000).arrays.alphas_cumprod.float()
    for step, scale in ((49, 3.0), (25, 1.0), (1, 0.5)):
        t = diffusion.timestep_map[step].repeat(2)
        a = abar[t[0]]
        # x_t as RePaint gives it to the model: the known pixels noised to level t
        x = torch.where(keep, a.sqrt() * gt + (1 - a).sqrt() * torch.randn(gt.shape, generator=g),
                        torch.randn(gt.shape, generator=g))
        net, cond_fn = reconstruction(unet, diffusion, gt, keep, scale)
        unet.grads.clear()
        term = cond_fn(x, t)
        upstream = unet.grads[-1]
        # the old computation: the gradient of the unscaled error, scaled afterwards
        x_in = x.clone().requires_grad_(True)
        out = unet.inner(x_in, t)
        x0 = (x_in - (1 - a).sqrt() * out[:, :3]) / a.sqrt()
        old_grad, = torch.autograd.grad(0.5 * (((x0 - gt) ** 2) * keep).sum(), x_in)
        old = -scale * a / (1 - a) * old_grad
        assert torch.allclose(term, old, rtol=1e-4, atol=1e-6 * float(old.abs().max())), step
        bound = scale * float(x.abs().max() + out.detach().abs().max() + 1) / float((1 - a).sqrt())
        assert float(upstream.abs().max()) <= bound, (step, float(upstream.abs().max()), bound)
        if step == 49:
            assert float(upstream.abs().max()) < 100  # unscaled, it was (x0 - gt) sqrt((1 - a) / a), ~1e4 here


class CountsCalls(torch.nn.Module):
    """The model, counting its calls and those made with autograd on (a guided call's forward keeps a graph)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls, self.with_grad = inner, 0, 0

    def forward(self, x, t, **kwargs):
        self.calls += 1
        self.with_grad += torch.is_grad_enabled()
        return self.inner(x, t, **kwargs)


def _guided_run(flags=None, scale=1.0):
    model, gt, keep, keys = _two_half_known_images()
    counted = CountsCalls(model)
    diffusion = Diffusion.create(steps=1000, timestep_respacing="10")
    times = jump_schedule(JumpParams(t_T=10, jump_length=3, jump_n_sample=3))
    guided = None if flags is None else guided_calls(times, flags)
    net, cond_fn = reconstruction(counted, diffusion, gt, keep, scale, guided=guided)
    cond = Conditioning(gt, keep, keys, diffusion.coefficients(), cond_fn=cond_fn,
                        noise_index=torch.arange(gt[0].numel()))
    with torch.no_grad():
        x = repaint(net, cond, times)
    return x, counted, guided


def test_guidance_on_the_last_calls_runs_the_backward_on_those_alone():
    """--guidance-calls last: the flagged calls (one per time) run with autograd and get the term; the others run the
    plain forward, so the run differs from guiding every call and from no guidance, and 'all' is the plain path."""
    everywhere, every_count, _ = _guided_run()
    last, last_count, flags = _guided_run("last")
    unguided, _, _ = _guided_run(scale=0.0)
    all_flags, _, _ = _guided_run("all")
    assert every_count.calls == last_count.calls == len(flags) > sum(flags) == 10
    assert every_count.with_grad == len(flags) and last_count.with_grad == sum(flags)
    assert torch.equal(all_flags, everywhere)  # 'all' adds no wrapper: the same bits
    assert not torch.equal(last, everywhere) and not torch.equal(last, unguided)


def test_a_partly_guided_model_is_never_captured_in_a_cuda_graph():
    from repaint_cli.core.guidance import KeepsGraph, OnSomeCalls
    from repaint_cli.core.sampler import EagerSteps
    from repaint_cli.runtime.cuda_graphs import make_steps
    from repaint_cli.runtime.device import EngineOptions

    model = ZeroNoise()
    gt, keep = torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool)
    net = OnSomeCalls(model, KeepsGraph(model), lambda x, t, **_: x, [True, False])
    cond = Conditioning(gt, keep, keys_tensor([image_key(0, "a")]), Diffusion.create(steps=10).coefficients(),
                        cond_fn=net.cond_fn)
    opts = EngineOptions(graph_guidance=True)
    captured = []
    steps = make_steps(net, cond, opts, capture=lambda *a, **k: captured.append(a))
    assert isinstance(steps, EagerSteps) and not captured


def test_the_fast_preset_is_quick_guided_on_the_last_calls(tmp_path, small_checkpoint):
    """Presets are data: 'fast' samples exactly as 'quick' with --guidance-calls last, records the choice, and a
    rerun that guides every call says so instead of skipping the outputs silently."""
    fast, fast_settings = _inpaint_with(tmp_path, small_checkpoint, "fast", "--preset", "fast")
    quick_last, _ = _inpaint_with(tmp_path, small_checkpoint, "quick-last", "--preset", "quick",
                                  "--guidance-calls", "last")
    quick, quick_settings = _inpaint_with(tmp_path, small_checkpoint, "quick", "--preset", "quick")
    assert np.array_equal(fast, quick_last) and not np.array_equal(fast, quick)
    assert fast_settings["guidance_calls"] == "last" and "guidance_calls" not in quick_settings
    r = runner.invoke(app, ["inpaint", str(tmp_path / "imgs"), "--model", str(small_checkpoint), "--preset", "fast",
                            "--guidance-calls", "all", "--mask", "box", "--seed", "1", "--out", str(tmp_path / "fast")])
    assert r.exit_code == 0 and "guidance_calls last -> all" in r.stderr, r.stderr
    r = runner.invoke(app, ["inpaint", str(tmp_path / "imgs"), "--guidance-calls", "first", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--guidance-calls first" in r.stderr and not (tmp_path / "x").exists()


def _inpaint_with(tmp_path, checkpoint, out, *extra):
    """(the output's pixels, its recorded settings) of one 16 px image with a box mask and ``extra`` options."""
    d = tmp_path / "imgs"
    if not d.exists():
        d.mkdir()
        write_png(d / "a.png", np.random.default_rng(0).integers(0, 256, (16, 16, 3)))
    r = runner.invoke(app, ["inpaint", str(d), "--model", str(checkpoint), "--mask", "box", "--seed", "1",
                            "--out", str(tmp_path / out), "--quiet", *extra])
    assert r.exit_code == 0, r.output
    png = Image.open(tmp_path / out / "a.png")
    return np.asarray(png), json.loads(png.info["repaint"])
