"""PILOT (issue 36, item 2): reconstruction guidance on only part of a schedule's UNet calls.

A guided call costs a backward pass through the UNet on top of its forward (about 2 forward
calls in all: RESULTS.md, "What a guided call costs"). This pilot asks whether guidance on only
some calls keeps most of its gain: only where the model's time is at or above ``--early-from``
(the noisy part of the schedule), only below it, or on every k-th call. A call without guidance
runs the plain forward (no autograd graph, no backward), so it costs what an unguided call does.

The reference is `paper`'s per-image results kept in benchmarks/frontier-paired.json (the same
images, masks and noise keys: the frontier's); ``--check N`` first re-samples `paper` on N images
and stops unless it reproduces those numbers exactly. A few images and masks only: a pilot, to
choose what the paired frontier (benchmarks/frontier.py, 96 images x 6 masks) should measure.

    python benchmarks/pilot_guidance.py --n 16 --kinds thick hole-top --check 2 --out benchmarks/pilot-guidance-16.json
    python benchmarks/pilot_guidance.py --n 96 --kinds thick thin hole-right hole-left hole-top hole-bottom \
        --only "20/5/5 guided on every" --out benchmarks/pilot-guidance-96.json     # two rows at the frontier's size
    python benchmarks/pilot_guidance.py ... --report    # the table from the kept --out file, sampling nothing
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from frontier import PAPER, J, holes_for, paired  # noqa: E402
from quality import per_image, repaint_batch  # noqa: E402
from repaint_cli.core.diffusion import diffusion_from_hparams  # noqa: E402
from repaint_cli.core.noise import image_key, keys_tensor  # noqa: E402
from repaint_cli.core.sampler import Conditioning, repaint  # noqa: E402
from repaint_cli.core.schedule import GUIDED_CALL_COST, jump_schedule  # noqa: E402
from repaint_cli.images.guidance import reconstruction  # noqa: E402
from repaint_cli.images.sampling import to_uint8  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402


class PartlyGuided(torch.nn.Module):
    """The model for the sampler, guided on the calls ``active(t_model, call_index)`` picks: those run
    through core/guidance's graph-keeping model and get the reconstruction term; the others run the
    plain model and get a zero term. Counts both kinds of calls."""

    def __init__(self, model, diffusion, gt, keep, scale: float, active):
        super().__init__()
        self.model, self.active = model, active
        self.net, self.recon = reconstruction(model, diffusion, gt, keep, scale)
        self.calls = self.guided = 0
        self.on = False

    def forward(self, x, t, **kwargs):
        self.on = bool(self.active(int(t[0]), self.calls))
        self.calls += 1
        self.guided += self.on
        return (self.net if self.on else self.model)(x, t, **kwargs)

    def cond_fn(self, x, t, **kwargs):
        return self.recon(x, t, **kwargs) if self.on else torch.zeros_like(x)


def window(kind: str, value: int):
    """active(t_model, call) for a window: 'all', 'early' (t >= value), 'late' (t < value), 'every' (k-th call)."""
    return {"all": lambda t, i: True, "early": lambda t, i: t >= value, "late": lambda t, i: t < value,
            "every": lambda t, i: i % value == 0}[kind]


def sample(model, hp, images, holes, jump, scale, active, seed=0):
    """As quality.repaint_batch (one batch, noise keys heldout0..), guided only where ``active``."""
    diffusion = diffusion_from_hparams(hp, str(jump.t_T))
    gt = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    keep = torch.from_numpy(~holes)[:, None]
    keys = keys_tensor([image_key(seed, f"heldout{j}") for j in range(len(gt))])
    net = PartlyGuided(model, diffusion, gt, keep, scale, active)
    cond = Conditioning(gt, keep, keys, diffusion.coefficients(eta=None), cond_fn=net.cond_fn,
                        noise_index=torch.arange(gt[0].numel()), method="repaint")
    with torch.no_grad():
        x = repaint(net, cond, jump_schedule(jump))
    out = np.where(holes[:, :, :, None], to_uint8(x), images)
    return out, net.calls, net.guided  # per image: one call serves the whole batch


# (label, t_T, jump_length, jump_n_sample, guidance window, its value); guidance scale 10 throughout
CANDIDATES = [
    ("30/5/5 guided on every call (fast)", 30, 5, 5, "all", 0),
    ("30/5/5 guided where t >= 500", 30, 5, 5, "early", 500),
    ("30/5/5 guided where t < 500", 30, 5, 5, "late", 500),
    ("30/5/5 guided on every 2nd call", 30, 5, 5, "every", 2),
    ("20/5/5 guided on every call", 20, 5, 5, "all", 0),
    ("20/5/5 guided where t >= 500", 20, 5, 5, "early", 500),
    ("30/5/3 guided where t >= 500", 30, 5, 3, "early", 500),
    ("20/5/5 guided where t < 500", 20, 5, 5, "late", 500),
    ("20/5/3 guided on every call", 20, 5, 3, "all", 0),
    ("20/5/5 guided on every 2nd call", 20, 5, 5, "every", 2),
]
FAST = CANDIDATES[0][0]
# the paired frontier's own candidates, kept per image in frontier-paired.json: shown beside the pilot's
KEPT = ["repaint 30/5/5 (fast)", "repaint 50/5/2 (draft)", "ddim 50/5/2 eta 1 guidance 10"]


def check_paper(model, hp, images, holes_by_kind, kept, n) -> None:
    """Stop unless `paper` on the first n images reproduces the kept per-image PSNR exactly."""
    for kind, holes in holes_by_kind.items():
        outs = repaint_batch(model, hp, images[:n], holes[:n], J(250, 10, 10))
        got = per_image(outs, images[:n], holes[:n])["psnr"]
        want = kept[kind][PAPER]["per_image"]["psnr"][:n]
        if got != want:
            sys.exit(f"paper does not reproduce the kept results on {kind}: {got} vs {want}")
        print(f"{kind}: paper reproduces the kept results on {n} images", flush=True)
        return  # one mask is enough: the masks and the sampler are shared


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--kinds", nargs="+", default=["thick", "hole-top"])
    p.add_argument("--check", type=int, default=2, help="re-sample paper on this many images first (0: skip)")
    p.add_argument("--only", nargs="+", default=None)
    p.add_argument("--out", default="/tmp/pilot_guidance.json")
    p.add_argument("--report", action="store_true", help="sample nothing: print the table from --out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with np.load(ROOT / "data" / "emoji32.npz") as z:
        images = z["heldout"][: args.n]
    loaded = load("emoji32")
    model = prepare_model(loaded.model, torch.device("cpu"), EngineOptions(threads=1))
    hp, size = loaded.hparams, loaded.model.cfg.image_size
    kept = json.loads((ROOT / "benchmarks" / "frontier-paired.json").read_text())["results"]
    holes_by_kind = {k: holes_for(k, len(images), size) for k in args.kinds}
    if args.report:
        return print(table(json.loads(Path(args.out).read_text()), kept, args))
    if args.check:
        check_paper(model, hp, images, holes_by_kind, kept, args.check)
    out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for label, t_T, length, n_sample, kind, value in CANDIDATES:
        if args.only and not any(o in label for o in args.only):
            continue
        for mask, holes in holes_by_kind.items():
            if len(out.get(label, {}).get(mask, {}).get("psnr", [])) >= args.n:
                continue
            t0 = time.perf_counter()
            outs, calls, guided = sample(model, hp, images, holes, J(t_T, length, n_sample), 10.0, window(kind, value))
            secs = (time.perf_counter() - t0) / len(images)
            row = per_image(outs, images, holes)
            out.setdefault(label, {})[mask] = {"psnr": row["psnr"], "ssim": row["ssim"], "calls": calls,
                                               "guided": guided, "seconds": secs}
            Path(args.out).write_text(json.dumps(out))
            print(f"{mask:9s} {label:40s} {calls} calls, {guided} guided, {secs:.2f} s/img", flush=True)
    print(table(out, kept, args))


def table(out: dict, kept: dict, args) -> str:
    """Each candidate minus paper per mask, and (PSNR) minus `fast` guided on every call, the same images."""
    lines = [f"Pilot ({datetime.date.today().isoformat()}): first {args.n} held-out emoji, masks "
             f"{', '.join(args.kinds)}, minus `paper` image by image (hole PSNR dB, then SSIM: mean and 95% interval), "
             f"then hole PSNR minus `fast`'s (guided on every call); guidance scale 10, one thread. "
             f"Forward-equivalents: a guided call counts {GUIDED_CALL_COST:g}.", "",
             "| candidate | UNet calls | of them guided | forward-equivalents | "
             + " | ".join(f"{k} - paper | {k} - fast" for k in args.kinds) + " |",
             "|---|---|---|---|" + "---|---|" * len(args.kinds)]
    rows = dict(out)
    for label in KEPT:  # the frontier's candidates on the same images
        r = kept[args.kinds[0]][label]
        rows[f"{label} (frontier)"] = {k: {"psnr": kept[k][label]["per_image"]["psnr"][: args.n],
                                          "ssim": kept[k][label]["per_image"]["ssim"][: args.n], "calls": r["calls"],
                                          "guided": r["calls"] if r["guidance"] else 0} for k in args.kinds}
    for label, by_mask in rows.items():
        r = next(iter(by_mask.values()))
        cells = []
        for mask in args.kinds:
            if mask not in by_mask:
                cells += ["", ""]
                continue
            ref = kept[mask][PAPER]["per_image"]
            d, s = paired(by_mask[mask]["psnr"], ref["psnr"]), paired(by_mask[mask]["ssim"], ref["ssim"])
            fast = (out[FAST][mask]["psnr"] if mask in out.get(FAST, {})  # else the frontier's, the same images
                    else kept[mask]["repaint 30/5/5 guidance 10"]["per_image"]["psnr"][: args.n])
            f = paired(by_mask[mask]["psnr"], fast)
            cells += [f"{d[0]:+.2f} ± {d[1]:.2f}<br>{s[0]:+.3f} ± {s[1]:.3f}",
                      "" if label == FAST or f is None else f"{f[0]:+.2f} ± {f[1]:.2f}"]
        fe = r["calls"] - r["guided"] + r["guided"] * GUIDED_CALL_COST
        lines.append(f"| {label} | {r['calls']} | {r['guided']} | {fe:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
