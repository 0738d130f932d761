"""images/prepare.py: images and masks read ahead of the device, in input order, and the notes on what came out."""
import numpy as np
from repaint_cli.images.inpaint import InpaintOptions, Reporter, inpaint
import torch
from PIL import Image
from repaint_cli.images import image_files as imageio
from repaint_cli.images import inpaint as pipeline
import threading
from conftest import make_images
from repaint_cli.images import prepare as prepare_mod
from cli_helpers import hole_mask, photo


def test_enlarged_fill_warns_once_and_first_line_names_the_masks(tmp_path, small_checkpoint):
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    for i in range(2):
        photo(imgs / f"big{i}.png", 60, 80, seed=i)
        hole_mask(masks / f"big{i}.png", 60, 80, box=(10, 50, 10, 70))  # a 60x40 hole, model at 16 px
    rep = Reporter()
    summary = inpaint([str(imgs)], InpaintOptions(mask=str(masks), model=str(small_checkpoint), t_T=4, jump_length=2,
                                                  jump_n_sample=1, out_dir=tmp_path / "out"), rep)
    assert summary.done == 2
    assert rep.lines[0].startswith(f"masks: {masks}") and "--mask-convention keep" in rep.lines[0]
    ups = [line for line in rep.lines if line.startswith("hole region")]
    assert len(ups) == 1, rep.lines  # once per run, not per image
    assert ups[0].startswith("hole region 60x40 generated at 16 px, upscaled") and "larger size" in ups[0]


FAST = dict(mask="box", t_T=4, jump_length=2, jump_n_sample=1)


def opts(ckpt, out, **kw):
    return InpaintOptions(**{**FAST, "model": str(ckpt), "out_dir": out, **kw})


def dark_fill(sample_batch):
    """Wraps pipeline.sample_batch: every sample comes back near-black (as the default model on photos)."""
    def wrapped(*a, **k):
        return torch.full_like(sample_batch(*a, **k), -0.75)
    return wrapped


def test_a_fill_far_from_the_hole_border_colour_is_named(tmp_path, small_checkpoint, monkeypatch):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (230, 230, 250)).save(imgs / f"flat{i}.png")
    monkeypatch.setattr(pipeline, "sample_batch", dark_fill(pipeline.sample_batch))
    rep = Reporter()
    summary = inpaint([str(imgs)], opts(small_checkpoint, tmp_path / "out"), rep)
    assert summary.done == 3
    far = [line for line in rep.lines if "far from their hole border's colour" in line]
    assert len(far) == 1 and far[0].startswith("3 image(s)") and "flat0.png" in far[0], rep.lines  # one line per run
    per_image = [w for r in summary.results for w in r.warnings if w.startswith("fill colour")]
    assert len(per_image) == 3 and "(32,32,32) far from the hole border's (230,230,250)" in per_image[0]


def test_a_fill_close_to_its_border_is_not_named(tmp_path):
    rgb = np.full((16, 16, 3), 200, np.uint8)
    keep = np.ones((16, 16), bool)
    keep[4:10, 4:10] = False
    rgb[~keep] = (190, 210, 205)
    fill, border = imageio.fill_and_border_colours(rgb, keep)
    assert fill.tolist() == [190, 210, 205] and border.tolist() == [200, 200, 200]
    assert imageio.fill_and_border_colours(rgb, np.ones((16, 16), bool)) is None


def opts_sampling(ckpt, out, **kw):
    base = dict(mask="box", model=str(ckpt), t_T=6, jump_length=2, jump_n_sample=2, out_dir=out)
    base.update(kw)
    return InpaintOptions(**base)


def test_the_next_batch_is_read_while_the_current_one_runs(tmp_path, small_checkpoint, monkeypatch):
    imgs = make_images(tmp_path / "imgs", 4)
    next_batch_started = threading.Event()
    threads = set()
    real_prepare, real_sample = prepare_mod.prepare, pipeline.sample_batch

    def prepare(job, o, S):
        threads.add(threading.current_thread().name)
        if job.stem == "img0002":  # the first image of the second batch
            next_batch_started.set()
        return real_prepare(job, o, S)

    overlapped = []

    def sample(model, st, batch, *a, **k):
        if batch[0].job.stem == "img0000":
            overlapped.append(next_batch_started.wait(timeout=20))
        return real_sample(model, st, batch, *a, **k)

    monkeypatch.setattr(prepare_mod, "prepare", prepare)
    monkeypatch.setattr(pipeline, "sample_batch", sample)
    assert inpaint([str(imgs)], opts_sampling(small_checkpoint, tmp_path / "out", batch_size=2)).done == 4
    assert overlapped == [True]
    assert all(name.startswith("repaint-prefetch") for name in threads)


def test_unreadable_inputs_are_still_reported_in_order_with_prefetch(tmp_path, small_checkpoint):
    imgs = make_images(tmp_path / "imgs", 3)
    (imgs / "img0001.png").write_bytes(b"not a png")
    rep = Reporter()
    summary = inpaint([str(imgs)], opts_sampling(small_checkpoint, tmp_path / "out", batch_size=2), rep)
    assert summary.done == 2 and summary.failed == 1
    assert [(r.status, r.input[-11:]) for r in summary.results] == [  # input order (issue 32, N9)
        ("done", "img0000.png"), ("failed", "img0001.png"), ("done", "img0002.png")]
