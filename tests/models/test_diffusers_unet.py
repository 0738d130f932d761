"""diffusers-format DDPMs behind --model: folders, hub ids from the local cache, the scheduler's
math equal to DDPMScheduler's, and the rest of repaint untouched without diffusers."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import ROOT, write_png
from repaint_cli.cli.app import app
from repaint_cli.core.diffusion import diffusion_from_hparams
from repaint_cli.core.sampler import Conditioning, reverse_step

diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (pip install 'repaint-cli[diffusers]'; "
                                                   "make test installs it)")
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from repaint_cli.models.diffusers_unet import DiffusersUNet, hparams_from_configs, load_diffusers  # noqa: E402

runner = CliRunner()
SCHEDULES = [("linear", 0.0001, 0.02), ("scaled_linear", 0.00085, 0.012), ("squaredcos_cap_v2", 0.0001, 0.02),
             ("sigmoid", 0.0001, 0.02)]


def small_unet(out_channels=3, seed=0):
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=out_channels, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    with torch.no_grad():  # every weight random: zero-initialised output layers would make tests trivial
        for p in unet.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return unet.eval()


def save_pipeline_folder(folder, scheduler_kwargs=None, layout="pipeline", out_channels=3):
    unet = small_unet(out_channels)
    sched = DDPMScheduler(**(scheduler_kwargs or {}))
    if layout == "pipeline":  # model_index.json + unet/ + scheduler/, as DDPMPipeline.save_pretrained writes
        unet.save_pretrained(folder / "unet")
        sched.save_pretrained(folder / "scheduler")
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline",
                                                             "unet": ["diffusers", "UNet2DModel"],
                                                             "scheduler": ["diffusers", "DDPMScheduler"]}))
    else:  # the google/ddpm-* layout: config.json and scheduler_config.json side by side
        unet.save_pretrained(folder)
        sched.save_pretrained(folder)
    return unet, sched


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "imgs"
    d.mkdir()
    for i, (h, w) in enumerate([(16, 16), (20, 28)]):
        write_png(d / f"im{i}.png", rng.integers(0, 256, (h, w, 3)))
    return d


@pytest.mark.parametrize("layout", ["pipeline", "flat"])
def test_diffusers_folder_runs_end_to_end(tmp_path, images, layout):
    folder = tmp_path / "model"
    save_pipeline_folder(folder, layout=layout)
    out = tmp_path / "out"
    r = runner.invoke(app, ["inpaint", str(images), "--model", str(folder), "--preset", "draft", "--mask", "box",
                            "--out", str(out), "--quiet", "--save-mask"])
    assert r.exit_code == 0, r.output
    for i in range(2):
        src = np.asarray(Image.open(images / f"im{i}.png"))
        res = np.asarray(Image.open(out / f"im{i}.png"))
        keep = np.asarray(Image.open(out / f"im{i}_mask.png")) > 127
        assert res.shape == src.shape and np.array_equal(res[keep], src[keep])
        assert not np.array_equal(res[~keep], src[~keep])


def test_same_bytes_at_batch_size_1_and_2(tmp_path, images):
    folder = tmp_path / "model"
    save_pipeline_folder(folder)
    outs = []
    for bs in (1, 2):
        out = tmp_path / f"out{bs}"
        r = runner.invoke(app, ["inpaint", str(images), "--model", str(folder), "--preset", "draft", "--mask", "box",
                                "--out", str(out), "--quiet", "--batch-size", str(bs)])
        assert r.exit_code == 0, r.output
        outs.append({p.name: p.read_bytes() for p in out.glob("*.png")})
    assert len(outs[0]) == 2 and outs[0] == outs[1]


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_diffusers_unet_is_batch_invariant_at_64px(n_threads):
    """The engine's CPU path on a 64 px diffusers model (nn.GroupNorm on channels_last 64x64 maps split
    between threads, Linear on 3-D input in attention): an image's output the same bits alone and in a
    batch, and at any thread count. At 16 px GroupNorm is never split, so the end-to-end test above
    cannot show this."""
    from repaint_cli.runtime.device import EngineOptions, prepare_model

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=64, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
                       norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    model = DiffusersUNet(unet.eval(), {"image_size": 64, "variance_type": "fixed_small"})
    run = prepare_model(model, torch.device("cpu"), EngineOptions(device="cpu"))
    x = torch.randn((5, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 10, 500, 1, 250])
    old = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)  # the reference: any thread count gives the same bits on this CPU
            alone = [run(x[i:i + 1], t[i:i + 1]) for i in range(5)]
            torch.set_num_threads(n_threads)
            assert torch.equal(run(x[4:5], t[4:5]), alone[4])
            for start, size in ((0, 5), (1, 3), (3, 2)):
                out = run(x[start:start + size], t[start:start + size])
                assert all(torch.equal(out[i:i + 1], alone[start + i]) for i in range(size)), (start, size)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("name,start,end", SCHEDULES)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_schedule_arrays_equal_ddpmscheduler(name, start, end, variance_type):
    sched = DDPMScheduler(beta_schedule=name, beta_start=start, beta_end=end, variance_type=variance_type)
    hp = hparams_from_configs({"sample_size": 16, "out_channels": 6 if variance_type == "learned_range" else 3},
                              dict(sched.config), "test")
    ours = diffusion_from_hparams(hp).arrays
    assert torch.allclose(ours.alphas_cumprod.float(), sched.alphas_cumprod, rtol=1e-5, atol=1e-7)
    # diffusers derives each step's beta as 1 - ac_t / ac_prev in float32, which cancels to about
    # 1e-7 absolute where beta is 1e-4; we keep float64 until the end, as guided-diffusion does
    for t in (1, 2, 10, 500, 999):
        if variance_type == "learned_range":  # the ends of the range: fixed_small (v=-1) and fixed_large (v=+1)
            for v, end in ((-1.0, ours.posterior_variance), (1.0, ours.betas)):
                theirs = sched._get_variance(t, predicted_variance=torch.tensor(v)).exp()
                assert torch.allclose(end[t].float(), theirs, rtol=1e-4, atol=2e-7), (t, v)
            continue
        theirs = sched._get_variance(t)
        if variance_type == "fixed_small":
            assert torch.allclose(ours.posterior_variance[t].float(), theirs, rtol=1e-4, atol=2e-7), t
        elif variance_type == "fixed_large":
            assert torch.allclose(ours.betas[t].float(), theirs, rtol=1e-4, atol=2e-7), t


class GivenNoise(Conditioning):
    """The sampler's conditioning with the reverse step's noise given (no known region)."""

    def __init__(self, x, coefs, noise):
        super().__init__(torch.zeros_like(x), torch.zeros(x.shape[0], 1, *x.shape[2:], dtype=torch.bool),
                         torch.zeros(x.shape[0], 2, dtype=torch.int64), coefs)
        self.given = noise

    def noise(self, draw):
        return self.given


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("clip", [True, False])
def test_reverse_step_equals_ddpmscheduler_step(prediction_type, variance_type, clip):
    kw = dict(beta_schedule="linear", variance_type=variance_type, prediction_type=prediction_type, clip_sample=clip)
    sched = DDPMScheduler(**kw)
    unet = small_unet(6 if variance_type == "learned_range" else 3, seed=3)
    hp = hparams_from_configs(dict(unet.config), dict(sched.config), "test")
    respacing = "25"  # our respacing, handed to diffusers as its custom timesteps
    diffusion = diffusion_from_hparams(hp, respacing)
    kept = diffusion.timestep_map.tolist()
    sched.set_timesteps(timesteps=kept[::-1])
    model = DiffusersUNet(unet, hp)
    coefs = diffusion.coefficients()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g) * 1.5
    for i in (24, 12, 3, 1, 0):
        noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(100 + i))
        with torch.no_grad():
            ours, x0 = reverse_step(model, x, GivenNoise(x, coefs, noise), torch.tensor(i), torch.tensor(0),
                                    torch.tensor(False))
            raw = unet(x, torch.full((2,), kept[i]), return_dict=False)[0]
            theirs = sched.step(raw, kept[i], x, generator=torch.Generator().manual_seed(100 + i))
        assert torch.allclose(x0, theirs.pred_original_sample, atol=1e-5), (i, (x0 - theirs.pred_original_sample).abs().max())
        assert torch.allclose(ours, theirs.prev_sample, atol=1e-5), (i, (ours - theirs.prev_sample).abs().max())


def test_hub_id_from_the_local_cache_and_a_missing_one(tmp_path, images, monkeypatch):
    snap = tmp_path / "hf" / "hub" / "models--someone--tiny-ddpm" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    save_pipeline_folder(snap, layout="flat")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["inpaint", str(images), "--model", "someone/tiny-ddpm", "--preset", "draft",
                            "--mask", "box", "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 2

    r = runner.invoke(app, ["inpaint", str(images), "--model", "google/ddpm-ema-cat-256", "--out",
                            str(tmp_path / "out2"), "--quiet"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not in the Hugging Face cache" in lines[0] and str(tmp_path / "hf" / "hub") in lines[0]


def test_card_names_a_hub_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(app, ["models", "list"])
    assert ("ddpm-ema-celebahq-256\t256px\tfetchable: repaint models fetch ddpm-ema-celebahq-256 (diffusers format, "
            "from the Hugging Face hub)") in r.stdout
    # a downloaded folder put under the card's name in a weights folder is found by the card
    monkeypatch.setenv("REPAINT_WEIGHTS", str(tmp_path / "w"))
    save_pipeline_folder((tmp_path / "w" / "ddpm-cifar10-32"), layout="flat")
    loaded = load_diffusers(str(tmp_path / "w" / "ddpm-cifar10-32"))
    assert loaded.model.cfg.image_size == 16
    r = runner.invoke(app, ["models", "list"])
    assert f"ddpm-cifar10-32\t32px\tpresent ({tmp_path / 'w' / 'ddpm-cifar10-32'})" in r.stdout


def test_weights_that_do_not_match_the_config_are_refused(tmp_path, images):
    folder = tmp_path / "model"
    save_pipeline_folder(folder)
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    cfg["layers_per_block"] = 2  # the saved weights have one layer per block
    (folder / "unet" / "config.json").write_text(json.dumps(cfg))
    r = runner.invoke(app, ["inpaint", str(images), "--model", str(folder), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "do not match" in lines[0], r.stderr


def test_unsupported_scheduler_settings_are_one_line(tmp_path):
    with pytest.raises(Exception, match="thresholding"):
        hparams_from_configs({"sample_size": 16}, {"thresholding": True}, "m")
    with pytest.raises(Exception, match="variance_type 'learned'"):
        hparams_from_configs({"sample_size": 16}, {"variance_type": "learned"}, "m")
    with pytest.raises(Exception, match="not square"):
        hparams_from_configs({"sample_size": [16, 32]}, {}, "m")


BLOCK_DIFFUSERS = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("blocked for this test")
sys.meta_path.insert(0, Block())
"""


def test_without_diffusers_the_rest_is_untouched(tmp_path, images, small_checkpoint):
    folder = tmp_path / "model"
    save_pipeline_folder(folder)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_DIFFUSERS)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "repaint_cli", "inpaint", str(images), "--preset", "draft", "--mask", "box", "--quiet"]
    r = subprocess.run(base + ["--model", str(small_checkpoint), "--out", str(tmp_path / "a")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "a").glob("*.png"))) == 2
    r = subprocess.run(base + ["--model", str(folder), "--out", str(tmp_path / "b")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "pip install 'repaint-cli[diffusers]'" in r.stderr, r.stderr


def test_scheduler_keys_that_change_the_schedule_are_refused_by_name():
    """rescale_betas_zero_snr gives other cumulative alphas (3.2e-3 off at the end): refused, named;
    its default (off) and the inference-only keys of DDPM, DDIM and PNDM configs are accepted."""
    zero_snr = DDPMScheduler(rescale_betas_zero_snr=True)
    assert (zero_snr.alphas_cumprod - DDPMScheduler().alphas_cumprod).abs().max() > 1e-3  # what would be wrong
    with pytest.raises(Exception, match=r"m: scheduler setting\(s\) rescale_betas_zero_snr=True would change"):
        hparams_from_configs({"sample_size": 16}, dict(zero_snr.config), "m")
    with pytest.raises(Exception, match=r"use_karras_sigmas=True, zero_snr_shift=0.5"):
        hparams_from_configs({"sample_size": 16}, {"use_karras_sigmas": True, "zero_snr_shift": 0.5}, "m")
    from diffusers import DDIMScheduler, PNDMScheduler
    for sched in (DDPMScheduler(), DDIMScheduler(steps_offset=1, timestep_spacing="trailing"),
                  PNDMScheduler(skip_prk_steps=True)):
        hp = hparams_from_configs({"sample_size": 16}, dict(sched.config), "m")
        ours = diffusion_from_hparams(hp).arrays.alphas_cumprod.float()
        assert torch.allclose(ours, sched.alphas_cumprod, rtol=1e-5, atol=1e-7)
    assert hparams_from_configs({"sample_size": 16}, {"predict_epsilon": False}, "m")["prediction_type"] == "sample"


@pytest.mark.parametrize("size", [None, "64", 0])
def test_sample_size_that_is_no_size_is_one_line(size):
    cfg = {} if size is None else {"sample_size": size}
    with pytest.raises(Exception, match=r"m: the UNet's config.json gives sample_size .*an integer"):
        hparams_from_configs(cfg, {}, "m")
    with pytest.raises(Exception, match="sample_size None"):
        hparams_from_configs({"sample_size": None}, {}, "m")


def test_config_with_model_keys_is_refused_for_a_diffusers_model(tmp_path, images):
    """--config's model hyper-parameters mean nothing to a diffusers model (it has its own): refused
    in one line that names them; its schedule_jump_params still apply."""
    folder = tmp_path / "model"
    save_pipeline_folder(folder)
    conf = tmp_path / "conf.yml"
    conf.write_text("image_size: 256\nnoise_schedule: cosine\nschedule_jump_params: {t_T: 10, n_sample: 1, "
                    "jump_length: 2, jump_n_sample: 2}\n")
    base = ["inpaint", str(images), "--model", str(folder), "--mask", "box", "--quiet", "--config", str(conf)]
    r = runner.invoke(app, base + ["--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--config's image_size, noise_schedule would be ignored" in lines[0], r.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))
    conf.write_text("schedule_jump_params: {t_T: 10, n_sample: 1, jump_length: 2, jump_n_sample: 2}\n")
    r = runner.invoke(app, base + ["--out", str(tmp_path / "o2")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "o2").glob("*.png"))) == 2


def test_hub_model_configs_are_checked_before_its_weights_download(tmp_path, monkeypatch):
    """A hub repository whose UNet is no UNet2DModel is refused after its configs came, before any
    weights: snapshot_download is asked for the weights only once the configs are accepted."""
    import huggingface_hub

    asked = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        asked.append(list(allow_patterns))
        snap = tmp_path / "dl" / repo_id.replace("/", "--")
        conditional = repo_id.endswith("sd")
        save_pipeline_folder(snap, layout="flat")  # configs and weights; the fake drops what was not asked for
        if not any(p.endswith(".safetensors") for p in allow_patterns):
            (snap / "diffusion_pytorch_model.safetensors").unlink()
        if conditional:
            cfg = json.loads((snap / "config.json").read_text())
            cfg["_class_name"] = "UNet2DConditionModel"
            (snap / "config.json").write_text(json.dumps(cfg))
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(Exception, match="UNet2DConditionModel, not an unconditional UNet2DModel"):
        load_diffusers("someone/sd")
    assert asked and all(not any("safetensors" in p or "bin" in p for p in pats) for pats in asked)
    asked.clear()
    loaded = load_diffusers("someone/tiny")
    assert loaded.model.cfg.image_size == 16 and any("*.safetensors" in pats for pats in asked)
