"""Class labels and classifier guidance on small random class-conditional models."""
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import randomize, small_unet_config, write_png
from repaint_cli.images.guidance import Guidance, imagenet_classes, parse_class
from repaint_cli.images.jobs import Job
from repaint_cli.core.keys import ImageKeys
from repaint_cli.images.inpaint import InpaintOptions, RunError, inpaint
from repaint_cli.models.unet import ClassifierConfig, EncoderUNetModel, UNetModel

CLF = dict(image_size=16, classifier_width=32, classifier_depth=1, classifier_attention_resolutions="8",
           classifier_channel_mult="1,2", classifier_use_scale_shift_norm=True, classifier_resblock_updown=True,
           classifier_pool="attention", num_classes=10)


@pytest.fixture
def cond_setup(tmp_path):
    cfg = small_unet_config(class_cond=True, num_classes=10)
    model = randomize(UNetModel(cfg), seed=1)
    mpath = tmp_path / "cond.pt"
    torch.save(model.state_dict(), mpath)
    mpath.with_suffix(".yaml").write_text(yaml.safe_dump({**asdict(cfg), "diffusion_steps": 1000}))
    clf = randomize(EncoderUNetModel(ClassifierConfig(**CLF)), seed=2)
    cpath = tmp_path / "clf.pt"
    torch.save(clf.state_dict(), cpath)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_png(imgs / f"a{i}.png", rng.integers(0, 256, (16, 16, 3)))
    return mpath, cpath, clf, imgs, tmp_path


def run(cond_setup, out, **kw):
    mpath, cpath, clf, imgs, tmp = cond_setup
    conf = {**CLF}
    conf.pop("num_classes")
    opts = InpaintOptions(mask="genhalf", model=str(mpath), config={**yaml.safe_load(mpath.with_suffix(".yaml").read_text()), **conf},
                          preset="draft", out_dir=tmp / out, batch_size=3, **kw)
    summary = inpaint([str(imgs)], opts)
    assert summary.failed == 0, summary.results
    return {p.name: np.asarray(__import__("PIL.Image").Image.open(p)) for p in sorted((tmp / out).glob("*.png"))}


def test_class_names_and_parsing():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and len(set(names)) == 1000
    assert parse_class("goldfish", 1000) == 1 and parse_class("Goldfish", 1000) == 1 and parse_class("207", 1000) == 207
    assert parse_class("random", 1000) is None and parse_class(None, 10) is None
    with pytest.raises(ValueError, match="did you mean"):
        parse_class("gold", 1000)
    with pytest.raises(ValueError, match="out of range"):
        parse_class("1000", 1000)
    drawn = Guidance(1000)

    def job(seed, name):
        return Job(Path(f"{name}.png"), name, Path(f"out/{name}.png"), keys=ImageKeys.of(seed, name))

    assert drawn.label_for(job(0, "x")) == drawn.label_for(job(0, "x"))
    assert len({drawn.label_for(job(0, f"s{i}")) for i in range(50)}) > 30
    assert [drawn.label_for(job(s, "x")) for s in range(5)] != [drawn.label_for(job(0, "x"))] * 5  # the seed counts
    assert Guidance(1000, "207").label_for(job(0, "x")) == 207


def test_scale_zero_is_exactly_no_classifier(cond_setup):
    mpath, cpath = cond_setup[:2]
    plain = run(cond_setup, "plain", class_label="3")
    zero = run(cond_setup, "zero", class_label="3", classifier=str(cpath), classifier_scale=0.0)
    guided = run(cond_setup, "guided", class_label="3", classifier=str(cpath), classifier_scale=5.0)
    assert all(np.array_equal(plain[k], zero[k]) for k in plain)
    assert any(not np.array_equal(plain[k], guided[k]) for k in plain)
    again = run(cond_setup, "again", class_label="3", classifier=str(cpath), classifier_scale=5.0)
    assert all(np.array_equal(guided[k], again[k]) for k in guided)  # deterministic with guidance


def test_guidance_raises_the_class_log_probability(cond_setup):
    mpath, cpath, clf = cond_setup[:3]
    target = 7
    base = run(cond_setup, "base", class_label=str(target))
    guided = run(cond_setup, "g", class_label=str(target), classifier=str(cpath), classifier_scale=20.0)

    def logp(images):
        x = torch.from_numpy(np.stack(list(images.values()))).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            return torch.log_softmax(clf(x, torch.zeros(len(x), dtype=torch.int64)), -1)[:, target].mean().item()

    assert logp(guided) > logp(base)


def test_labels_change_the_sample_and_errors(cond_setup, small_checkpoint, tmp_path):
    a = run(cond_setup, "l1", class_label="1")
    b = run(cond_setup, "l2", class_label="2")
    assert any(not np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(RunError, match="class-conditional"):
        inpaint([str(cond_setup[3])], InpaintOptions(mask="genhalf", model=str(small_checkpoint), class_label="3",
                                                     out_dir=tmp_path / "x", preset="draft"))
    with pytest.raises(RunError, match="--class"):
        run(cond_setup, "bad", class_label="99")


def test_fp16_request_on_cpu_falls_back(cond_setup):
    from repaint_cli.runtime.device import EngineOptions
    mpath, cpath = cond_setup[:2]
    fp32 = run(cond_setup, "p32", class_label="3", classifier=str(cpath))
    with pytest.warns(UserWarning, match="fp16"):
        fp16 = run(cond_setup, "p16", class_label="3", classifier=str(cpath), engine=EngineOptions(precision="fp16"))
    assert all(np.array_equal(fp32[k], fp16[k]) for k in fp32)


def test_repaint_inet_style_conf_with_registry_card(cond_setup, tmp_path, monkeypatch):
    """A conf shaped like RePaint's test_inet256_*.yml (paths in its own layout) runs via the model card."""
    import shutil
    from typer.testing import CliRunner
    from repaint_cli.cli.app import app

    mpath, cpath, clf, imgs, _ = cond_setup
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(mpath, weights / "inet_tiny.pt")
    shutil.copy(cpath, weights / "inet_tiny_classifier.pt")
    hp = yaml.safe_load(mpath.with_suffix(".yaml").read_text())
    clf_hp = {k: v for k, v in CLF.items() if k != "num_classes"}
    (weights / "inet_tiny.yaml").write_text(yaml.safe_dump({
        "name": "inet_tiny", "file": "inet_tiny.pt", "hparams": hp,
        "classifier": {"file": "inet_tiny_classifier.pt", "scale": 1.0, "hparams": clf_hp}}))
    monkeypatch.setenv("REPAINT_WEIGHTS", str(weights))
    conf = {**hp, **clf_hp, "use_fp16": True, "classifier_use_fp16": False, "classifier_scale": 2.0,
            "timestep_respacing": "10", "use_kl": False, "predict_xstart": False, "rescale_timesteps": False,
            "rescale_learned_sigmas": False, "clip_denoised": True, "use_ddim": False, "name": "test_inet_tiny",
            "model_path": "./data/pretrained/inet_tiny.pt", "classifier_path": "./data/pretrained/inet_tiny_classifier.pt",
            "inpa_inj_sched_prev": True, "inpa_inj_sched_prev_cumnoise": False,
            "schedule_jump_params": {"t_T": 10, "n_sample": 1, "jump_length": 3, "jump_n_sample": 2},
            "data": {"eval": {"x": {"mask_loader": True, "gt_path": "./data/gts", "mask_path": "./data/masks"}}}}
    conf_path = tmp_path / "test_inet_tiny.yml"
    conf_path.write_text(yaml.safe_dump(conf))
    r = CliRunner().invoke(app, ["inpaint", str(imgs), "--mask", "genhalf", "--config", str(conf_path),
                                 "--out", str(tmp_path / "o"), "--json", "--class", "goldfish"])
    assert r.exit_code == 2 and "goldfish" in r.stderr  # ImageNet names need 1000 classes; this model has 10
    r = CliRunner().invoke(app, ["inpaint", str(imgs), "--mask", "genhalf", "--config", str(conf_path),
                                 "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 0, r.output
    assert r.stdout.count('"done"') == 3 and "t_T=10" in r.stderr
    labels = [__import__("json").loads(l)["label"] for l in r.stdout.splitlines()]
    assert all(0 <= l < 10 for l in labels)  # random class per image, reported


def test_labels_follow_an_out_of_memory_split(cond_setup, monkeypatch):
    from conftest import oom_over_one_image
    from repaint_cli.images import inpaint as pipeline
    whole = run(cond_setup, "whole")  # random class per image
    monkeypatch.setattr(pipeline, "sample_batch", oom_over_one_image(pipeline.sample_batch))
    split = run(cond_setup, "split")
    assert all(np.array_equal(whole[k], split[k]) for k in whole)
