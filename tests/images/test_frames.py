"""images/frames.py: intermediate frames, animations and concat images."""
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import write_png
from repaint_cli.images import frames as fr
from repaint_cli.files import is_atomic_temp
from repaint_cli.images.frames import (ConcatHook, FrameHook, compose_frame, concat_image, frame_indices, hooks_from_options,
                                       timeline_bar, write_animation)
from repaint_cli.images.inpaint import inpaint
from repaint_cli.images.options import InpaintOptions
from repaint_cli.core.sampler import StepInfo
from repaint_cli.core.schedule import PRESETS, jump_schedule

NAME_RE = re.compile(r"^(\d{4})_t(\d{3})_(xt|x0)\.png$")
DRAFT_TIMES = jump_schedule(PRESETS["draft"])
DRAFT_TOTAL = len(DRAFT_TIMES) - 1


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    d.mkdir()
    write_png(d / "sq.png", rng.integers(0, 256, (16, 16, 3)))
    write_png(d / "wide.png", rng.integers(0, 256, (23, 40, 3)))
    return d


def run(images, checkpoint, out, frames=0, animate=None, concat=False):
    opts = InpaintOptions(mask="box", model=str(checkpoint), preset="draft", out_dir=out,
                          extras=hooks_from_options(out, frames, animate, concat))
    summary = inpaint([str(images)], opts)
    assert summary.failed == 0 and summary.done == 2, summary
    return summary


# ----------------------------------------------------------------------------- frame_indices


def test_frame_indices_properties():
    for total in (1, 2, 3, 7, 50, 140, 4500):
        for n in (1, 2, 3, 5, 24, 139, 140, 141, 10_000):
            idx = frame_indices(total, n)
            assert len(idx) == min(n, total)
            assert idx == sorted(set(idx))
            assert idx[-1] == total - 1
            assert 0 <= idx[0]
            if n >= 2:
                assert idx[0] == 0
                gaps = np.diff(idx) if len(idx) > 1 else np.array([1])
                assert gaps.max() - gaps.min() <= 1  # evenly spread
            if n >= total:
                assert idx == list(range(total))
    assert frame_indices(140, 0) == [] and frame_indices(140, -3) == [] and frame_indices(0, 5) == []
    assert frame_indices(140, 1) == [139]


def test_hooks_from_options_validation(tmp_path):
    assert hooks_from_options(tmp_path, 0, None, False) == []
    assert hooks_from_options(tmp_path, None, None, False) == []
    (h,) = hooks_from_options(tmp_path, None, "gif", False)
    assert isinstance(h, FrameHook) and h.n_frames == fr.DEFAULT_ANIMATION_FRAMES and h.animate == "gif"
    hooks = hooks_from_options(tmp_path, 7, "MP4", True)
    assert [type(x) for x in hooks] == [FrameHook, ConcatHook] and hooks[0].n_frames == 7 and hooks[0].animate == "mp4"
    with pytest.raises(ValueError, match="--animate"):
        hooks_from_options(tmp_path, 5, "webm", False)
    with pytest.raises(ValueError, match="--frames"):
        hooks_from_options(tmp_path, -1, None, False)


# ----------------------------------------------------------------------------- the real sampler


def test_frames_gif_and_concat_end_to_end(images, small_checkpoint, tmp_path):
    out = tmp_path / "out"
    run(images, small_checkpoint, out, frames=5, animate="gif", concat=True)
    expected = frame_indices(DRAFT_TOTAL, 5)
    for stem, (h, w) in (("sq", (16, 16)), ("wide", (23, 40))):
        names = sorted(p.name for p in (out / "frames" / stem).iterdir())
        parsed = [NAME_RE.match(n).groups() for n in names]
        xt = [(int(i), int(t)) for i, t, k in parsed if k == "xt"]
        x0 = [(int(i), int(t)) for i, t, k in parsed if k == "x0"]
        assert [i for i, _ in xt] == expected
        assert all(t == max(DRAFT_TIMES[i + 1] + 1, 0) for i, t in xt)  # paper time of the pictured x_t
        assert xt[-1][1] == 0 and x0 == xt  # the first step is a reverse step: x0 exists at every frame
        frame = np.asarray(Image.open(out / "frames" / stem / names[0]))
        assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8

        gif = Image.open(out / f"{stem}.gif")
        assert gif.n_frames == 5 and gif.info.get("loop") == 0 and gif.size[1] >= 256

        concat = np.asarray(Image.open(out / f"{stem}_concat.png").convert("RGB"))
        assert concat.shape == (h, 3 * w + 2 * fr.SEPARATION, 3)
        output = np.asarray(Image.open(out / f"{stem}.png").convert("RGB"))
        assert np.array_equal(concat[:, -w:], output)
        mask_panel = concat[:, w + fr.SEPARATION:2 * w + fr.SEPARATION, 0]
        assert set(np.unique(mask_panel)) == {0, 255} and (mask_panel == 0).any()
        assert (concat[:, w:w + fr.SEPARATION] == 255).all()

    # the 16x16 image is the model's size: its last x_t frame is the output in the hole
    last = np.asarray(Image.open(out / "frames" / "sq" / f"{expected[-1]:04d}_t000_xt.png"))
    output = np.asarray(Image.open(out / "sq.png"))
    concat = np.asarray(Image.open(out / "sq_concat.png").convert("RGB"))
    hole = concat[:, 16 + fr.SEPARATION:32 + fr.SEPARATION, 0] == 0
    assert np.array_equal(last[hole], output[hole])
    assert not any(is_atomic_temp(p) for p in out.rglob("*"))


def test_mp4_end_to_end_and_rerun_replaces_frames(images, small_checkpoint, tmp_path):
    out = tmp_path / "out"
    run(images, small_checkpoint, out, frames=30)
    assert len(list((out / "frames" / "sq").glob("*_xt.png"))) == 30
    for p in out.glob("*.png"):
        p.unlink()
    run(images, small_checkpoint, out, frames=6, animate="mp4")
    assert len(list((out / "frames" / "sq").glob("*_xt.png"))) == 6  # stale frames of the first run removed
    for stem in ("sq", "wide"):
        cap = cv2.VideoCapture(str(out / f"{stem}.mp4"))
        assert cap.isOpened()
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == 6 and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
        cap.release()
        assert not (out / f"{stem}.gif").exists()


def test_mp4_falls_back_to_gif(tmp_path, monkeypatch):
    class Closed:
        def __init__(self, *a):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(fr.cv2, "VideoWriter", Closed)
    fr.mp4_codec.cache_clear()  # probe again, with no codec that opens
    frames = [np.full((20, 30, 3), v, np.uint8) for v in (0, 100, 200)]
    try:
        path, warnings = write_animation(tmp_path / "a", frames, "mp4")
    finally:
        fr.mp4_codec.cache_clear()
    assert path == tmp_path / "a.gif" and len(warnings) == 1 and "GIF" in warnings[0]
    assert Image.open(path).n_frames == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]


# ----------------------------------------------------------------------------- the hook without the sampler


def _item(stem="im", S=8):
    keep = np.ones((S, S), bool)
    keep[2:6, 2:6] = False
    return SimpleNamespace(job=SimpleNamespace(stem=stem, image=Path(f"{stem}.png")), keep_S=keep)


def _steps(cb, total=10, S=8, B=1):
    times = list(range(total - 1, -1, -1)) + [-1]
    for i in range(total):
        x = torch.full((B, 3, S, S), -1 + 2 * i / total)
        cb(StepInfo(i, total, times[i], times[i + 1], x, x * 0.5))
    return x


def test_frame_hook_zero_frames_does_nothing(tmp_path):
    hook = FrameHook(tmp_path, 0)
    assert hook.step_callback([_item()]) is None
    calls = []
    hook.finish(_item(), np.zeros((8, 8, 3), np.uint8), None, lambda *a: calls.append(a))
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_frame_hook_skips_unchosen_steps_and_checks_the_sample(tmp_path):
    item = _item()
    hook = FrameHook(tmp_path, 2)
    cb = hook.step_callback([item])
    t_T = 10
    cb(StepInfo(0, t_T, 9, 8, torch.zeros(1, 3, 8, 8), None))  # chosen (first) index
    cb(StepInfo(1, t_T, 8, 7, object(), object()))  # not chosen: must not touch x / x0
    cap = hook._cap
    assert cap.indices == [0, 9] and cap.meta == [(0, 9), None]

    x = _steps(cb, t_T)  # a full (retried) run overwrites the slots
    sample = fr.to_uint8_hwc(x[0].numpy())
    calls = []
    hook.finish(item, sample ^ 1, None, lambda fn, *a: calls.append((fn, a)))  # not this run's sample
    assert len(calls) == 1 and "not written" in calls[0][0]()[0]
    calls.clear()
    hook.finish(item, sample, None, lambda fn, *a: calls.append((fn, a)))
    (fn, args), = calls
    assert fn is fr.write_frames
    # the writer thread gets plain copies: it must never hold (and free) the pinned capture buffers
    frames = args[2]
    for _, _, xt, x0 in frames:
        for img in (xt, x0):
            assert not np.shares_memory(img, cap.xt.numpy()) and not np.shares_memory(img, cap.x0.numpy())
    assert fn(*args) == []
    assert sorted(p.name for p in (tmp_path / "frames" / "im").iterdir()) == [
        "0000_t009_x0.png", "0000_t009_xt.png", "0009_t000_x0.png", "0009_t000_xt.png"]


# ----------------------------------------------------------------------------- drawing


def test_compose_frame_tint_scale_and_time_line():
    xt = np.full((16, 16, 3), 128, np.uint8)
    keep = np.ones((16, 16), bool)
    keep[4:12, 4:12] = False
    f = compose_frame(xt, None, keep, 25, 50)
    assert f.shape[0] >= 256 + 20 and f.shape[0] % 2 == 0 and f.shape[1] % 2 == 0
    assert f.shape[1] >= 2 * 256
    k = 16  # 16 px -> 256 px
    inside, outside = f[8 * k, 8 * k], f[14 * k, 14 * k]
    assert tuple(outside) == (128, 128, 128) and inside[2] > inside[0]  # blue-ish tint in the hole only

    def marker(t):
        bar = timeline_bar(300, t, 50)
        return int(np.flatnonzero((bar[-3] == 255).all(axis=1)).mean())

    assert marker(0) < marker(10) < marker(25) < marker(50)
    assert marker(50) > 280 and marker(0) < 20


def test_concat_image_layout():
    rgb = np.full((10, 7, 3), 50, np.uint8)
    keep = np.ones((10, 7), bool)
    keep[3:6, 2:5] = False
    out = np.full((10, 7, 3), 9, np.uint8)
    c = concat_image(rgb, keep, out, sep=3)
    assert c.shape == (10, 27, 3)
    assert (c[:, :7][keep] == 50).all() and not (c[:, :7][~keep] == 50).any()
    assert np.array_equal(c[:, 10:17, 0] == 255, keep) and (c[:, -7:] == 9).all()


# ----------------------------------------------------------------------------- contact sheets


RNG = np.random.default_rng(32)


def test_concat_mask_panel_in_the_runs_convention():
    rgb = np.full((6, 5, 3), 50, np.uint8)
    keep = np.ones((6, 5), bool)
    keep[2:4, 1:3] = False
    panel = lambda c: c[:, 5 + 4: 10 + 4, 0]  # noqa: E731
    assert np.array_equal(panel(concat_image(rgb, keep, rgb)) == 255, keep)
    assert np.array_equal(panel(concat_image(rgb, keep, rgb, convention="hole")) == 255, ~keep)
    hook = hooks_from_options("out", concat=True, mask_convention="hole")[0]
    assert isinstance(hook, ConcatHook) and hook.convention == "hole"


def test_concat_from_the_cli_draws_hole_masks_white(tmp_path):
    from typer.testing import CliRunner

    from repaint_cli.cli.app import app

    rgb = RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    hole = np.zeros((10, 10), np.uint8)
    hole[3:6, 3:7] = 255  # white = hole
    Image.fromarray(hole).save(tmp_path / "hole.png")
    r = CliRunner().invoke(app, ["inpaint", str(tmp_path / "a.png"), "--mask", str(tmp_path / "hole.png"),
                                 "--mask-convention", "hole", "--concat", "--t-T", "2", "--jump-length", "1",
                                 "--jump-n-sample", "1", "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    concat = np.asarray(Image.open(tmp_path / "out" / "a_concat.png"))
    assert np.array_equal(concat[:, 14:24, 0], hole)
