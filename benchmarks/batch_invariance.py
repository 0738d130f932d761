"""What the batch-invariant CPU path costs: UNet forward time per image, with and without it.

The model is prepared as ``repaint inpaint`` prepares it on the CPU (fp32,
channels_last, ``engine.prepare_model``) and switched between its plain and its
batch-invariant layers (``invariant.set_batch_invariant``) on the same weights.
The machine is shared, so the two variants are interleaved: every repeat times
both, in alternating order, and the cost is the median over repeats of the
per-repeat ratio (invariant / plain), which cancels slow drifts in load.

    python benchmarks/batch_invariance.py                           # emoji32 and the tiny fixture
    python benchmarks/batch_invariance.py --batch-sizes 16 --repeats 60 --threads 2
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from repaint_cli.runtime.device import EngineOptions, prepare_model  # noqa: E402
from repaint_cli.models.batch_invariant import set_batch_invariant  # noqa: E402
from repaint_cli.models.checkpoints import load  # noqa: E402

TINY = ROOT.parent / "shared" / "fixtures" / "guided_diffusion"
MODELS = {"emoji32": ("emoji32", None), "tiny": (str(TINY / "tiny.pt"), str(TINY / "tiny.yaml"))}


def forward_seconds(model, x, t, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        model(x, t)
    return (time.perf_counter() - t0) / calls


def measure(name: str, batch: int, repeats: int, calls: int) -> dict:
    checkpoint, conf = MODELS[name]
    unet = load(checkpoint, conf, "cpu").model
    model = prepare_model(unet, torch.device("cpu"), EngineOptions(device="cpu"))
    size = unet.cfg.image_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    times = {"plain": [], "invariant": []}
    with torch.no_grad():
        for variant in ("plain", "invariant"):  # warm-up: oneDNN primitives, allocator
            set_batch_invariant(unet, variant == "invariant")
            forward_seconds(model, x, t, 3)
        for r in range(repeats):
            order = ("plain", "invariant") if r % 2 == 0 else ("invariant", "plain")
            for variant in order:
                set_batch_invariant(unet, variant == "invariant")
                times[variant].append(forward_seconds(model, x, t, calls))
    ratios = [i / p for i, p in zip(times["invariant"], times["plain"])]
    plain_ms = statistics.median(times["plain"]) * 1e3 / batch
    inv_ms = statistics.median(times["invariant"]) * 1e3 / batch
    return {"model": name, "batch": batch, "repeats": repeats,
            "plain_ms_per_image": round(plain_ms, 3), "invariant_ms_per_image": round(inv_ms, 3),
            "extra_median_ratio": round(statistics.median(ratios) - 1, 4),
            "extra_ratio_iqr": [round(q - 1, 4) for q in statistics.quantiles(ratios, n=4)[::2]]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["emoji32", "tiny"], choices=sorted(MODELS))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--repeats", type=int, default=40, help="interleaved A/B pairs per batch size")
    ap.add_argument("--calls", type=int, default=2, help="forward calls per timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# {datetime.date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    for name in args.models:
        for batch in args.batch_sizes:
            row = measure(name, batch, args.repeats, args.calls)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
