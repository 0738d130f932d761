"""`make bench-gpu`: the CUDA path checked, then measured, in one run of under 8 minutes on one H100.

A lent GPU comes with 15 minutes in all, start-up included, so this one script is everything to do
with it: correctness first, then every number the README's GPU section needs, each later section
skipped with a note once the time budget (--budget-s, 420 s) would not cover it.

1. Correctness, on the 256 px architecture of the paper's checkpoints with random weights, none zero:
   graph vs eager (the post-capture check's largest difference, and a whole schedule's final x through
   the captured graphs against the eager loop, both fp16); fp16 vs fp32 paired (same images, same noise:
   one UNet call's eps, and the final images in 8-bit levels); fp32 is IEEE fp32 (the UNet against an
   fp64 copy: TF32 would show ~1e-3). A failed check prints FAIL and the exit status is 1.
2. The table, per batch size (1, 4, 16): the UNet alone replayed as a CUDA graph (the bound), eager fp32,
   eager fp16, graphs fp16, per image and UNet call; the share outside the UNet; peak memory.
3. The levers, each behind its switch: --compile (compiled, warmed up, then captured), --guided
   (reconstruction guidance's step captured with its backward, against eager), --auto-batch (the batch
   sized from free memory, what its first capture really held, and a timed choice over powers of two).

--dry-run runs the same code on the CPU (tiny architecture and schedule, eager replays standing in for
captures, the compile lever on dynamo's eager backend, fp16 run as fp32): the test suite runs it.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import bench_unet, random_batch, sync, time_unet, time_unet_graph  # noqa: E402
from repaint_cli.core.diffusion import Diffusion  # noqa: E402
from repaint_cli.core.sampler import Conditioning, EagerSteps, repaint, reverse_step  # noqa: E402
from repaint_cli.core.schedule import JumpParams, jump_schedule, schedule_summary  # noqa: E402
from repaint_cli.images.guidance import reconstruction  # noqa: E402
from repaint_cli.runtime.cuda_graphs import CudaGraphSteps, EagerReplay, GraphCache, make_steps  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, pick_device, prepare_model  # noqa: E402
from repaint_cli.runtime.memory import auto_batch_size, is_oom, timed_batch_choice  # noqa: E402


class Check:
    """The run's clock, its notes and its results (printed as JSON lines as they come)."""

    def __init__(self, args):
        self.args, self.t0, self.results, self.notes, self.failed = args, time.perf_counter(), {}, [], []
        self.device = pick_device(args.device)
        self.capture = None if self.device.type == "cuda" else EagerReplay.capture  # the CPU's stand-in
        self.times = jump_schedule(JumpParams(t_T=args.t_T, jump_length=args.jump_length,
                                              jump_n_sample=args.jump_n_sample))
        self.calls = schedule_summary(self.times)["unet_calls"]
        self.diffusion = Diffusion.create(1000, "linear", str(args.t_T))

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def allows(self, what: str, need_s: float) -> bool:
        if self.left() >= need_s:
            return True
        self.note(f"skipped {what}: {self.left():.0f} s of the budget left, it needs ~{need_s:.0f} s")
        return False

    def put(self, key: str, value) -> None:
        self.results[key] = value
        print(json.dumps({key: value}), flush=True)

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        print(f"note: {msg}", flush=True)

    def expect(self, what: str, ok: bool, detail: str) -> None:
        print(f"{'ok' if ok else 'FAIL'}: {what}: {detail}", flush=True)
        if not ok:
            self.failed.append(what)

    def opts(self, precision: str, graphs: bool = True, **kw) -> EngineOptions:
        return EngineOptions(device=str(self.device), precision=precision, cuda_graphs=graphs,
                             threads=self.args.threads, **kw)

    def cond(self, bs: int, S: int, cond_fn=None) -> Conditioning:
        gt, keep, keys, _ = random_batch(bs, S, self.device)
        return Conditioning(gt, keep, keys, self.diffusion.coefficients(self.device), {}, cond_fn,
                            torch.arange(gt[0].numel(), device=self.device),
                            nonfinite=torch.zeros(bs, dtype=torch.bool, device=self.device))

    def log_for(self, label: str):
        return lambda msg, level="info": self.note(f"{label}: {msg}")

    def loop(self, model, cond, steps) -> tuple[torch.Tensor, float]:
        """One whole schedule: (final x, copied; seconds)."""
        sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            x = repaint(model, cond, self.times, None, steps).clone()
        sync(self.device)
        return x, time.perf_counter() - t0

    def peak_reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float | None:
        return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1) if self.device.type == "cuda" else None


def levels(a: torch.Tensor, b: torch.Tensor) -> dict:
    """The difference of two samples in [-1, 1] in 8-bit levels: mean and max."""
    d = (a.float() - b.float()).abs() * 127.5
    return {"mean_levels": round(float(d.mean()), 4), "max_levels": round(float(d.max()), 3)}


def correctness(c: Check, master, half, full) -> None:
    """Graph vs eager (fp16), fp16 vs fp32 paired, and fp32 against fp64."""
    S = master.cfg.image_size
    cond = c.cond(2, S)
    steps = make_steps(half, cond, c.opts("fp16"), c.log_for("graph vs eager"), GraphCache(), capture=c.capture)
    captured = isinstance(steps, CudaGraphSteps)
    c.expect("capture", captured, "captured and checked" if captured else "fell back to eager (see the notes)")
    if captured:
        c.put("post_capture_check_max_diff", steps.check_diff)
        x_graph, _ = c.loop(half, cond, steps)
        x_eager, _ = c.loop(half, cond, EagerSteps(half, cond))
        diff = float((x_graph - x_eager).abs().max())
        c.put("graph_vs_eager_final_x_max_diff", diff)
        c.expect("graph vs eager, whole schedule", diff <= 2e-3 * (1 + float(x_eager.abs().max())), f"{diff:.3g}")
    x16, _ = c.loop(half, cond, EagerSteps(half, cond))
    x32, _ = c.loop(full, cond, EagerSteps(full, cond))
    paired = levels(x16, x32)
    c.put("fp16_vs_fp32_final_image", paired)
    c.expect("fp16 and fp32 finite", bool(torch.isfinite(x16).all() and torch.isfinite(x32).all()), str(paired))
    gt, _, _, t = random_batch(2, S, c.device)
    x = torch.randn(gt.shape, generator=torch.Generator().manual_seed(1)).to(c.device)
    with torch.no_grad():
        e16, e32 = half(x, t), full(x, t)
        # the first image through the fp32 UNet on the CPU, IEEE fp32 there (on a CPU run: the same numbers)
        ref = copy.deepcopy(master).float().to("cpu")
        e_cpu = ref(x[:1].cpu(), t[:1].cpu())
    del ref
    scale = float(e32.abs().max())
    c.put("fp16_vs_fp32_eps_max_rel", round(float((e16 - e32).abs().max()) / scale, 6))
    rel32 = float((e32[:1].cpu() - e_cpu).abs().max()) / float(e_cpu.abs().max())
    c.put("fp32_vs_cpu_fp32_eps_max_rel", rel32)
    c.expect("fp32 is IEEE fp32 (TF32 off)", rel32 < 1e-4, f"{rel32:.2e} against the CPU (TF32 gives ~1e-3)")


def table(c: Check, half, full, S: int) -> list:
    """Per batch size: the bound (UNet alone, graph-replayed on CUDA), eager fp32, eager fp16, graphs fp16."""
    rows = []
    for bs in c.args.batch_sizes:
        gt, _, _, t = random_batch(bs, S, c.device)
        row = {"batch": bs, "unet_calls_per_image": c.calls}
        for name, model, precision, graphs in (("eager fp32", full, "fp32", False), ("eager fp16", half, "fp16", False),
                                                ("graphs fp16", half, "fp16", True)):
            c.peak_reset()
            if graphs:
                unet_s, kind = time_unet_graph(model, gt, t, c.device, c.args.unet_repeats)
                row["bound_s_per_image_call"], row["bound_kind"] = round(unet_s / bs, 6), kind
            else:
                unet_s = time_unet(model, gt, t, c.device, c.args.unet_repeats)
            if not c.allows(f"{name} at batch {bs}", unet_s * c.calls * (c.args.repeats + 3)):
                continue
            row[name] = variant_row(c, model, c.opts(precision, graphs), S, bs, unet_s, f"{name} batch {bs}")
        rows.append(row)
        c.put("table_row", row)
    return rows


def variant_row(c: Check, model, opts, S: int, bs: int, unet_s: float, label: str, cond_fn_for=None) -> dict:
    """One engine variant at one batch size: a warm-up run (capture, algorithm choice), then the best of repeats."""
    cond = c.cond(bs, S)
    net = model
    if cond_fn_for is not None:
        net, cond.cond_fn = cond_fn_for(cond)
    cache = GraphCache()
    t0 = time.perf_counter()
    steps = make_steps(net, cond, opts, c.log_for(label), cache, capture=c.capture)
    c.loop(net, cond, steps)
    first = time.perf_counter() - t0
    wall = min(c.loop(net, cond, make_steps(net, cond, opts, c.log_for(label), cache, capture=c.capture))[1]
               for _ in range(c.args.repeats))
    return {"s_per_image_call": round(wall / (c.calls * bs), 6), "wall_s": round(wall, 3),
            "first_run_s": round(first, 2), "outside_unet_share": round(max(0.0, 1 - c.calls * unet_s / wall), 4),
            "graphs": isinstance(steps, CudaGraphSteps), "peak_mem_mb": c.peak_mb()}


def compile_lever(c: Check, master, S: int) -> None:
    """--compile with capture: compiled during the warm-up, then captured; against graphs fp16 uncompiled."""
    opts = c.opts("fp16", compile=True)
    compiled = prepare_model(master, c.device, opts)
    for bs in c.args.batch_sizes:
        if not c.allows(f"--compile at batch {bs}", 150 if bs == c.args.batch_sizes[0] else 30):
            return
        row = variant_row(c, compiled, opts, S, bs, 0.0, f"compile+graphs batch {bs}")
        row.pop("outside_unet_share")
        c.put("compile_graphs_fp16", {"batch": bs, **row})


def guided_lever(c: Check, half, S: int) -> None:
    """Reconstruction guidance's step (forward, backward through the UNet) captured, against eager."""
    bs = c.args.batch_sizes[min(1, len(c.args.batch_sizes) - 1)]
    make = (lambda cond: reconstruction(half, c.diffusion, cond.gt, cond.keep, 1.0))
    if not c.allows("--guided", 60):
        return
    eager = variant_row(c, half, c.opts("fp16", graphs=False), S, bs, 0.0, f"guided eager batch {bs}", make)
    graphs = variant_row(c, half, c.opts("fp16", graph_guidance=True), S, bs, 0.0, f"guided graphs batch {bs}", make)
    for r in (eager, graphs):
        r.pop("outside_unet_share")
    c.put("guided_fp16", {"batch": bs, "eager": eager, "graphs": graphs})
    cond = c.cond(bs, S)
    net_g, cond.cond_fn = make(cond)
    steps = make_steps(net_g, cond, c.opts("fp16", graph_guidance=True), c.log_for("guided check"), GraphCache(),
                       capture=c.capture)
    if isinstance(steps, CudaGraphSteps):
        x_graph, _ = c.loop(net_g, cond, steps)
        cond_e = c.cond(bs, S)
        net_e, cond_e.cond_fn = make(cond_e)
        x_eager, _ = c.loop(net_e, cond_e, EagerSteps(net_e, cond_e))
        diff = float((x_graph - x_eager).abs().max())
        c.put("guided_graph_vs_eager_final_x_max_diff", diff)
        c.expect("guided graph vs eager", diff <= 2e-3 * (1 + float(x_eager.abs().max())), f"{diff:.3g}")
    else:
        c.note("the guided step did not capture: it runs eager (see the notes above)")


def auto_batch_lever(c: Check, half, S: int) -> None:
    """The batch sized from free memory, what its first capture really held, and the timed choice."""
    def probe(b: int):
        cond = c.cond(b, S)
        t = torch.tensor(c.diffusion.num_steps - 1, device=c.device)
        return reverse_step(half, cond.gt, cond, t, torch.zeros_like(t), torch.ones((), dtype=torch.bool,
                                                                                     device=c.device))

    if not c.allows("--auto-batch", 60):
        return
    c.peak_reset()
    free = torch.cuda.mem_get_info(c.device)[0] if c.device.type == "cuda" else None
    fit = auto_batch_size(half, S, c.device, c.args.auto_cap, probe=probe)
    out = {"memory_fit": fit, "free_mb": round(free / 2**20) if free else None}
    c.peak_reset()
    try:
        runner = make_steps(half, c.cond(fit, S), c.opts("fp16"), c.log_for(f"auto batch {fit}"), GraphCache(),
                            capture=c.capture)
        out["first_capture_peak_mb"], out["captured"] = c.peak_mb(), isinstance(runner, CudaGraphSteps)
        del runner
    except Exception as e:
        if not is_oom(e):
            raise
        out["first_capture_oom"] = True
    c.expect("auto batch's first capture fits", not out.get("first_capture_oom"), json.dumps(out))
    per_image, b = {}, 1
    while b <= fit and c.allows(f"timed batch {b}", 20):
        per_image[b] = step_seconds(c, half, S, b) / b
        b *= 2
    if per_image:
        out["timed_s_per_image_step"] = {k: round(v, 6) for k, v in per_image.items()}
        out["timed_choice"] = timed_batch_choice(per_image)
    c.put("auto_batch", out)


def step_seconds(c: Check, model, S: int, bs: int, n: int = 5) -> float:
    """Seconds per reverse step at ``bs``, through the graph runner (captured where it captures)."""
    cond = c.cond(bs, S)
    steps = make_steps(model, cond, c.opts("fp16"), c.log_for(f"timed batch {bs}"), GraphCache(), capture=c.capture)
    x = cond.noise(torch.zeros((), dtype=torch.int64, device=c.device))
    t = torch.tensor(c.args.t_T // 2, device=c.device)
    one, inject = torch.ones((), dtype=torch.int64, device=c.device), torch.ones((), dtype=torch.bool, device=c.device)
    with torch.no_grad():
        steps.reverse(x, t, one, inject)
        sync(c.device)
        t0 = time.perf_counter()
        for _ in range(n):
            steps.reverse(x, t, one, inject)
        sync(c.device)
    return (time.perf_counter() - t0) / n


def run(args) -> int:
    real_compile = torch.compile
    if args.dry_run:  # dynamo's tracing and guards without a C++ compiler; put back at the end
        torch.compile = lambda fn, **kw: real_compile(fn, **{**kw, "backend": "eager"})
    try:
        return checked_run(Check(args))
    finally:
        torch.compile = real_compile


def checked_run(c: Check) -> int:
    args = c.args
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        master = bench_unet(args.arch)
        S = master.cfg.image_size
        half = prepare_model(master, c.device, c.opts("fp16"))  # the fp16 copy first: fp32 moves master itself
        full = prepare_model(master, c.device, c.opts("fp32"))
        c.put("setup", {"device": str(c.device), "gpu": torch.cuda.get_device_name(c.device) if c.device.type == "cuda"
                        else None, "arch": args.arch, "torch": torch.__version__, "schedule":
                        [args.t_T, args.jump_length, args.jump_n_sample], "unet_calls_per_image": c.calls,
                        "setup_s": round(time.perf_counter() - c.t0, 1)})
        correctness(c, master, half, full)
        c.put("correctness_s", round(time.perf_counter() - c.t0, 1))
        rows = table(c, half, full, S)
        if args.guided:
            guided_lever(c, half, S)
        if args.auto_batch:
            auto_batch_lever(c, half, S)
        if args.compile:
            del full
            compile_lever(c, master, S)
    for w in caught:
        c.notes.append(f"warning: {w.message}")
    print_summary(c, rows)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"results": c.results, "table": rows, "notes": c.notes,
                                                   "failed": c.failed}, indent=1))
    return 1 if c.failed else 0


def print_summary(c: Check, rows: list) -> None:
    """The README's table, then every note (fallbacks, skips, warnings) once."""
    print(f"\n{c.args.arch} px architecture, random non-zero weights, t_T {c.args.t_T} / {c.args.jump_length} / "
          f"{c.args.jump_n_sample} ({c.calls} UNet calls per image), {c.device}; ms per image and UNet call")
    print("| batch | UNet alone fp16 (bound) | eager fp32 | eager fp16 | graphs fp16 | outside the UNet "
          "(fp32 / fp16 / graphs) | peak MiB (graphs) |")
    print("|---|---|---|---|---|---|---|")
    names = ("eager fp32", "eager fp16", "graphs fp16")
    for r in rows:
        ms = [f"{1000 * r[n]['s_per_image_call']:.2f}" if n in r else "-" for n in names]
        share = " / ".join(f"{100 * r[n]['outside_unet_share']:.1f}%" if n in r else "-" for n in names)
        bound = f"{1000 * r['bound_s_per_image_call']:.2f} ({r['bound_kind']})" if "bound_s_per_image_call" in r else "-"
        print(f"| {r['batch']} | {bound} | {' | '.join(ms)} | {share} | {r.get('graphs fp16', {}).get('peak_mem_mb')} |")
    for note in dict.fromkeys(c.notes):
        print(f"note: {note}")
    print(f"{'FAILED: ' + ', '.join(c.failed) if c.failed else 'all checks passed'}; "
          f"{time.perf_counter() - c.t0:.1f} s of {c.args.budget_s:.0f}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--arch", choices=["256", "small", "tiny"], default="256")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--t-T", type=int, default=10)
    p.add_argument("--jump-length", type=int, default=5)
    p.add_argument("--jump-n-sample", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--unet-repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--budget-s", type=float, default=420.0, help="Skip what would not finish within this")
    p.add_argument("--auto-cap", type=int, default=512, help="The most images --auto-batch sizes for")
    p.add_argument("--compile", action="store_true", help="Time torch.compile with capture")
    p.add_argument("--guided", action="store_true", help="Time reconstruction guidance's step captured vs eager")
    p.add_argument("--auto-batch", action="store_true", help="Size a batch from memory, capture it, time the choice")
    p.add_argument("--dry-run", action="store_true", help="The same code on the CPU, tiny sizes (the test suite)")
    p.add_argument("--json-out", help="Write every result here as JSON")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.dry_run:
        args.device, args.arch, args.t_T, args.jump_length, args.jump_n_sample = "cpu", "tiny", 4, 2, 2
        args.batch_sizes, args.repeats, args.unet_repeats, args.auto_cap = args.batch_sizes[:2], 1, 2, 2
        args.threads = args.threads or 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
