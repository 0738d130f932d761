"""Quality against cost: hole PSNR / SSIM / seam error per UNet call, for every sampler candidate.

On the held-out emoji (never trained on) and six mask kinds (LaMa's thick and thin strokes, and
the four half-image holes), each candidate (a reverse step, `--method`, and a jump schedule)
inpaints the same images with the same masks and noise keys. Writes benchmarks/frontier.json,
a plot (benchmarks/frontier.png: hole PSNR against UNet calls, log axis, one panel per mask)
and a table in benchmarks/RESULTS.md. Results are kept per (mask, candidate) in the JSON as they
come, so a run that is stopped resumes where it was (--fresh starts over).

    python benchmarks/frontier.py --n 24           # make frontier
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import evaluate, fmt, masks_for, opencv_inpaint, repaint_batch, update_results  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.core.schedule import JumpParams, jump_schedule, schedule_summary  # noqa: E402

KINDS = ["thick", "thin", "hole-right", "hole-left", "hole-top", "hole-bottom"]
HALVES = {"hole-right": (slice(None), slice(0.5, None)), "hole-left": (slice(None), slice(None, 0.5)),
          "hole-top": (slice(None, 0.5), slice(None)), "hole-bottom": (slice(0.5, None), slice(None))}


def J(t_T, jump_length=10, jump_n_sample=1, **kw) -> JumpParams:
    return JumpParams(t_T=t_T, jump_length=jump_length, jump_n_sample=jump_n_sample, **kw)


# (label, method, schedule, eta): the paper's schedule is the reference; the rest spend at most ~460 calls
CANDIDATES = [
    ("repaint 250/10/10 (paper)", "repaint", J(250, 10, 10), 0.0),
    ("repaint 100/10/5 (fast until 2026-11-29)", "repaint", J(100, 10, 5), 0.0),
    ("repaint 50/5/5 (quick)", "repaint", J(50, 5, 5), 0.0),
    ("repaint 100/10/5 resample t<=25", "repaint", J(100, 10, 5, start_resampling=25), 0.0),
    ("repaint 30/5/5 (fast)", "repaint", J(30, 5, 5), 0.0),
    ("repaint 50/5/2 (draft)", "repaint", J(50, 5, 2), 0.0),
    ("repaint 240, no resampling", "repaint", J(240, 1, 1), 0.0),
    ("ddnm 50/5/5", "ddnm", J(50, 5, 5), 0.0),
    ("ddnm 30/5/5", "ddnm", J(30, 5, 5), 0.0),
    ("ddim 50/5/5 eta 0", "ddim", J(50, 5, 5), 0.0),
    ("ddim 50/5/5 eta 1", "ddim", J(50, 5, 5), 1.0),
]
BASELINES = ["Telea", "NS"]  # OpenCV, 0 UNet calls
COLOURS = {"repaint": (200, 90, 30), "ddnm": (40, 150, 40), "ddim": (40, 40, 200), "opencv": (120, 120, 120)}  # BGR


def holes_for(kind: str, n: int, size: int) -> np.ndarray:
    """(n, size, size) bool, True = hole: LaMa-style kinds seeded 0..n-1, or a half of the image."""
    if kind not in HALVES:
        return masks_for(kind, n, size)
    rows, cols = HALVES[kind]
    cut = lambda s: None if s is None else int(s * size)  # noqa: E731
    hole = np.zeros((size, size), bool)
    hole[slice(cut(rows.start), cut(rows.stop)), slice(cut(cols.start), cut(cols.stop))] = True
    return np.repeat(hole[None], n, 0)


def calls_of(jump: JumpParams) -> int:
    return schedule_summary(jump_schedule(jump))["unet_calls"]


def plot(path: Path, results: dict, kinds: list[str], paper_label: str) -> None:
    """One panel per mask: hole PSNR (mean, 95% CI bar) against UNet calls per image (log axis)."""
    pw, ph, m = 360, 250, 44  # panel size, margin
    cols = 3
    rows = math.ceil(len(kinds) / cols)
    canvas = np.full((rows * ph + 40, cols * pw, 3), 255, np.uint8)
    cv2.putText(canvas, "hole PSNR (dB) vs UNet calls per image (log); blue RePaint, green DDNM, red DDIM, grey OpenCV",
                (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    xmin, xmax = math.log10(20), math.log10(4000)
    for k, kind in enumerate(kinds):
        ox, oy = (k % cols) * pw, 40 + (k // cols) * ph
        res = results[kind]
        ys = [r["psnr"][0] for r in res.values()]
        lo, hi = math.floor(min(ys) - 1), math.ceil(max(ys) + 1)

        def px(calls, psnr):
            x = ox + m + (math.log10(max(calls, 20)) - xmin) / (xmax - xmin) * (pw - m - 12)
            y = oy + ph - m + (lo - psnr) / (hi - lo) * (ph - m - 24)
            return int(round(x)), int(round(y))

        cv2.rectangle(canvas, (ox + m, oy + 20), (ox + pw - 12, oy + ph - m), (0, 0, 0), 1)
        cv2.putText(canvas, kind, (ox + m + 4, oy + 36), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for calls in (20, 50, 100, 250, 500, 1000, 2500):
            x, y = px(calls, lo)
            cv2.line(canvas, (x, y), (x, y + 4), (0, 0, 0), 1)
            cv2.putText(canvas, str(calls), (x - 10, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (0, 0, 0), 1, cv2.LINE_AA)
        for v in range(lo, hi + 1, max(1, (hi - lo) // 5)):
            x, y = px(20, v)
            cv2.putText(canvas, str(v), (ox + 14, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (0, 0, 0), 1, cv2.LINE_AA)
        if paper_label in res:  # the paper's quality as a dashed line
            y = px(20, res[paper_label]["psnr"][0])[1]
            for x in range(ox + m, ox + pw - 12, 8):
                cv2.line(canvas, (x, y), (x + 4, y), (200, 90, 30), 1)
        for label, r in res.items():
            method = r["method"]
            calls = max(r["calls"], 20)
            x, y = px(calls, r["psnr"][0])
            _, y1 = px(calls, r["psnr"][0] - r["psnr"][1])
            _, y0 = px(calls, r["psnr"][0] + r["psnr"][1])
            colour = COLOURS.get(method, (0, 0, 0))
            cv2.line(canvas, (x, y0), (x, y1), colour, 1)
            if method == "opencv":
                cv2.drawMarker(canvas, (x, y), colour, cv2.MARKER_TILTED_CROSS, 8, 1)
            else:
                cv2.circle(canvas, (x, y), 3, colour, -1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "emoji32.npz"))
    p.add_argument("--model", default="emoji32")
    p.add_argument("--n", type=int, default=24, help="held-out images (the first N by glyph id)")
    p.add_argument("--kinds", nargs="+", default=KINDS)
    p.add_argument("--paper-kinds", nargs="+", default=["thick", "thin", "hole-right"],
                   help="masks on which the paper's schedule (2,410 calls) runs; it costs as much as all others")
    p.add_argument("--only", nargs="+", default=None, help="run only candidates whose label contains one of these")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fresh", action="store_true", help="ignore results kept from an earlier run")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with np.load(args.data) as z:
        images = z["heldout"][: args.n]
    loaded = load(args.model)
    model = prepare_model(loaded.model, torch.device("cpu"), EngineOptions(threads=args.threads))  # as the CLI
    size = loaded.model.cfg.image_size
    out_json = ROOT / "benchmarks" / "frontier.json"
    key = {"model": args.model, "n": len(images)}
    kept = json.loads(out_json.read_text()) if out_json.exists() and not args.fresh else {}
    results = kept.get("results", {}) if all(kept.get(k) == v for k, v in key.items()) else {}
    cmd = "python benchmarks/frontier.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    paper_label = CANDIDATES[0][0]

    def save():
        out_json.write_text(json.dumps({**key, "date": datetime.date.today().isoformat(), "command": cmd,
                                        "results": results}, indent=1))

    holes_by_kind = {kind: holes_for(kind, len(images), size) for kind in args.kinds}
    for kind, holes in holes_by_kind.items():
        res = results.setdefault(kind, {})
        for name, flag in zip(BASELINES, (cv2.INPAINT_TELEA, cv2.INPAINT_NS)):
            if name not in res:
                outs = np.stack([opencv_inpaint(g, h, flag) for g, h in zip(images, holes)])
                res[name] = {"method": "opencv", "calls": 0, "seconds": 0.0, **evaluate(outs, images, holes)}
    # the cheapest candidates first: a run stopped early has the most of the frontier
    for label, method, jump, eta in sorted(CANDIDATES, key=lambda c: calls_of(c[2])):
        if args.only and not any(o in label for o in args.only):
            continue
        for kind, holes in holes_by_kind.items():
            res = results[kind]
            if label in res or (label == paper_label and kind not in args.paper_kinds):
                continue
            t0 = time.time()
            outs = repaint_batch(model, loaded.hparams, images, holes, jump, method=method, eta=eta)
            secs = (time.time() - t0) / len(images)
            res[label] = {"method": method, "calls": calls_of(jump), "seconds": round(secs, 3),
                          "schedule": jump.as_dict(), "eta": eta, **evaluate(outs, images, holes)}
            r = res[label]
            print(f"{kind:11s} {label:34s} {r['calls']:5d} calls  PSNR {fmt(r['psnr'])}  SSIM {fmt(r['ssim'])}  "
                  f"seam {fmt(r['seam'])}  {secs:.2f} s/img", flush=True)
            save()

    plot(ROOT / "benchmarks" / "frontier.png", results, [k for k in args.kinds if k in results], paper_label)
    if args.no_write:
        return
    date = datetime.date.today().isoformat()
    labels = [c[0] for c in CANDIDATES] + BASELINES
    lines = [f"Quality against cost on the first {len(images)} held-out emoji, model `{args.model}`, {date} "
             f"(`{cmd}`; {args.threads} thread(s)). Hole PSNR in dB, mean ± 95% CI; UNet calls per image. The paper's "
             f"schedule ran on {', '.join(args.paper_kinds)} only (it costs as much as all the others together).", "",
             "| candidate | UNet calls | " + " | ".join(k for k in args.kinds if k in results) + " |",
             "|---|---|" + "---|" * len([k for k in args.kinds if k in results])]
    for label in labels:
        row = [results[k].get(label) for k in args.kinds if k in results]
        if not any(row):
            continue
        calls = next(r["calls"] for r in row if r)
        lines.append(f"| {label} | {calls} | " + " | ".join(fmt(r["psnr"]) if r else "" for r in row) + " |")
    lines += ["", "Hole SSIM (mean ± 95% CI):", "",
              "| candidate | " + " | ".join(k for k in args.kinds if k in results) + " |",
              "|---|" + "---|" * len([k for k in args.kinds if k in results])]
    for label in labels:
        row = [results[k].get(label) for k in args.kinds if k in results]
        if any(row):
            lines.append(f"| {label} | " + " | ".join(fmt(r["ssim"]) if r else "" for r in row) + " |")
    lines += ["", "![frontier](frontier.png)"]
    update_results("frontier", "\n".join(lines))


if __name__ == "__main__":
    main()
