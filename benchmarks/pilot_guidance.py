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
from repaint_cli.core.schedule import GUIDED_CALL_COST, guided_calls, jump_schedule  # noqa: E402
from repaint_cli.images.guidance import reconstruction  # noqa: E402
from repaint_cli.images.sampling import to_uint8  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402


class PartlyGuided(torch.nn.Module):
    """The model for the sampler, guided on the calls ``active(t_model, call_index)`` picks: those run
    through core/guidance's graph-keeping model and get the reconstruction term; the others run the
    plain model and get a zero term. Counts both kinds of calls."""

    def __init__(self, model, diffusion, gt, keep, scale: float, active, reuse: str = "none"):
        super().__init__()
        self.model, self.active, self.reuse = model, active, reuse
        self.net, self.recon = reconstruction(model, diffusion, gt, keep, scale)
        self.calls = self.guided = 0
        self.on = False
        self.seen: set[int] = set()
        self.kept: dict[int, torch.Tensor] = {}  # the last fresh term at each model time
        self.last_term = None

    def forward(self, x, t, **kwargs):
        t_model = int(t[0])
        self.on = bool(self.active(t_model, self.calls, t_model not in self.seen))
        self.seen.add(t_model)
        self.calls += 1
        self.guided += self.on
        return (self.net if self.on else self.model)(x, t, **kwargs)

    def cond_fn(self, x, t, **kwargs):
        """A fresh term on a guided call; on the others, by ``reuse``: none (zero), the term last computed at this
        same time ('same-t': a jump's repeats visit each time again), or the last term computed ('last')."""
        t_model = int(t[0])
        if self.on:
            term = self.recon(x, t, **kwargs)
            self.kept[t_model], self.last_term = term, term
            return term
        if self.reuse == "same-t" and t_model in self.kept:
            return self.kept[t_model]
        if self.reuse == "last" and self.last_term is not None:
            return self.last_term
        return torch.zeros_like(x)


def window(kind: str, value: int, times: list[int] = ()):
    """active(t_model, call, first visit) for a window: 'all', 'early' (t >= value), 'late' (t < value), 'every'
    (k-th call), 'first' (the first call at each time: a jump's repeats are not guided afresh), 'last' (the last
    call at each time, from the schedule ``times``: the pass that the steps below carry on from)."""
    last = guided_calls(times, "last") if kind == "last" else []
    return {"all": lambda t, i, f: True, "early": lambda t, i, f: t >= value, "late": lambda t, i, f: t < value,
            "every": lambda t, i, f: i % value == 0, "first": lambda t, i, f: f, "last": lambda t, i, f: last[i]}[kind]


def noisy_resampling_schedule(t_T: int, length: int, n_sample: int, from_t: int) -> list[int]:
    """RePaint's one-level jump schedule with its jumps kept only where t >= from_t (the noisy part, where the
    paper's ablation says resampling pays); below, plain reverse steps."""
    budget = {j: n_sample - 1 for j in range(0, t_T - length, length) if j >= from_t}
    t, times = t_T, []
    while t >= 1:
        t -= 1
        times.append(t)
        if budget.get(t, 0) > 0:
            budget[t] -= 1
            for _ in range(length):
                t += 1
                times.append(t)
    return times + [-1]


def sample(model, hp, images, holes, jump, scale, kind, value, seed=0, reuse="none", resample_from=None):
    """As quality.repaint_batch (one batch, noise keys heldout0..), guided only where ``active``."""
    diffusion = diffusion_from_hparams(hp, str(jump.t_T))
    gt = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    keep = torch.from_numpy(~holes)[:, None]
    keys = keys_tensor([image_key(seed, f"heldout{j}") for j in range(len(gt))])
    times = (jump_schedule(jump) if resample_from is None
             else noisy_resampling_schedule(jump.t_T, jump.jump_length, jump.jump_n_sample, resample_from))
    net = PartlyGuided(model, diffusion, gt, keep, scale, window(kind, value, times), reuse)
    cond = Conditioning(gt, keep, keys, diffusion.coefficients(eta=None), cond_fn=net.cond_fn,
                        noise_index=torch.arange(gt[0].numel()), method="repaint")
    with torch.no_grad():
        x = repaint(net, cond, times)
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
    # second round (issue 36, levers 3 and 4): a jump's repeats reuse the term of the last fresh one, and
    # resampling only in the noisy steps (the 7th field: jumps kept where the respaced t >= it)
    ("20/5/5 guided on first visits, the term reused on repeats", 20, 5, 5, "first", 0, "same-t"),
    ("20/5/5 guided on first visits, none on repeats", 20, 5, 5, "first", 0, "none"),
    ("20/5/5 guided on every 2nd call, the last term reused between", 20, 5, 5, "every", 2, "last"),
    ("25/5/5 guided on first visits, the term reused on repeats", 25, 5, 5, "first", 0, "same-t"),
    ("30/5/5 guided on first visits, the term reused on repeats", 30, 5, 5, "first", 0, "same-t"),
    ("20/5/5 resampling where t >= 10, guided on every call", 20, 5, 5, "all", 0, "none", 10),
    ("30/5/5 resampling where t >= 15, guided on first visits, reused", 30, 5, 5, "first", 0, "same-t", 15),
    ("20/5/5 resampling where t >= 5, guided on every call", 20, 5, 5, "all", 0, "none", 5),
    # third round: where to spend a twentieth (the 8th field: the guidance scale, 10 if absent)
    ("20/5/5 guided on last visits, none on the others", 20, 5, 5, "last", 0, "none"),
    ("20/5/5 guided on first visits, none on repeats, scale 15", 20, 5, 5, "first", 0, "none", None, 15.0),
    ("25/5/5 guided on first visits, none on repeats", 25, 5, 5, "first", 0, "none"),
    ("20/5/4 guided on first visits, none on repeats", 20, 5, 4, "first", 0, "none"),
    ("20/5/5 resampling where t >= 5, guided on first visits", 20, 5, 5, "first", 0, "none", 5),
    ("10/5/5 guided on last visits, none on the others", 10, 5, 5, "last", 0, "none"),
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
    for label, t_T, length, n_sample, kind, value, *more in CANDIDATES:
        reuse, resample_from, scale = (more + ["none", None, 10.0][len(more):])[:3]
        if args.only and not any(o in label for o in args.only):
            continue
        for mask, holes in holes_by_kind.items():
            if len(out.get(label, {}).get(mask, {}).get("psnr", [])) >= args.n:
                continue
            t0 = time.perf_counter()
            outs, calls, guided = sample(model, hp, images, holes, J(t_T, length, n_sample), scale, kind, value,
                                         reuse=reuse, resample_from=resample_from)
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
