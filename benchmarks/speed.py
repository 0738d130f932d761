"""Speed of the sampling core against a plain eager loop, same model, same run.

For each batch size: UNet calls per image, seconds per UNet call (the UNet
alone, timed separately at that batch size), share of wall time outside the
UNet, images per second, and peak memory; for our engine and for the plain
loop of ``repaint_cli.core.reference_loop`` (coefficients gathered per step, no fusion).

    python benchmarks/speed.py                       # tiny fixture, t_T 50 / 5 / 2
    python benchmarks/speed.py --batch-sizes 1 4 8 --threads 2 --channels-last
    python benchmarks/speed.py --model emoji32 --preset paper
    python benchmarks/speed.py --device cuda         # the GPU table (make bench-gpu), see run_engine_table

With ``--device cuda`` and no ``--model`` it prints the engine table instead:
the 256 px architecture of the paper's checkpoints with random weights, none of
them zero (no checkpoint needed), at batch 1, 4 and 16, per image and UNet call:
the UNet alone replayed as a CUDA graph (the bound: the same launch-free loop as
the engine's graphs; eager on a CPU, and labelled so), the engine eager fp32,
eager fp16 and CUDA graphs fp16, and the share of each run's time spent outside
the UNet; plus anything the engine fell back from (a capture that failed or did
not match eager, the unfused noise). ``make bench-gpu`` runs benchmarks/gpu_check.py,
which checks correctness first and times the levers too.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from repaint_cli.runtime.cuda_graphs import GraphCache, make_steps  # noqa: E402
from repaint_cli.runtime.device import EngineOptions, pick_device, prepare_model  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402
from repaint_cli.core.noise import image_key, keys_tensor  # noqa: E402
from repaint_cli.core.reference_loop import plain_repaint  # noqa: E402
from repaint_cli.models.reference_attention import paper_attention  # noqa: E402
from repaint_cli.core.sampler import Conditioning, repaint  # noqa: E402
from repaint_cli.core.diffusion import Diffusion  # noqa: E402
from repaint_cli.core.schedule import JumpParams, PRESETS, jump_schedule, schedule_summary  # noqa: E402
from repaint_cli.models.unet import UNetConfig, UNetModel  # noqa: E402

TINY = ROOT.parent / "shared" / "fixtures" / "guided_diffusion"


def random_batch(bs: int, S: int, device):
    """A seeded batch to time: images in [-1, 1], half-known masks, noise keys, a mid-schedule time."""
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand((bs, 3, S, S), generator=g) * 2 - 1).to(device)
    keep = (torch.rand((bs, 1, S, S), generator=g) > 0.5).to(device)
    keys = keys_tensor([image_key(0, f"b{i}") for i in range(bs)], device)
    return gt, keep, keys, torch.full((bs,), 500, device=device)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NullModel(torch.nn.Module):
    """Returns a constant output of the UNet's shape: what is left is the loop's own cost."""

    def forward(self, x, t, **kw):
        return torch.zeros((x.shape[0], 2 * x.shape[1], *x.shape[2:]), device=x.device)


def loop_time(name, model, gt, keep, keys, diffusion, times, opts, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        if name == "engine":
            cond = Conditioning(gt, keep, keys, diffusion.coefficients(device),
                                noise_index=torch.arange(gt[0].numel(), device=device))
            repaint(model, cond, times, None, make_steps(model, cond, opts))
        else:
            plain_repaint(model, diffusion, gt, keep, times, keys)
    sync(device)
    return time.perf_counter() - t0


def time_unet(model, x, t, device, repeats: int) -> float:
    with torch.no_grad():
        for _ in range(3):
            model(x, t)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x, t)
        sync(device)
    return (time.perf_counter() - t0) / repeats


def time_unet_graph(model, x, t, device, repeats: int) -> tuple[float, str]:
    """Seconds per call of the UNet alone, and how it was run: replayed as a CUDA graph on CUDA (an eager
    bound would be slower than the engine's graph loop and hide the loop's own cost), eager elsewhere."""
    if device.type != "cuda":
        return time_unet(model, x, t, device, repeats), "eager"
    with torch.no_grad():
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x, t)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x, t)
        graph.replay()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            graph.replay()
        sync(device)
    seconds = (time.perf_counter() - t0) / repeats
    del graph
    torch.cuda.empty_cache()
    return seconds, "graph"


def nonzero_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every layer that guided-diffusion initialises to zero (each ResBlock's last conv, attention's proj_out,
    the final out conv) given PyTorch's default random init instead: with them zero the UNet outputs exactly 0
    and a benchmark or a precision check measures nothing."""
    torch.manual_seed(seed)
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if params and hasattr(m, "reset_parameters") and all(not p.any() for p in params):
            m.reset_parameters()
    return model


def bench_unet(arch: str, seed: int = 0) -> UNetModel:
    """The benchmarks' random UNet of ``arch`` (256: the paper's checkpoints' architecture), no weight zero."""
    torch.manual_seed(seed)
    model = UNetModel(UNetConfig(**ARCHS[arch])).eval().requires_grad_(False)
    return nonzero_weights(model, seed)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model_arg = args.model or str(TINY / "tiny.pt")
    conf = args.config or (str(TINY / "tiny.yaml") if args.model is None else None)
    loaded = load(model_arg, conf, "cpu")
    jp = PRESETS[args.preset] if args.preset else JumpParams(t_T=args.t_T, jump_length=args.jump_length,
                                                             jump_n_sample=args.jump_n_sample)
    times = jump_schedule(jp)
    calls = schedule_summary(times)["unet_calls"]
    hp = loaded.hparams
    diffusion = Diffusion.create(int(hp.get("diffusion_steps", 1000)), hp.get("noise_schedule", "linear"), str(jp.t_T))
    S = loaded.model.cfg.image_size
    opts = EngineOptions(device=str(device), precision=args.precision, cuda_graphs=not args.no_cuda_graphs,
                         channels_last=args.channels_last, compile=args.compile, threads=args.threads)
    fast_model = prepare_model(copy.deepcopy(loaded.model), device, opts)  # layout changes stay on the copy
    plain_model = loaded.model  # the same weights, eager fp32, default layout
    rows = []
    for bs in args.batch_sizes:
        gt, keep, keys, t = random_batch(bs, S, device)
        row = {"batch": bs, "unet_calls_per_image": calls}
        for name in ("engine", "plain"):
            m = fast_model if name == "engine" else plain_model.to(device)
            # the baseline runs attention as the paper's code does (einsum + softmax)
            ctx = paper_attention() if name == "plain" else contextlib.nullcontext()
            ctx.__enter__()
            unet_s = time_unet(m, gt, t, device, args.unet_repeats)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            walls = [loop_time(name, m, gt, keep, keys, diffusion, times, opts, device) for _ in range(args.repeats)]
            ctx.__exit__(None, None, None)
            wall = min(walls)
            # time outside the UNet: the same loop with a model that does no work
            outside = min(loop_time(name, NullModel(), gt, keep, keys, diffusion, times, opts, device) for _ in range(3))
            row[name] = {
                "unet_s_per_call": round(unet_s, 5),
                "wall_s": round(wall, 3),
                "outside_unet_s": round(outside, 4),
                "outside_unet_share": round(outside / wall, 4),
                "images_per_s": round(bs / wall, 4),
                "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                                     else peak_rss_mb(), 1),
            }
        row["speedup"] = round(row["engine"]["images_per_s"] / row["plain"]["images_per_s"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"{device.type}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, torch {torch.__version__}",
        "model": Path(model_arg).name, "schedule": jp.as_dict(), "options": vars(args), "rows": rows,
    }


# The architecture of celeba256 / places256 / OpenAI's 256x256_diffusion (552M parameters).
ARCH_256 = dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True)
# A small one of the same family, to try the table's code on a CPU (--arch small).
ARCH_SMALL = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                  num_heads=2, num_head_channels=-1, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True)
# The smallest one, for the CPU dry run of benchmarks/gpu_check.py in the test suite.
ARCH_TINY = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                 num_heads=2, num_head_channels=-1, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True)
ARCHS = {"256": ARCH_256, "small": ARCH_SMALL, "tiny": ARCH_TINY}
ENGINE_VARIANTS = (("eager fp32", "fp32", False), ("eager fp16", "fp16", False), ("graphs fp16", "fp16", True))


def run_engine_table(args) -> dict:
    """The GPU table: UNet-only bound vs the engine's three variants, per image and UNet call."""
    import warnings

    device = pick_device(args.device)
    master = bench_unet(args.arch)
    S = master.cfg.image_size
    jp = JumpParams(t_T=args.t_T, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample)
    times = jump_schedule(jp)
    calls = schedule_summary(times)["unet_calls"]
    diffusion = Diffusion.create(1000, "linear", str(jp.t_T))
    notes: list[str] = []
    rows = []
    for bs in args.batch_sizes:
        gt, keep, keys, t = random_batch(bs, S, device)
        row = {"batch": bs, "unet_calls_per_image": calls}
        for name, precision, graphs in ENGINE_VARIANTS:
            opts = EngineOptions(device=str(device), precision=precision, cuda_graphs=graphs,
                                 channels_last=args.channels_last, threads=args.threads)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = prepare_model(master, device, opts)
                if graphs:
                    unet_s, bound_kind = time_unet_graph(model, gt, t, device, args.unet_repeats)
                else:
                    unet_s = time_unet(model, gt, t, device, args.unet_repeats)
                cond = Conditioning(gt, keep, keys, diffusion.coefficients(device),
                                    noise_index=torch.arange(gt[0].numel(), device=device))
                cache = GraphCache()

                def once():
                    steps = make_steps(model, cond, opts, lambda m, level="info": notes.append(f"{name} batch {bs}: {m}"),
                                       cache)
                    sync(device)
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        repaint(model, cond, times, None, steps)
                    sync(device)
                    return time.perf_counter() - t0

                once()  # warm-up: capture, algorithm choice, the fused noise compile
                wall = min(once() for _ in range(args.repeats))
            notes += [f"{name} batch {bs}: {w.message}" for w in caught]
            per_call = wall / (calls * bs)
            row[name] = {"s_per_image_call": round(per_call, 6), "unet_only_s_per_image_call": round(unet_s / bs, 6),
                         "outside_unet_share": round(max(0.0, 1 - calls * unet_s / wall), 4),
                         "wall_s": round(wall, 3),
                         "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                         if device.type == "cuda" else round(peak_rss_mb(), 1)}
            del model, cache
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
        row["bound_s_per_image_call"] = row["graphs fp16"]["unet_only_s_per_image_call"]
        row["bound_kind"] = bound_kind  # "graph": the UNet alone replayed as a CUDA graph; "eager" on a CPU
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{args.arch} px architecture, random weights, t_T {jp.t_T} / {jp.jump_length} / {jp.jump_n_sample} "
          f"({calls} UNet calls per image), {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}")
    print(f"| batch | UNet alone fp16, {rows[0]['bound_kind'] if rows else 'graph'} (bound) | eager fp32 | eager fp16 | "
          f"graphs fp16 | outside the UNet (fp32 / fp16 / graphs) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ms = [f"{1000 * r[n]['s_per_image_call']:.2f} ms" for n, _, _ in ENGINE_VARIANTS]
        share = " / ".join(f"{100 * r[n]['outside_unet_share']:.1f}%" for n, _, _ in ENGINE_VARIANTS)
        print(f"| {r['batch']} | {1000 * r['bound_s_per_image_call']:.2f} ms | {' | '.join(ms)} | {share} |")
    for note in dict.fromkeys(notes):  # what the engine fell back from, each once
        print(f"note: {note}")
    if not notes:
        print("note: no fallback: every capture matched eager, the fused noise draw was used where on CUDA")
    return {"date": datetime.date.today().isoformat(), "device": str(device), "arch": args.arch,
            "schedule": jp.as_dict(), "rows": rows, "notes": list(dict.fromkeys(notes))}


def run_cli(args) -> list[dict]:
    """The whole command timed: `repaint inpaint` on N generated images, per batch size."""
    import subprocess
    import tempfile

    import numpy as np
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="repaint-bench-"))
    rng = np.random.default_rng(0)
    size = 64 if args.model is None else load(args.model, args.config, "cpu").model.cfg.image_size
    (tmp / "imgs").mkdir()
    for i in range(args.cli):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(tmp / "imgs" / f"im{i:03d}.png")
    model = ["--model", args.model or str(TINY / "tiny.pt")]
    conf = ["--config", args.config or str(TINY / "tiny.yaml")] if (args.config or args.model is None) else []
    sched = (["--preset", args.preset] if args.preset else
             ["--t-T", str(args.t_T), "--jump-length", str(args.jump_length), "--jump-n-sample", str(args.jump_n_sample)])
    rows = []
    for bs in args.batch_sizes:
        cmd = [sys.executable, "-m", "repaint_cli", "inpaint", str(tmp / "imgs"), "--mask", "thick", *model, *conf,
               *sched, "--batch-size", str(bs), "--out", str(tmp / f"out{bs}"), "--threads", str(args.threads), "-q"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        row = {"cli_batch": bs, "images": args.cli, "wall_s": round(wall, 2), "images_per_s": round(args.cli / wall, 4),
               "s_per_image": round(wall / args.cli, 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--config")
    p.add_argument("--preset", choices=list(PRESETS))
    p.add_argument("--t-T", type=int, default=50)
    p.add_argument("--jump-length", type=int, default=5)
    p.add_argument("--jump-n-sample", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--unet-repeats", type=int, default=20)
    p.add_argument("--cli", type=int, default=0, help="Also time the whole command on this many images")
    p.add_argument("--json-out", help="Write the result as JSON here")
    p.add_argument("--engine-table", action="store_true",
                   help="The GPU table (default with --device cuda and no --model); on a CPU with --arch small")
    p.add_argument("--arch", choices=list(ARCHS), default="256", help="Architecture of the engine table")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.engine_table or (args.device.startswith("cuda") and args.model is None):
        result = run_engine_table(args)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=1))
        return
    result = run(args)
    if args.cli:
        result["cli"] = run_cli(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
