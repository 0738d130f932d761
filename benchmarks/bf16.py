"""bf16 against fp32 on the CPU (issue 34): seconds per UNet call, batch invariance, paired quality.

* speed: the embedded model (32 px) at batch 1 and 16, and the paper checkpoints' 256 px architecture
  (celeba256's card, random weights) at batch 1; each as the CLI prepares it (channels_last, bf16 weights
  under ``torch.autocast("cpu", dtype=torch.bfloat16)``), warm-up first, then the median of --repeats calls;
* batch invariance: a batch of 4 against each image alone, bits compared, at both precisions;
* paired quality: the bundled examples (held-out emoji) inpainted by both precisions with the same masks
  and noise keys; the hole PSNR difference per image, its mean and 95% interval (Student's t).

    python benchmarks/bf16.py --threads 2 --parts speed32,invariance,quality
    python benchmarks/bf16.py --threads 2 --parts speed256 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import masks_for, per_image, repaint_batch  # noqa: E402
from repaint_cli.core.schedule import PRESETS  # noqa: E402
from repaint_cli.models.cards import find_card  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.models.unet import UNetConfig, UNetModel  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402

CPU = torch.device("cpu")


def prepared(model, precision: str, threads: int):
    return prepare_model(model, CPU, EngineOptions(precision=precision, threads=threads))


def per_call(net, size: int, batch: int, repeats: int) -> float:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.full((batch,), 500, dtype=torch.int64)
    with torch.no_grad():
        net(x, t)  # warm-up: oneDNN's kernels are chosen at the first call
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x, t)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(model, size, batches, repeats, threads) -> dict:
    out = {}
    for b in batches:
        for precision in ("fp32", "bf16"):
            s = per_call(prepared(model, precision, threads), size, b, repeats)
            out[f"{size}px batch {b} {precision}"] = round(s, 4)
            print(f"{size}px batch {b} {precision}: {s:.4f} s per call ({s / b * 1000:.1f} ms per image-call)",
                  flush=True)
    return out


def invariance(model, threads) -> dict:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 500, 20, 0])
    out = {}
    for precision in ("fp32", "bf16"):
        net = prepared(model, precision, threads)
        with torch.no_grad():
            together = net(x, t)
            alone = torch.cat([net(x[i:i + 1].clone(), t[i:i + 1].clone()) for i in range(4)])
        out[precision] = bool(torch.equal(together, alone))
        print(f"batch invariance {precision}: {'same bits' if out[precision] else 'DIFFERENT'}", flush=True)
    return out


def examples() -> np.ndarray:
    files = sorted((ROOT / "examples").glob("*.png"))
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def quality(loaded, threads, kinds, preset) -> dict:
    images = examples()
    hp, size = loaded.hparams, loaded.model.cfg.image_size
    nets = {p: prepared(loaded.model, p, threads) for p in ("fp32", "bf16")}
    diffs, rows = [], {}
    for kind in kinds:
        holes = masks_for(kind, len(images), size)
        psnr = {p: per_image(repaint_batch(nets[p], hp, images, holes, PRESETS[preset]), images, holes)["psnr"]
                for p in nets}
        d = [b - a for a, b in zip(psnr["fp32"], psnr["bf16"])]
        diffs += d
        rows[kind] = {"fp32": round(float(np.mean(psnr["fp32"])), 3), "bf16": round(float(np.mean(psnr["bf16"])), 3),
                      "bf16_minus_fp32": round(float(np.mean(d)), 3)}
        print(kind, rows[kind], flush=True)
    mean, half = mean_t_interval(diffs)
    print(f"bf16 - fp32 hole PSNR over {len(diffs)} pairs: {mean:+.3f} ± {half:.3f} dB", flush=True)
    return {"kinds": rows, "pairs": len(diffs), "mean_db": round(mean, 3), "ci95_db": round(half, 3)}


def mean_t_interval(values) -> tuple[float, float]:
    import scipy.stats

    v = np.asarray(values, dtype=np.float64)
    half = scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def paper_architecture() -> UNetModel:
    card = find_card("celeba256")
    model = UNetModel(UNetConfig.from_dict({**card.hparams, "use_fp16": False}))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval().requires_grad_(False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="speed32,invariance,quality")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kinds", nargs="+", default=["thick", "thin", "medium", "genhalf", "ex64", "box"])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "bf16.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    result = json.loads(a.out.read_text()) if a.out.is_file() else {}
    result.setdefault("runs", {})
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": a.threads, "load1": round(os.getloadavg()[0], 2),
             "torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}
    parts = a.parts.split(",")
    loaded = load("emoji32") if {"speed32", "invariance", "quality"} & set(parts) else None
    if "speed32" in parts:
        result["runs"]["speed32"] = {**stamp, **speed(loaded.model, 32, (1, 16), a.repeats, a.threads)}
    if "invariance" in parts:
        result["runs"]["invariance"] = {**stamp, **invariance(loaded.model, a.threads)}
    if "quality" in parts:
        result["runs"]["quality"] = {**stamp, "preset": a.preset, **quality(loaded, a.threads, a.kinds, a.preset)}
    if "speed256" in parts:
        result["runs"]["speed256"] = {**stamp, **speed(paper_architecture(), 256, (1,), a.repeats, a.threads)}
    stamp_end = round(os.getloadavg()[0], 2)
    print(f"load average at the end: {stamp_end}")
    a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
