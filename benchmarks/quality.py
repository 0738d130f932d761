"""Quality on the held-out emoji: RePaint with and without resampling against OpenCV.

For each mask kind, on the same held-out images and the same masks:
  - RePaint with resampling (the model's preset, or --preset),
  - RePaint without resampling at the same number of UNet calls (jump_n_sample 1,
    t_T = that count: the paper's "slowing down" ablation),
  - OpenCV Telea and Navier-Stokes.
Reports hole PSNR, hole SSIM and a boundary-seam error (how far the gradient
magnitude on the hole's border ring is from the original's, in grey levels:
0 is like the original), as mean and 95% confidence interval. Writes a table into
benchmarks/RESULTS.md (between markers) and a picture grid.

    python benchmarks/quality.py                        # 64 held-out images, all six kinds
    python benchmarks/quality.py --presets paper fast draft --kinds thick   # preset cost
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from repaint_cli.core.diffusion import diffusion_from_hparams  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402
from repaint_cli.images.masks import generate_mask  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.core.noise import image_key, keys_tensor  # noqa: E402
from repaint_cli.images.guidance import reconstruction  # noqa: E402
from repaint_cli.images.sampling import to_uint8  # noqa: E402
from repaint_cli.core.sampler import Conditioning, repaint  # noqa: E402
from repaint_cli.core.schedule import PRESETS, JumpParams, guided_calls, jump_schedule, schedule_summary  # noqa: E402

KINDS = ["thick", "thin", "genhalf", "ex64", "nn2", "ev2li"]


# ---------- metrics (uint8 RGB images, bool hole masks) ----------

def hole_psnr(out, gt, hole):
    err = (out.astype(np.float64) - gt.astype(np.float64))[hole]
    mse = float((err ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ssim_map(a, b):
    """Per-pixel SSIM (Gaussian window, sigma 1.5, 7x7: small images), averaged over channels."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (7, 7), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    va, vb, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return s.mean(axis=2)


def hole_ssim(out, gt, hole):
    return float(ssim_map(out, gt)[hole].mean())


def seam_score(out, gt, hole):
    """Seam error: mean |(|grad out| - |grad gt|)| on the hole's border ring, in grey levels.

    0 means the border looks exactly as in the original; a visible seam (or a
    border smoothed flat) raises it. Per pixel, so it stays stable where the
    original is flat (a ratio of energies would divide by ~0 on white backgrounds).
    """
    h8 = hole.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    ring = cv2.dilate(h8, k) != cv2.erode(h8, k)

    def grad_mag(img):
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
        # /8: the 3x3 Sobel kernel's weights sum to 8 in magnitude, so this is grey levels per pixel
        return np.hypot(cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)) / 8

    if not ring.any():
        return 0.0
    return float(np.abs(grad_mag(out) - grad_mag(gt))[ring].mean())


def mean_ci(values):
    v = np.asarray(values, dtype=np.float64)
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return float(v.mean()), float(half)


# ---------- methods ----------

def opencv_inpaint(gt, hole, flag):
    bgr = cv2.cvtColor(gt, cv2.COLOR_RGB2BGR)
    bgr[hole] = 0
    out = cv2.inpaint(bgr, hole.astype(np.uint8) * 255, 3, flag)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def repaint_batch(model, hp, images, holes, jump: JumpParams, seed=0, batch=64, method="repaint", eta=0.0,
                  guidance=0.0, offset=0, guidance_calls="all"):
    """Inpaint held-out images with a jump schedule, a reverse step (``--method``) and reconstruction
    guidance (``--guidance``, on ``--guidance-calls``), as the CLI samples. ``offset``: the index of ``images[0]``
    among the held-out images (its noise key is ``heldout{index}``), so a run in parts draws the same noise."""
    diffusion = diffusion_from_hparams(hp, str(jump.t_T))
    times = jump_schedule(jump)
    guided = guided_calls(times, guidance_calls)
    outs = []
    for i in range(0, len(images), batch):
        gt = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        keep = torch.from_numpy(~holes[i:i + batch])[:, None]
        keys = keys_tensor([image_key(seed, f"heldout{j}") for j in range(offset + i, offset + i + len(gt))])
        coefs = diffusion.coefficients(eta=eta if method == "ddim" else None)
        net, cond_fn = reconstruction(model, diffusion, gt, keep, guidance, guided=guided)
        cond = Conditioning(gt, keep, keys, coefs, cond_fn=cond_fn, noise_index=torch.arange(gt[0].numel()),
                            method=method)
        with torch.no_grad():
            x = repaint(net, cond, times)
        samples = to_uint8(x)
        outs.append(np.where(holes[i:i + batch, :, :, None], samples, images[i:i + batch]))  # paste known
    return np.concatenate(outs)


def masks_for(kind, n, size, seed=0):
    return np.stack([generate_mask(kind, size, size, seed, i) < 128 for i in range(n)])  # True = hole


def per_image(outputs, images, holes) -> dict[str, list[float]]:
    """Each image's hole PSNR, hole SSIM and seam error, in image order."""
    rows = {"psnr": [], "ssim": [], "seam": []}
    for out, gt, hole in zip(outputs, images, holes):
        rows["psnr"].append(hole_psnr(out, gt, hole))
        rows["ssim"].append(hole_ssim(out, gt, hole))
        rows["seam"].append(seam_score(out, gt, hole))
    return rows


def evaluate(outputs, images, holes):
    return {k: mean_ci(v) for k, v in per_image(outputs, images, holes).items()}


def grid_picture(path, images, holes_by_kind, outs_by_kind, methods, n_show=4, scale=4):
    """Rows: (kind, image); columns: ground truth, masked input, each method."""
    size = images.shape[1]
    tiles = []
    for kind, holes in holes_by_kind.items():
        for j in range(min(n_show, len(images))):
            masked = images[j].copy()
            masked[holes[j]] = (masked[holes[j]] * 0.3 + np.array([40, 90, 200]) * 0.7).astype(np.uint8)
            row = [images[j], masked] + [outs_by_kind[kind][m][j] for m in methods]
            tiles.append(np.concatenate([np.pad(t, ((1, 1), (1, 1), (0, 0)), constant_values=255) for t in row], 1))
    grid = np.concatenate(tiles, 0)
    grid = cv2.resize(grid, (grid.shape[1] * scale, grid.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    header = np.full((28, grid.shape[1], 3), 255, np.uint8)
    col_w = (size + 2) * scale
    for c, name in enumerate(["original", "masked"] + methods):
        cv2.putText(header, name[:14], (c * col_w + 3, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([header, grid], 0), cv2.COLOR_RGB2BGR))


def update_results(section: str, body: str):
    """Replace (or append) one marked section of RESULTS.md; a lock lets parallel runs share the file."""
    import fcntl

    path = ROOT / "benchmarks" / "RESULTS.md"
    with open(ROOT / "benchmarks" / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _replace_section(path, section, body)


def _replace_section(path: Path, section: str, body: str):
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def fmt(m):
    return f"{m[0]:.2f} ± {m[1]:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "emoji32.npz"))
    p.add_argument("--model", default="emoji32")
    p.add_argument("--n", type=int, default=64, help="held-out images (first N by glyph id)")
    p.add_argument("--kinds", nargs="+", default=KINDS)
    p.add_argument("--presets", nargs="+", default=None,
                   help="compare these presets (RePaint only) instead of the method comparison")
    p.add_argument("--preset", default=None, help="the resampling schedule (default: the model card's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--section", default=None, help="RESULTS.md section name")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with np.load(args.data) as z:
        images = z["heldout"][: args.n]
    loaded = load(args.model)
    hp = loaded.hparams
    model = prepare_model(loaded.model, torch.device("cpu"), EngineOptions(threads=args.threads))  # as the CLI runs it
    size = loaded.model.cfg.image_size
    card_preset = (loaded.card.sampling or {}).get("preset", "fast") if loaded.card else "fast"
    date = datetime.date.today().isoformat()
    cmd = "python benchmarks/" + Path(__file__).name + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()

    if args.presets:  # the quality cost of faster presets
        lines = [f"Presets on {len(images)} held-out emoji, mask `{args.kinds[0]}`, model {args.model} ({date}; `{cmd}`)", "",
                 "| preset | UNet calls | hole PSNR (dB) | hole SSIM | seam error (0 = like original) | s/image |",
                 "|---|---|---|---|---|---|"]
        holes = masks_for(args.kinds[0], len(images), size)
        for name in args.presets:
            jp = PRESETS[name]
            t0 = time.time()
            outs = repaint_batch(model, hp, images, holes, jp)
            secs = (time.time() - t0) / len(images)
            m = evaluate(outs, images, holes)
            calls = schedule_summary(jump_schedule(jp))["unet_calls"]
            lines.append(f"| {name} | {calls} | {fmt(m['psnr'])} | {fmt(m['ssim'])} | {fmt(m['seam'])} | {secs:.2f} |")
            print(lines[-1], flush=True)
        if not args.no_write:
            update_results(args.section or "presets", "\n".join(lines))
        return

    jp = PRESETS[args.preset or card_preset]
    calls = schedule_summary(jump_schedule(jp))["unet_calls"]
    no_resample = JumpParams(t_T=min(calls, int(hp.get("diffusion_steps", 1000))), jump_length=1, jump_n_sample=1)
    methods = ["Telea", "NS", f"no resampling (t_T {no_resample.t_T})", f"RePaint ({args.preset or card_preset})"]
    results, outs_by_kind, holes_by_kind = {}, {}, {}
    for kind in args.kinds:
        holes = masks_for(kind, len(images), size)
        outs = {
            methods[0]: np.stack([opencv_inpaint(g, h, cv2.INPAINT_TELEA) for g, h in zip(images, holes)]),
            methods[1]: np.stack([opencv_inpaint(g, h, cv2.INPAINT_NS) for g, h in zip(images, holes)]),
            methods[2]: repaint_batch(model, hp, images, holes, no_resample),
            methods[3]: repaint_batch(model, hp, images, holes, jp),
        }
        results[kind] = {m: evaluate(o, images, holes) for m, o in outs.items()}
        outs_by_kind[kind], holes_by_kind[kind] = outs, holes
        for m in methods:
            r = results[kind][m]
            print(f"{kind:8s} {m:28s} PSNR {fmt(r['psnr'])}  SSIM {fmt(r['ssim'])}  seam {fmt(r['seam'])}", flush=True)
    section = args.section or "quality"
    grid_path = ROOT / "benchmarks" / f"{section}_grid.png"
    grid_picture(grid_path, images, holes_by_kind, outs_by_kind, methods)
    (ROOT / "benchmarks" / f"{section}.json").write_text(json.dumps({"date": date, "command": cmd, "results": results}, indent=1))
    lines = [f"Quality on the first {len(images)} held-out emoji (32x32, never trained on), model `{args.model}`, "
             f"masks seeded 0..{len(images) - 1} ({date}; `{cmd}`). Mean ± 95% CI. Higher PSNR and SSIM are "
             f"better; seam error: mean absolute difference of gradient magnitude from the original on the "
             f"hole's border ring, grey levels, 0 = like the original.", "",
             "| mask | method | hole PSNR (dB) | hole SSIM | seam error |", "|---|---|---|---|---|"]
    for kind in args.kinds:
        for m in methods:
            r = results[kind][m]
            lines.append(f"| {kind} | {m} | {fmt(r['psnr'])} | {fmt(r['ssim'])} | {fmt(r['seam'])} |")
    lines += ["", f"![{section} grid]({grid_path.name})",
              "", "*Rows: the first 4 held-out images per mask kind; columns: original, masked input, "
              + ", ".join(methods) + ".*"]
    if not args.no_write:
        update_results(section, "\n".join(lines))


if __name__ == "__main__":
    main()
