"""Candidate weights against the frontier's, paired image by image on the frontier's images (issue 36 item 4).

A checkpoint from more training replaces ``weights/emoji32.safetensors`` only where it is better on all six masks
of the paired frontier. This samples the candidate with one preset (default: emoji32's, ``fast``) on the first
--n held-out emoji of each mask, with the frontier's masks and noise keys, and pairs it with the per-image results
kept in benchmarks/frontier-paired.json for that preset's candidate (the weights it names by sha256: those shipped
when it was sampled). Prints, per mask, the candidate minus those (hole PSNR dB and SSIM, mean and 95% interval);
writes the per-image numbers to --out.

    python benchmarks/compare_weights.py /tmp/cand/emoji32.safetensors --n 96 --out /tmp/cmp.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from frontier import KINDS, holes_for, paired, preset_candidate  # noqa: E402
from quality import per_image, repaint_batch  # noqa: E402
from repaint_cli.core.schedule import PRESETS, preset_guidance, preset_guidance_calls  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="the candidate's .safetensors (with its sidecar .yaml)")
    p.add_argument("--preset", default="fast")
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--kinds", nargs="+", default=KINDS)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--out", default="/tmp/compare_weights.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with np.load(ROOT / "data" / "emoji32.npz") as z:
        images = z["heldout"][: args.n]
    loaded = load(args.weights)
    model = prepare_model(loaded.model, torch.device("cpu"), EngineOptions(threads=1))
    label = preset_candidate(args.preset)
    frontier_file = json.loads((ROOT / "benchmarks" / "frontier-paired.json").read_text())
    kept = frontier_file["results"]
    print(f"against the weights of sha256 {frontier_file.get('weights_sha256', '?')[:12]}.. (frontier-paired.json)")
    jp, g, which = PRESETS[args.preset], preset_guidance(args.preset), preset_guidance_calls(args.preset)
    out = {"weights": args.weights, "preset": args.preset, "frontier_candidate": label, "masks": {}}
    for kind in args.kinds:
        holes = holes_for(kind, len(images), loaded.model.cfg.image_size)
        rows = {"psnr": [], "ssim": []}
        t0 = time.time()
        for start in range(0, len(images), args.chunk):
            stop = min(start + args.chunk, len(images))
            outs = repaint_batch(model, loaded.hparams, images[start:stop], holes[start:stop], jp, guidance=g,
                                 offset=start, guidance_calls=which)
            for k, v in per_image(outs, images[start:stop], holes[start:stop]).items():
                if k in rows:
                    rows[k] += v
        shipped = kept[kind][label]["per_image"]
        d = {m: paired(rows[m], shipped[m]) for m in rows}
        out["masks"][kind] = {"candidate": rows, "minus_frontier_weights": {m: d[m][:2] for m in d}, "images": d["psnr"][2]}
        print(f"{kind:11s} candidate - frontier's: hole PSNR {d['psnr'][0]:+.3f} ± {d['psnr'][1]:.3f} dB, "
              f"SSIM {d['ssim'][0]:+.4f} ± {d['ssim'][1]:.4f} ({d['psnr'][2]} images, "
              f"{(time.time() - t0) / len(images):.2f} s/img)", flush=True)
        Path(args.out).write_text(json.dumps(out))
    better = all(v["minus_frontier_weights"]["psnr"][0] > 0 for v in out["masks"].values())
    print(f"better in the mean hole PSNR on all {len(out['masks'])} masks: {better}")


if __name__ == "__main__":
    main()
