"""bf16 against fp32 on the CPU (issue 34): seconds per UNet call, batch invariance, paired quality.

* speed: the embedded model (32 px) at batch 1 and 16, and the paper checkpoints' 256 px architecture
  (celeba256's card, random weights) at batch 1; each as the CLI prepares it (channels_last, bf16 weights
  under ``torch.autocast("cpu", dtype=torch.bfloat16)``), warm-up first, then the median of --repeats calls;
* guided32: the same for the two passes of a guided step (forward with autograd, backward to the input);
* batch invariance: a batch of 4 against each image alone, bits compared, at both precisions;
* paired quality: the bundled examples (held-out emoji) inpainted by both precisions with the same masks
  and noise keys; the hole PSNR difference per image, its mean and 95% interval (Student's t);
* frontier: the same pairing on the frontier's set (benchmarks/frontier.py: the first --n held-out emoji of
  data/emoji32.npz, its six mask kinds, its noise keys), with emoji32's default preset and its guidance, at
  batch 16, both precisions on the same part of the images one after the other (so both see the same load);
  per-image results kept in benchmarks/bf16-frontier.json as it goes, and a stopped run resumes there.

    python benchmarks/bf16.py --threads 2 --parts speed32,invariance,quality
    python benchmarks/bf16.py --threads 2 --parts speed256 --repeats 2
    python benchmarks/bf16.py --threads 1 --parts guided32    # a guided step's forward and backward
    OMP_NUM_THREADS=1 python benchmarks/bf16.py --threads 1 --parts frontier --n 96
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
import frontier  # noqa: E402
from repaint_cli.files import sha256_model  # noqa: E402
from repaint_cli.core.schedule import PRESETS, preset_guidance, preset_guidance_calls  # noqa: E402
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


def per_guided_call(net, size: int, batch: int, repeats: int) -> tuple[float, float]:
    """Seconds of a guided step's two passes, as reconstruction guidance runs them (core/guidance.py):
    the forward with autograd on, then the backward to the input; medians after a warm-up."""
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.full((batch,), 500, dtype=torch.int64)
    forward, backward = [], []
    for i in range(repeats + 1):
        x_in = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = net(x_in, t)
        t1 = time.perf_counter()
        torch.autograd.grad(out[:, :3].square().sum(), x_in)
        t2 = time.perf_counter()
        if i:  # the first: warm-up
            forward.append(t1 - t0)
            backward.append(t2 - t1)
    return statistics.median(forward), statistics.median(backward)


def speed_guided(model, size, batches, repeats, threads) -> dict:
    out = {}
    for b in batches:
        for precision in ("fp32", "bf16"):
            f, bw = per_guided_call(prepared(model, precision, threads), size, b, repeats)
            out[f"{size}px batch {b} {precision} forward with grad"] = round(f, 4)
            out[f"{size}px batch {b} {precision} backward"] = round(bw, 4)
            print(f"{size}px batch {b} {precision}: forward with grad {f:.4f} s, backward {bw:.4f} s", flush=True)
    return out


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


PRECISIONS = ("fp32", "bf16")


def frontier_run(loaded, a) -> dict:
    """Both precisions on the frontier's images and masks, a part of --batch images at a time (every mask,
    fp32 then bf16), the per-image metrics and seconds saved after each part. fp32 is batch-invariant and
    keyed as the frontier is, so it gives frontier.py's own per-image numbers: past --fp32-parts parts they
    are taken from benchmarks/frontier-paired.json (the parts computed here are checked equal to them)."""
    with np.load(a.data) as z:
        images = z["heldout"][:a.n]
    size, hp = loaded.model.cfg.image_size, loaded.hparams
    nets = {p: prepared(loaded.model, p, a.threads) for p in PRECISIONS}
    jump, guidance, which = PRESETS[a.preset], preset_guidance(a.preset), preset_guidance_calls(a.preset)
    setup = {"preset": a.preset, "guidance": guidance, "batch": a.batch, "threads": a.threads,
             **({"guidance_calls": which} if which != "all" else {})}
    kept_at = a.out.with_name(a.out.stem + "-frontier.json")
    kept = json.loads(kept_at.read_text()) if kept_at.is_file() and not a.fresh else {}
    results = kept.get("results", {}) if kept.get("setup") == setup else {}
    stored = frontier_fp32(a.preset)

    def save():
        kept_at.write_text(json.dumps({"setup": setup, "date": time.strftime("%Y-%m-%d"),
                                       "cpu": torch.backends.cpu.get_cpu_capability(), "results": results}))

    holes = {kind: frontier.holes_for(kind, len(images), size) for kind in a.frontier_kinds}
    for part, stop in enumerate(range(a.batch, len(images) + a.batch, a.batch)):
        stop = min(stop, len(images))
        for kind in a.frontier_kinds:
            for p in PRECISIONS:
                r = results.setdefault(kind, {}).setdefault(p, {"seconds": [], "timed_images": 0, "copied": 0,
                                                                "per_image": {"psnr": [], "ssim": [], "seam": []}})
                done = len(r["per_image"]["psnr"])
                if done >= stop:
                    continue
                if p == "fp32" and part >= a.fp32_parts and kind in stored:
                    for k in r["per_image"]:
                        r["per_image"][k] += stored[kind][k][done:stop]
                    r["copied"] += stop - done
                    continue
                t0 = time.perf_counter()
                outs = frontier.repaint_batch(nets[p], hp, images[done:stop], holes[kind][done:stop], jump,
                                              batch=a.batch, guidance=guidance, offset=done, guidance_calls=which)
                r["seconds"].append(round(time.perf_counter() - t0, 3))  # one per part of the images
                r["timed_images"] += stop - done
                for k, v in frontier.per_image(outs, images[done:stop], holes[kind][done:stop]).items():
                    r["per_image"][k] += v
                if p == "fp32" and kind in stored:
                    r["same_as_frontier"] = r.get("same_as_frontier", True) and \
                        r["per_image"]["psnr"][done:stop] == stored[kind]["psnr"][done:stop]
                print(f"{kind:11s} {p} images {done}-{stop - 1}: {r['seconds'][-1] / (stop - done):.2f} s/img "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
                save()
    return frontier_summary(results, setup)


def frontier_fp32(preset: str) -> dict:
    """frontier.py's kept per-image metrics of the candidate that is this preset, per mask ({} if none)."""
    path = ROOT / "benchmarks" / "frontier-paired.json"
    label = frontier.preset_candidate(preset)
    if label is None or not path.is_file():
        return {}
    kept = json.loads(path.read_text())
    if kept.get("weights_sha256") not in (None, sha256_model(ROOT / "weights" / "emoji32.safetensors")):
        return {}  # sampled with other weights: nothing to copy
    return {kind: r[label]["per_image"] for kind, r in kept["results"].items() if label in r}


def frontier_summary(results: dict, setup: dict) -> dict:
    """Per mask: bf16 - fp32 paired (hole PSNR dB, hole SSIM; mean, 95% half-width, images) and each
    precision's seconds per image over the parts both timed."""
    rows = {}
    for kind, r in results.items():
        if not all(p in r and r[p]["per_image"]["psnr"] for p in PRECISIONS):
            continue
        a, b = r["fp32"]["per_image"], r["bf16"]["per_image"]
        parts = min(len(r["fp32"]["seconds"]), len(r["bf16"]["seconds"]))
        rows[kind] = {**{f"{metric}_bf16_minus_fp32": [round(v, 4) for v in frontier.paired(b[metric], a[metric])]
                         for metric in ("psnr", "ssim")},
                      "fp32_psnr": round(float(np.mean(a["psnr"][:len(b["psnr"])])), 3),
                      "fp32_copied_from_frontier": r["fp32"]["copied"],
                      "fp32_same_as_frontier": r["fp32"].get("same_as_frontier"),
                      "timed_parts": parts, **{f"{p}_seconds": round(sum(r[p]["seconds"][:parts]), 1)
                                               for p in PRECISIONS}}
        print(kind, rows[kind], flush=True)
    return {**setup, "kinds": rows}


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
    ap.add_argument("--n", type=int, default=96, help="frontier: held-out images per mask")
    ap.add_argument("--batch", type=int, default=16, help="frontier: images per sampling batch")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "emoji32.npz")
    ap.add_argument("--frontier-kinds", nargs="+", default=frontier.KINDS)
    ap.add_argument("--fp32-parts", type=int, default=1000, help="frontier: fp32 computed (and timed) on the "
                    "first N parts; later parts take frontier.py's kept fp32 numbers (the same, being batch-invariant)")
    ap.add_argument("--fresh", action="store_true", help="frontier: ignore the per-image results kept")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "bf16.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    result = json.loads(a.out.read_text()) if a.out.is_file() else {}
    result.setdefault("runs", {})
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": a.threads, "load1": round(os.getloadavg()[0], 2),
             "torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}
    parts = a.parts.split(",")
    loaded = load("emoji32") if {"speed32", "guided32", "invariance", "quality", "frontier"} & set(parts) else None
    if "speed32" in parts:
        result["runs"]["speed32"] = {**stamp, **speed(loaded.model, 32, (1, 16), a.repeats, a.threads)}
    if "guided32" in parts:
        result["runs"]["guided32"] = {**stamp, **speed_guided(loaded.model, 32, (1, 16), a.repeats, a.threads)}
    if "invariance" in parts:
        result["runs"]["invariance"] = {**stamp, **invariance(loaded.model, a.threads)}
    if "quality" in parts:
        result["runs"]["quality"] = {**stamp, "preset": a.preset, **quality(loaded, a.threads, a.kinds, a.preset)}
    if "frontier" in parts:
        result["runs"]["frontier"] = {**stamp, "n": a.n, **frontier_run(loaded, a)}
    if "speed256" in parts:
        result["runs"]["speed256"] = {**stamp, **speed(paper_architecture(), 256, (1,), a.repeats, a.threads)}
    stamp_end = round(os.getloadavg()[0], 2)
    print(f"load average at the end: {stamp_end}")
    a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
