"""What a guided UNet call costs against a plain one, and a schedule against `paper`, at one thread.

Two measurements, both as ratios of back-to-back pairs (the machine is shared: absolute times
drift, the ratio of two runs taken one right after the other much less), reported as the median
pair's ratio with the quartiles and the extremes, on two clocks: wall time, and the process's CPU
time (at one thread, the work done; other jobs on the machine inflate it much less):

* ``--calls``: the embedded model's UNet call three ways, in turn, many times at each batch
  size: a plain forward under ``torch.no_grad`` (what an unguided step runs), a forward with
  autograd on (what a guided step's model call runs: ``core/guidance.KeepsGraph``), and that
  forward plus the reconstruction guidance's backward through the UNet (the whole guided call).
  The guided / plain ratio is the factor a guided call counts for in forward-equivalents.
* ``--sampler``: whole sampler runs (``benchmarks/quality.repaint_batch``, as the frontier
  samples), a candidate and `paper` in turn, on random images with the frontier's masks:
  seconds per image relative to `paper`. Image content does not change the work done.

    python benchmarks/guided_cost.py --calls --batch-sizes 1 4 16 --pairs 100
    python benchmarks/guided_cost.py --sampler quick fast draft --batch 4 --rounds 3
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import repaint_batch  # noqa: E402
from repaint_cli.core.diffusion import diffusion_from_hparams  # noqa: E402
from repaint_cli.core.schedule import PRESETS, preset_guidance, preset_guidance_calls  # noqa: E402
from repaint_cli.images.guidance import reconstruction  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402


def spread(ratios: list[float]) -> str:
    """'median (quartiles q1-q3, range min-max, n pairs)'."""
    q = np.percentile(ratios, [25, 50, 75])
    f = "{:.2f}" if q[1] >= 1 else "{:.3f}"  # three figures for the small ratios of the sampler's runs
    return (f"{f.format(q[1])} (quartiles {f.format(q[0])}-{f.format(q[2])}, range {f.format(min(ratios))}-"
            f"{f.format(max(ratios))}, {len(ratios)} pairs)")


def call_kinds(model, hp, batch: int):
    """{name: a function that runs one UNet call of that kind} on a seeded random batch at a mid time."""
    g = torch.Generator().manual_seed(batch)
    size = int(hp["image_size"])
    x = torch.randn((batch, 3, size, size), generator=g)
    gt = torch.rand((batch, 3, size, size), generator=g) * 2 - 1
    keep = torch.rand((batch, 1, size, size), generator=g) > 0.5
    diffusion = diffusion_from_hparams(hp, "250")
    t = diffusion.timestep_map[125].expand(batch)
    net, cond_fn = reconstruction(model, diffusion, gt, keep, 10.0)

    def plain():
        with torch.no_grad():
            model(x, t)

    def forward_with_graph():
        with torch.no_grad():  # as in the sampler: KeepsGraph turns autograd on for the model alone
            net(x, t)
        net.last = None

    def guided():
        with torch.no_grad():
            net(x, t)
            cond_fn(x, t)  # reuses that forward's graph: the backward pass alone

    return {"plain": plain, "forward with autograd": forward_with_graph, "guided": guided}


def clocks() -> tuple[float, float]:
    """(wall, this process's CPU) seconds. At one thread the CPU time is the work done: other jobs on a shared
    machine stretch the wall time of whatever runs while they do, much less the process's CPU time."""
    return time.perf_counter(), time.process_time()


def time_calls(model, hp, batch: int, pairs: int, warmup: int = 3) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each call kind, round by round; the order within a round rotates."""
    kinds = call_kinds(model, hp, batch)
    for fn in kinds.values():
        for _ in range(warmup):
            fn()
    names = list(kinds)
    secs = {n: [] for n in names}
    for r in range(pairs):
        for n in names[r % len(names):] + names[: r % len(names)]:
            w0, c0 = clocks()
            kinds[n]()
            w1, c1 = clocks()
            secs[n].append((w1 - w0, c1 - c0))
    return secs


def report_calls(model, hp, batch_sizes, pairs) -> list[str]:
    lines = ["| batch | clock | plain forward, ms (median) | forward with autograd / plain | "
             "guided (forward + backward) / plain |", "|---|---|---|---|---|"]
    for b in batch_sizes:
        secs = time_calls(model, hp, b, pairs)
        for c, clock in enumerate(("wall", "CPU")):
            plain = [s[c] for s in secs["plain"]]
            grad = [a[c] / p for a, p in zip(secs["forward with autograd"], plain)]
            guided = [a[c] / p for a, p in zip(secs["guided"], plain)]
            ms = statistics.median(plain) * 1e3
            lines.append(f"| {b} | {clock} | {ms:.1f} | {spread(grad)} | {spread(guided)} |")
            print(lines[-1], flush=True)
    return lines


# name: (schedule, method, eta, guidance, the calls guided), as benchmarks/frontier.py's candidates: today's presets
# (core/schedule.py), and those they replaced on 2026-12-07
SAMPLER = {
    **{name: ((p.t_T, p.jump_length, p.jump_n_sample), "repaint", 0.0, preset_guidance(name), preset_guidance_calls(name))
       for name, p in PRESETS.items()},
    "quick-2026-12-03": ((50, 5, 5), "repaint", 0.0, 10.0, "all"),
    "fast-2026-12-03": ((30, 5, 5), "repaint", 0.0, 10.0, "all"),
    "quick-unguided": ((50, 5, 5), "repaint", 0.0, 0.0, "all"),
}


def time_sampler(model, hp, names: list[str], batch: int, rounds: int) -> list[str]:
    """Each candidate's run over `batch` random images and paper's, round after round, the order rotating from
    round to round: each candidate's time over paper's in the same round."""
    from frontier import J, holes_for

    size = int(hp["image_size"])
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    holes = holes_for("thick", batch, size)

    def run(name):
        (t_T, length, n), method, eta, g, which = SAMPLER[name]
        w0, c0 = clocks()
        repaint_batch(model, hp, images, holes, J(t_T, length, n), method=method, eta=eta, guidance=g, batch=batch,
                      guidance_calls=which)
        w1, c1 = clocks()
        return (w1 - w0) / batch, (c1 - c0) / batch

    ratios = {n: {"wall": [], "CPU": []} for n in names}
    paper_secs = []
    for r in range(rounds):
        order = names + ["paper"]
        order = order[r % len(order):] + order[: r % len(order)]  # no run always first or always after paper
        secs = {n: run(n) for n in order}
        paper_secs.append(secs["paper"])
        for n in names:
            for c, clock in enumerate(("wall", "CPU")):
                ratios[n][clock].append(secs[n][c] / paper_secs[-1][c])
        print(f"round {r}: paper {paper_secs[-1][0]:.2f} s/img wall, {paper_secs[-1][1]:.2f} CPU; relative, CPU: "
              + ", ".join(f"{n} {ratios[n]['CPU'][-1]:.4f}" for n in names), flush=True)
    lines = [f"`paper`: {statistics.median(s[0] for s in paper_secs):.2f} s/img wall, "
             f"{statistics.median(s[1] for s in paper_secs):.2f} s/img CPU (medians of {rounds} rounds, batch {batch})",
             "", "| preset | s/img relative to paper, CPU time | the same, wall time |", "|---|---|---|"]
    lines += [f"| {n} | {spread(ratios[n]['CPU'])} | {spread(ratios[n]['wall'])} |" for n in names]
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="emoji32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", action="store_true", help="time a guided call against a plain forward")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--sampler", nargs="*", choices=[n for n in SAMPLER if n != "paper"], default=None,
                   help="time these presets' whole runs against paper's")
    p.add_argument("--batch", type=int, default=4, help="images per sampler run")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load(args.model)
    model = prepare_model(loaded.model, torch.device("cpu"), EngineOptions(threads=args.threads))  # as the CLI
    print(f"{datetime.date.today().isoformat()}, {args.model}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}", flush=True)
    lines = []
    if args.calls:
        lines += report_calls(model, loaded.hparams, args.batch_sizes, args.pairs)
    if args.sampler:
        lines += [""] + time_sampler(model, loaded.hparams, args.sampler, args.batch, args.rounds)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
