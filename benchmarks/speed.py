"""Speed of the sampling core against a plain eager loop, same model, same run.

For each batch size: UNet calls per image, seconds per UNet call (the UNet
alone, timed separately at that batch size), share of wall time outside the
UNet, images per second, and peak memory; for our engine and for the plain
loop of ``repaint_cli.plain`` (coefficients gathered per step, no fusion).

    python benchmarks/speed.py                       # tiny fixture, t_T 50 / 5 / 2
    python benchmarks/speed.py --batch-sizes 1 4 8 --threads 2 --channels-last
    python benchmarks/speed.py --model emoji32 --preset paper
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

from repaint_cli.engine import EngineOptions, make_steps, pick_device, prepare_model  # noqa: E402
from repaint_cli.models import load  # noqa: E402
from repaint_cli.noise import image_key, keys_tensor  # noqa: E402
from repaint_cli.plain import paper_attention, plain_repaint  # noqa: E402
from repaint_cli.sampler import Conditioning, repaint  # noqa: E402
from repaint_cli.diffusion import Diffusion  # noqa: E402
from repaint_cli.schedule import JumpParams, PRESETS, jump_schedule, schedule_summary  # noqa: E402

TINY = ROOT.parent / "shared" / "fixtures" / "guided_diffusion"


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
        g = torch.Generator().manual_seed(0)
        gt = (torch.rand((bs, 3, S, S), generator=g) * 2 - 1).to(device)
        keep = (torch.rand((bs, 1, S, S), generator=g) > 0.5).to(device)
        keys = keys_tensor([image_key(0, f"b{i}") for i in range(bs)], device)
        t = torch.full((bs,), 500, device=device)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--config")
    p.add_argument("--preset", choices=list(PRESETS))
    p.add_argument("--t-T", type=int, default=50)
    p.add_argument("--jump-length", type=int, default=5)
    p.add_argument("--jump-n-sample", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
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
    args = p.parse_args(argv)
    result = run(args)
    if args.cli:
        result["cli"] = run_cli(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
