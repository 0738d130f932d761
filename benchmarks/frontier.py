"""Quality against cost, paired: each sampler candidate minus the paper's schedule, image by image.

On the held-out emoji (never trained on) and six mask kinds (LaMa's thick and thin strokes, and
the four half-image holes), each candidate (a reverse step, `--method`, a jump schedule and a
reconstruction guidance scale) inpaints the same images with the same masks and noise keys as the
paper's schedule (250/10/10, 2,410 calls), so their per-image differences cancel what the images
themselves vary by. Reports the mean difference and its 95% interval (Student's t) per mask.
Writes benchmarks/frontier-paired.json (every image's metrics), a plot
(benchmarks/frontier-paired.png), a section of benchmarks/RESULTS.md and the presets' numbers
read by `repaint schedule --list` (repaint_cli/data/preset_quality.json). The images run in
parts of --chunk: every candidate gets a part on every mask before the next part starts, and a
stopped run resumes where it was (a larger --n adds images; --fresh starts over).

    python benchmarks/frontier.py --n 96           # make frontier
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

import scipy.stats  # noqa: E402
from quality import fmt, masks_for, mean_ci, opencv_inpaint, per_image, repaint_batch, update_results  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.files import sha256_model  # noqa: E402
from repaint_cli.core.schedule import (GUIDED_CALL_COST, PRESET_GUIDANCE, PRESETS, JumpParams,  # noqa: E402
                                      guided_calls, jump_schedule, preset_guidance_calls, schedule_summary)

PRESET_NUMBERS = ROOT / "repaint_cli" / "data" / "preset_quality.json"  # read by `repaint schedule --list`

KINDS = ["thick", "thin", "hole-right", "hole-left", "hole-top", "hole-bottom"]
HALVES = {"hole-right": (slice(None), slice(0.5, None)), "hole-left": (slice(None), slice(None, 0.5)),
          "hole-top": (slice(None, 0.5), slice(None)), "hole-bottom": (slice(0.5, None), slice(None))}


def J(t_T, jump_length=10, jump_n_sample=1, **kw) -> JumpParams:
    return JumpParams(t_T=t_T, jump_length=jump_length, jump_n_sample=jump_n_sample, **kw)


G = 10.0  # the reconstruction guidance scale measured (chosen on 8 images: RESULTS.md)
PAPER = "repaint 250/10/10 (paper)"
# (label, method, schedule, eta, guidance[, the calls guided: "all" if absent, "last": core.schedule.guided_calls]), in
# the order they run: the paper's schedule is the reference every candidate is paired with; the others spend 95-460
# calls, with and without guidance
CANDIDATES = [
    (PAPER, "repaint", J(250, 10, 10), 0.0, 0.0),
    ("repaint 50/5/5 (quick)", "repaint", J(50, 5, 5), 0.0, 0.0),
    ("ddim 50/5/5 eta 1", "ddim", J(50, 5, 5), 1.0, 0.0),
    (f"repaint 50/5/5 guidance {G:g}", "repaint", J(50, 5, 5), 0.0, G),
    (f"ddim 50/5/5 eta 1 guidance {G:g}", "ddim", J(50, 5, 5), 1.0, G),
    ("repaint 30/5/5 (fast)", "repaint", J(30, 5, 5), 0.0, 0.0),
    (f"repaint 30/5/5 guidance {G:g}", "repaint", J(30, 5, 5), 0.0, G),
    (f"repaint 240, no resampling, guidance {G:g}", "repaint", J(240, 1, 1), 0.0, G),
    ("repaint 50/5/2 (draft)", "repaint", J(50, 5, 2), 0.0, 0.0),
    (f"ddim 50/5/2 eta 1 guidance {G:g}", "ddim", J(50, 5, 2), 1.0, G),
    ("repaint 240, no resampling", "repaint", J(240, 1, 1), 0.0, 0.0),
    ("repaint 100/10/5", "repaint", J(100, 10, 5), 0.0, 0.0),
    # issue 36: ahead of paper on all six masks at 96 images in the pilot (RESULTS.md), 176 forward-equivalents
    (f"repaint 20/5/5 guidance {G:g}", "repaint", J(20, 5, 5), 0.0, G),
    # issue 36's lever that won the pilot: guidance only on the last call at each time (20 of the 80 calls),
    # 104 forward-equivalents, about a twentieth of paper's time
    (f"repaint 20/5/5 guidance {G:g} on the last calls", "repaint", J(20, 5, 5), 0.0, G, "last"),
]
BASELINES = ["Telea", "NS"]  # OpenCV, 0 UNet calls
COLOURS = {"repaint": (200, 90, 30), "ddnm": (40, 150, 40), "ddim": (40, 40, 200), "opencv": (120, 120, 120)}  # BGR


def calls_guided(candidate: tuple) -> str:
    """A candidate's guided calls: its sixth field, "all" where it has none."""
    return candidate[5] if len(candidate) > 5 else "all"


def preset_candidate(preset: str) -> str | None:
    """The label of the candidate that samples as ``preset`` (RePaint's step, its schedule, guidance and guided
    calls), or None."""
    jp, g, which = PRESETS[preset], PRESET_GUIDANCE.get(preset, 0.0), preset_guidance_calls(preset)
    return next((c[0] for c in CANDIDATES if c[1] == "repaint" and c[2] == jp and c[3] == 0.0 and c[4] == g
                 and calls_guided(c) == which), None)


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


def paired(values: list, ref: list) -> tuple[float, float, int]:
    """Mean of the per-image differences values - ref (over the images both have) and its 95%
    interval's half-width (Student's t), and how many images that is."""
    m = min(len(values), len(ref))
    d = np.asarray(values[:m], np.float64) - np.asarray(ref[:m], np.float64)
    if m < 2:
        return float(d.mean()) if m else float("nan"), float("nan"), m
    return float(d.mean()), float(scipy.stats.t.ppf(0.975, m - 1) * d.std(ddof=1) / math.sqrt(m)), m


def paired_table(results: dict, kinds: list[str]) -> dict:
    """{kind: {label: {"psnr": (mean, half, n), "ssim": ...}}} against the paper's schedule, per image."""
    out = {}
    for kind in kinds:
        ref = results.get(kind, {}).get(PAPER)
        if not ref:
            continue
        out[kind] = {label: {m: paired(r["per_image"][m], ref["per_image"][m]) for m in ("psnr", "ssim")}
                     for label, r in results[kind].items() if label != PAPER and r["per_image"]["psnr"]}
    return out


def plot(path: Path, results: dict, diffs: dict, kinds: list[str]) -> None:
    """One panel per mask: hole PSNR minus the paper's, per image (mean, 95% interval bar), against
    UNet calls per image (log axis). Filled dots: no guidance; rings: reconstruction guidance."""
    pw, ph, m = 360, 250, 44  # panel size, margin
    cols = 3
    rows = math.ceil(len(kinds) / cols)
    canvas = np.full((rows * ph + 40, cols * pw, 3), 255, np.uint8)
    cv2.putText(canvas, "hole PSNR - paper's (dB, paired) vs UNet calls (log); blue RePaint, red DDIM, grey OpenCV; "
                "ring = guided", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    xmin, xmax = math.log10(20), math.log10(4000)
    for k, kind in enumerate(kinds):
        ox, oy = (k % cols) * pw, 40 + (k // cols) * ph
        res = diffs.get(kind, {})
        ys = [0.0] + [d["psnr"][0] for label, d in res.items() if results[kind][label]["method"] != "opencv"]
        lo, hi = math.floor(min(ys) - 0.5), math.ceil(max(ys) + 0.5)

        def px(calls, v):
            x = ox + m + (math.log10(max(calls, 20)) - xmin) / (xmax - xmin) * (pw - m - 12)
            y = oy + ph - m + (lo - min(max(v, lo), hi)) / (hi - lo) * (ph - m - 24)  # bars clipped to the panel
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
        y = px(20, 0.0)[1]  # the paper's quality: 0 by construction
        for x in range(ox + m, ox + pw - 12, 8):
            cv2.line(canvas, (x, y), (x + 4, y), (200, 90, 30), 1)
        for label, d in res.items():
            r = results[kind][label]
            mean, half, _ = d["psnr"]
            x, y = px(r["calls"], mean)
            colour = COLOURS.get(r["method"], (0, 0, 0))
            if half == half:  # not NaN
                cv2.line(canvas, (x, px(r["calls"], mean + half)[1]), (x, px(r["calls"], mean - half)[1]), colour, 1)
            if r["method"] == "opencv":
                cv2.drawMarker(canvas, (x, y), colour, cv2.MARKER_TILTED_CROSS, 8, 1)
            else:
                cv2.circle(canvas, (x, y), 3, colour, 1 if r.get("guidance") else -1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)


def run_chunk(model, hp, images, holes_by_kind, results, start, stop, only, save) -> None:
    """Images start..stop-1 of every (candidate, mask) that lacks them, candidate by candidate."""
    for name, flag in zip(BASELINES, (cv2.INPAINT_TELEA, cv2.INPAINT_NS)):
        for kind, holes in holes_by_kind.items():
            r = results[kind].setdefault(name, {"method": "opencv", "calls": 0, "guidance": 0.0,
                                                "per_image": {"psnr": [], "ssim": [], "seam": []}})
            for j in range(len(r["per_image"]["psnr"]), stop):
                row = per_image([opencv_inpaint(images[j], holes[j], flag)], images[j:j + 1], holes[j:j + 1])
                for k, v in row.items():
                    r["per_image"][k] += v
    for candidate in CANDIDATES:
        label, method, jump, eta, guidance = candidate[:5]
        which = calls_guided(candidate)
        if only and not any(o in label for o in only) and label != PAPER:
            continue
        for kind, holes in holes_by_kind.items():
            r = results[kind].setdefault(label, {"method": method, "calls": calls_of(jump), "schedule": jump.as_dict(),
                                                 "eta": eta, "guidance": guidance, "seconds": 0.0,
                                                 "measured_on": datetime.date.today().isoformat(),
                                                 "per_image": {"psnr": [], "ssim": [], "seam": []}})
            if which != "all":
                r.update(guidance_calls=which, guided=sum(guided_calls(jump_schedule(jump), which)))
            done = len(r["per_image"]["psnr"])
            if done >= stop:
                continue
            t0, c0 = time.time(), time.process_time()
            outs = repaint_batch(model, hp, images[done:stop], holes[done:stop], jump, method=method, eta=eta,
                                 guidance=guidance, offset=done, guidance_calls=which)
            secs, cpu = time.time() - t0, time.process_time() - c0
            r["seconds"] = round((r["seconds"] * done + secs) / stop, 3)  # per image, over all done so far
            # the process's CPU time too: at one thread the work done, which other jobs on a shared machine
            # inflate much less than the wall time (the time relative to paper is taken from it)
            if "cpu_seconds" in r or not done:
                r["cpu_seconds"] = round((r.get("cpu_seconds", 0.0) * done + cpu) / stop, 3)
            for k, v in per_image(outs, images[done:stop], holes[done:stop]).items():
                r["per_image"][k] += v
            print(f"{kind:11s} {label:40s} images {done}-{stop - 1}  {secs / (stop - done):.2f} s/img", flush=True)
            save()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "emoji32.npz"))
    p.add_argument("--model", default="emoji32")
    p.add_argument("--n", type=int, default=96, help="held-out images per mask (the first N by glyph id)")
    p.add_argument("--chunk", type=int, default=16, help="images per part: every candidate gets a part before the next")
    p.add_argument("--kinds", nargs="+", default=KINDS)
    p.add_argument("--only", nargs="+", default=None, help="run only candidates whose label contains one of these "
                   "(and the paper's schedule, which the others are paired with)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fresh", action="store_true", help="ignore results kept from an earlier run")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md, the plot or the presets' numbers")
    p.add_argument("--report", action="store_true", help="sample nothing: write the report from the images kept")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with np.load(args.data) as z:
        images = z["heldout"][: args.n]
    loaded = load(args.model)
    model = prepare_model(loaded.model, torch.device("cpu"), EngineOptions(threads=args.threads))  # as the CLI
    size = loaded.model.cfg.image_size
    out_json = ROOT / "benchmarks" / "frontier-paired.json"  # frontier.json: the unpaired run of 2026-11-29
    kept = json.loads(out_json.read_text()) if out_json.exists() and not args.fresh else {}
    # per-image results are kept whatever --n: a larger --n adds images; the report pairs all the images kept.
    # They belong to the weights they were sampled with: new weights (more training) start over, never paired with
    # another checkpoint's paper
    weights = sha256_model(loaded.path)
    args.weights_sha256 = kept.get("weights_sha256", weights) if args.report else weights
    if kept.get("weights_sha256", weights) != weights and not args.fresh and not args.report:
        sys.exit(f"{out_json} holds the results of other weights (sha256 {kept['weights_sha256'][:12]}..), not "
                 f"{loaded.path} ({weights[:12]}..): run with --fresh to sample them all again")
    results = kept.get("results", {}) if kept.get("model") == args.model and kept.get("paired") else {}
    cmd = "python benchmarks/frontier.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    cmd = kept.get("command", cmd) if args.report else cmd  # the report names the run that sampled
    today = datetime.date.today().isoformat()
    date = kept.get("date", today) if args.report else today  # ... and its date

    def save():
        out_json.write_text(json.dumps({"model": args.model, "weights_sha256": weights, "paired": True,
                                        "date": datetime.date.today().isoformat(), "command": cmd,
                                        "results": results}))

    holes_by_kind = {kind: holes_for(kind, len(images), size) for kind in args.kinds}
    for kind in args.kinds:
        results.setdefault(kind, {})
    for stop in range(args.chunk, 0 if args.report else len(images) + args.chunk, args.chunk):
        run_chunk(model, loaded.hparams, images, holes_by_kind, results, stop - args.chunk, min(stop, len(images)),
                  args.only, save)
    if not args.report:
        save()
    if not args.no_write:
        write_report(results, args, cmd, date)


def write_report(results: dict, args, cmd: str, date: str) -> None:
    kinds = [k for k in args.kinds if results.get(k, {}).get(PAPER)]
    diffs = paired_table(results, kinds)
    plot(ROOT / "benchmarks" / "frontier-paired.png", results, diffs, kinds)
    update_results("frontier-paired", report(results, diffs, kinds, args, cmd, date))
    PRESET_NUMBERS.write_text(json.dumps(preset_numbers(results, diffs, kinds, date), indent=1) + "\n")


def _fmt3(d, digits=2):
    mean, half, _ = d
    return f"{mean:+.{digits}f} ± {half:.{digits}f}"


def forward_equivalents(r: dict) -> float:
    """A candidate's UNet calls in plain forward passes: a guided call counts GUIDED_CALL_COST."""
    guided = r.get("guided", r["calls"]) if r.get("guidance") else 0
    return r["calls"] - guided + guided * GUIDED_CALL_COST


def time_vs_paper(results: dict, label: str, kinds: list[str]) -> tuple[float, str] | None:
    """The median over masks of the candidate's s/img over paper's, each timed in this run part by part,
    and which clock: CPU time where both have it, else wall time."""
    for clock in ("cpu_seconds", "seconds"):
        # only against paper's part-by-part timing in the same run: a candidate added on another day ran beside
        # other work (its time relative to paper's is measured interleaved, by benchmarks/guided_cost.py)
        ratios = [results[k][label][clock] / results[k][PAPER][clock] for k in kinds
                  if results[k].get(label, {}).get(clock) and results[k][PAPER].get(clock)
                  and results[k][label].get("measured_on") == results[k][PAPER].get("measured_on")]
        if ratios:
            return float(np.median(ratios)), "CPU" if clock == "cpu_seconds" else "wall"
    return None


def report(results: dict, diffs: dict, kinds: list[str], args, cmd: str, date: str) -> str:
    ns = sorted({d["psnr"][2] for k in diffs.values() for d in k.values()})
    paper_secs = np.median([results[k][PAPER].get("seconds", 0.0) for k in kinds])
    lines = ['<a id="paired-frontier"></a>', "",  # the anchor core/schedule.py's comment links
             f"## Paired frontier: quality against cost, each candidate minus `paper` image by image ({date})", "",
             f"Model `{args.model}` (weights sha256 {args.weights_sha256[:12]}..), the first held-out emoji, the "
             f"same masks and noise keys for "
             f"every candidate (`{cmd}`; one thread). Each cell: the mean over images of (candidate - `paper`) and "
             f"its 95% interval (Student's t over the per-image differences), on {', '.join(map(str, ns))} images "
             f"per mask. Hole PSNR in dB, then hole SSIM. Costs: UNet calls per image; forward-equivalents (a guided "
             f"call counts {GUIDED_CALL_COST:g} plain forward calls, as measured: section \"What a guided call "
             f"costs\"); "
             f"s/img at one thread in this run, wall time (`paper`: {paper_secs:.2f}), and relative to `paper`'s: the "
             f"median over masks, on the process's CPU time where the run kept it, else on wall time (marked; the "
             f"images run in parts of 16, every candidate's part after the other's, on a shared machine: the "
             f"interleaved measurement is in \"What a guided call costs\"; a candidate added on a later day has no "
             f"ratio here, its time relative to `paper`'s is measured there).", "",
             "| candidate | UNet calls | forward-equivalents | s/img | time vs `paper` | " + " | ".join(kinds) + " |",
             "|---|---|---|---|---|" + "---|" * len(kinds)]
    labels = [c[0] for c in CANDIDATES[1:]] + BASELINES
    for label in labels:
        row = [diffs.get(k, {}).get(label) for k in kinds]
        if not any(row):
            continue
        r = next(results[k][label] for k in kinds if label in results[k])
        rel = time_vs_paper(results, label, kinds)
        lines.append(f"| {label} | {r['calls']} | {forward_equivalents(r):.0f} | {r.get('seconds') or 0:.2f} | "
                     + (f"{rel[0]:.3f} (1/{1 / rel[0]:.1f}, {rel[1]})" if rel else "") + " | "
                     + " | ".join(f"{_fmt3(d['psnr'])}<br>{_fmt3(d['ssim'], 3)}" if d else "" for d in row) + " |")
    lines += ["", "Unpaired, for reference: hole PSNR of `paper` itself, mean ± 95% interval over images: "
              + ", ".join(f"{k} {fmt(mean_ci(results[k][PAPER]['per_image']['psnr']))}" for k in kinds) + ".",
              "", "![paired frontier](frontier-paired.png)"]
    return "\n".join(lines)


def preset_numbers(results: dict, diffs: dict, kinds: list[str], date: str) -> dict:
    """The presets' measured paired differences to `paper`, for `repaint schedule --list`."""
    out = {"source": "benchmarks/frontier.py", "date": date, "presets": {}}
    for name, jp in PRESETS.items():
        g, which = PRESET_GUIDANCE.get(name, 0.0), preset_guidance_calls(name)
        label = preset_candidate(name)
        if label is None or label == PAPER:
            continue
        per_mask = {k: {"psnr": diffs[k][label]["psnr"][:2], "ssim": diffs[k][label]["ssim"][:2],
                        "images": diffs[k][label]["psnr"][2]} for k in kinds if label in diffs.get(k, {})}
        if per_mask:
            out["presets"][name] = {"candidate": label, "schedule": jp.as_dict(), "guidance": g,
                                    **({"guidance_calls": which} if which != "all" else {}), "masks": per_mask}
    return out


if __name__ == "__main__":
    main()
