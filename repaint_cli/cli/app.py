"""The ``repaint`` command: thin Typer commands over importable functions.

Logs and progress go to stderr; results (output paths, JSON lines) go to
stdout, so commands compose in shell pipelines.

Only Typer and Rich are imported here at start-up: PyTorch, OpenCV and the
rest load inside the commands that need them, so ``--help``, ``masks list``,
``schedule`` and usage errors answer at once.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import __version__
from ..core.schedule import PRESETS
from .impute import register as register_impute
from .inpaint import register as register_inpaint
from .masks import masks_app
from .models import models_app
from .output import die, err
from .params import FLAG, HELP, PlainCommand, PlainGroup
from .sheet import register as register_sheet

APP_HELP = ("Fill masked regions of images (repaint inpaint) and missing cells of tables (repaint impute) "
            "with RePaint, in batches.")
app = typer.Typer(help=APP_HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings=HELP, cls=PlainGroup)
app.add_typer(masks_app, name="masks", help="Generate, list and preview masks.")
app.add_typer(models_app, name="models")
register_inpaint(app)  # first among the commands, as in the top-level help


def version_text() -> str:
    """repaint-cli's version and the PyTorch (and CUDA) it runs on."""
    import torch

    hip = getattr(torch.version, "hip", None)  # AMD's ROCm builds: their GPUs are PyTorch's 'cuda' devices
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        cuda = (f"{'ROCm ' + hip if hip else 'CUDA ' + str(torch.version.cuda)}, {gpus} GPU{'s' if gpus != 1 else ''} "
                f"({torch.cuda.get_device_name(0)})")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        cuda = "Apple MPS"
    elif torch.version.cuda:
        cuda = f"built for CUDA {torch.version.cuda}, no GPU visible"
    else:
        cuda = "CPU build, no CUDA"
    return f"repaint-cli {__version__} (torch {torch.__version__}, {cuda}; Python {sys.version.split()[0]})"


CPU_TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def cpu_torch_hint() -> Optional[str]:
    """On a CUDA build of PyTorch with no GPU to use (what a plain pip install brings, GBs of CUDA
    libraries): how to install the CPU build instead; None otherwise."""
    import torch

    if torch.version.cuda is None or torch.cuda.is_available():
        return None
    return (f"this PyTorch is a CUDA build, but no GPU is visible; the CPU build is much smaller "
            f"(pip uninstall torch, then: {CPU_TORCH_INSTALL})")


def _version_callback(value: bool):
    if value:
        print(version_text())
        hint = cpu_torch_hint()
        if hint:  # advice, on stderr: stdout keeps the one version line
            err.print(f"note: {hint}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, metavar="",
                                 help="Print the version and the PyTorch / CUDA in use, then exit."),
):
    """Fill masked regions of images (repaint inpaint) and missing cells of tables (repaint impute) with
    RePaint, in batches."""


@app.command("schedule", cls=PlainCommand)
def schedule_cmd(
    t_T: Optional[int] = typer.Option(None, "--t-T", metavar="N", help="Respaced steps."),
    jump_length: Optional[int] = typer.Option(None, metavar="N", help="Steps per jump back."),
    jump_n_sample: Optional[int] = typer.Option(None, metavar="N", help="Times each jump is resampled."),
    n_sample: Optional[int] = typer.Option(None, metavar="N", help="Reference's n_sample (default 1)."),
    start_resampling: Optional[int] = typer.Option(None, metavar="T", help="Resample only below this t."),
    preset: Optional[str] = typer.Option(None, metavar="NAME", show_default="paper",
                                         help=f"Start from a preset: {', '.join(PRESETS)}."),
    as_json: bool = typer.Option(False, "--json", **FLAG, help="Print the full list of times as JSON."),
    list_presets: bool = typer.Option(False, "--list", **FLAG, help="Print every preset with its costs: UNet calls, "
                                      "forward-equivalents, time relative to paper."),
):
    """Print the jump schedule's summary (UNet calls, undo steps), or the full list with --json."""
    from ..core.schedule import jump_schedule, resolve_jump_params, schedule_summary

    if list_presets:
        _list_presets()
        return

    try:
        params = resolve_jump_params(preset, None, t_T=t_T, jump_length=jump_length, jump_n_sample=jump_n_sample,
                                     n_sample=n_sample, start_resampling=start_resampling)
        times = jump_schedule(params)
    except ValueError as e:
        die(str(e))
    if as_json:
        print(json.dumps({"params": params.as_dict(), "times": times}))
        return
    s = schedule_summary(times)
    print(f"t_T {params.t_T}, jump_length {params.jump_length}, jump_n_sample {params.jump_n_sample}: "
          f"{s['unet_calls']} UNet calls, {s['undo_steps']} undo steps, {s['entries']} schedule entries")


def _list_presets() -> None:
    """One line per preset: its schedule, guidance and costs (UNet calls, forward-equivalents, measured time
    relative to paper), and its measured paired difference to paper (benchmarks/frontier.py writes the
    numbers; a preset changed since is shown as not measured)."""
    from ..core.schedule import guided_calls, jump_schedule, preset_guidance, preset_guidance_calls, schedule_summary
    from ..resources import preset_quality

    measured = preset_quality()
    for name, p in PRESETS.items():
        times = jump_schedule(p)
        s = schedule_summary(times)
        g, which = preset_guidance(name), preset_guidance_calls(name)
        on = "" if not g or which == "all" else f" on the last call at each time ({sum(guided_calls(times, which))})"
        line = (f"{name}\tt_T {p.t_T}, jump_length {p.jump_length}, jump_n_sample {p.jump_n_sample}"
                + (f", guidance {g:g}{on}" if g else "")
                + f": {s['unet_calls']} UNet calls, {s['undo_steps']} undo steps" + _preset_costs(name, p, g, which))
        m = measured.get(name)
        if name == "paper":
            line += "; the reference the others are measured against"
        elif (m and m.get("schedule") == p.as_dict() and m.get("guidance", 0.0) == g
              and m.get("guidance_calls", "all") == which):
            masks = m["masks"]
            n = min(v["images"] for v in masks.values())
            line += (f"; minus paper, paired over {n} images per mask ({m['date']}): hole PSNR "
                     + ", ".join(f"{k} {v['psnr'][0]:+.2f} ± {v['psnr'][1]:.2f} dB" for k, v in masks.items())
                     + "; SSIM " + ", ".join(f"{k} {v['ssim'][0]:+.3f}" for k, v in masks.items()))
        else:
            line += "; not measured against paper yet"
        print(line)


def _preset_costs(name: str, p, guidance: float, which: str = "all") -> str:
    """', N forward-equivalents (...), time X of paper's (...)': the schedule's calls counted in plain forward
    passes, and the measured time per image, where it was measured for this very schedule, scale and calls."""
    from ..core.schedule import GUIDED_CALL_COST, forward_equivalents, measured_time_vs_paper

    fe = forward_equivalents(p, guidance, which)
    text = f", {fe:,.0f} forward-equivalents" + (f" (a guided call counts {GUIDED_CALL_COST:g})" if guidance else "")
    measured = measured_time_vs_paper(name, p, guidance, which)
    if name == "paper" and measured:
        return text + ", time per image 1 (the unit)"
    if measured is None:
        return text + ", time per image vs paper not measured"
    return text + f", time per image {measured:.3f} of paper's (1/{1 / measured:.1f}, measured)"


@app.command("train", cls=PlainCommand)
def train_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="A folder of images (any size; centre-cropped) or a "
                                "prepared .npz (key 'train')."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Run folder: state.pt (resumable), "
                             "best_ema.safetensors, sample grids."),
    size: int = typer.Option(32, metavar="N", help="Training resolution."),
    steps: int = typer.Option(100_000, metavar="N", help="Total optimiser steps (a rerun resumes up to this)."),
    batch_size: int = typer.Option(64, metavar="N", help="Images per step."),
    lr: float = typer.Option(3e-4, metavar="X", help="Learning rate (AdamW, linear warm-up)."),
    threads: int = typer.Option(1, metavar="N", help="CPU threads (one leaves a core free; more than the cores is "
                                "much slower)."),
    channels: int = typer.Option(32, metavar="N", help="UNet base channels (num_channels)."),
    channel_mult: str = typer.Option("1,2,2", metavar="TEXT", help="UNet channel multipliers per level."),
    sample_every: int = typer.Option(1000, metavar="N", help="Write a grid of unconditional samples every N steps."),
    export_to: Optional[Path] = typer.Option(None, "--export", metavar="FILE", help="After training, copy the best "
                                             "EMA weights here (+ a sidecar YAML)."),
):
    """Train an unconditional DDPM (our guided-diffusion UNet, Improved DDPM's hybrid loss, EMA)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from ..training.train import TrainConfig, export, train

    cfg = TrainConfig(size=size, steps=steps, batch_size=batch_size, lr=lr, threads=threads,
                      sample_every=sample_every)
    cfg.model.update(num_channels=channels, channel_mult=channel_mult)
    if not data.exists():
        die(f"{data}: not found; give a folder of images or a prepared .npz")
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err)
    task = progress.add_task("train", total=steps, loss="-")

    def on_step(step, total, loss):
        progress.update(task, completed=step, loss=f"{loss:.4f}")

    try:
        with progress:
            best = train(data, out, cfg, log=lambda m: progress.console.print(m, markup=False, highlight=False),
                         on_step=on_step)
    except ValueError as e:
        die(str(e))
    print(best)
    if export_to:
        print(export(out, export_to))


register_sheet(app)
register_impute(app)


@app.command("merge-manifests", cls=PlainCommand)
def merge_manifests_cmd(
    manifests: List[Path] = typer.Argument(..., metavar="MANIFEST",
                                           help="Manifest files (JSON lines) from shards or ranks."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default="stdout",
                                       help="Write the merged manifest here."),
):
    """Join shard manifests: one record per input, the best status winning (done > skipped > failed)."""
    from ..files import InputError, WritePlan, write_bytes_atomic
    from ..runtime import torchrun

    missing = [str(m) for m in manifests if not m.is_file()]
    if missing:
        die(f"{missing[0]}: manifest not found")
    if out:  # checked before reading: never onto a manifest read, never over a device or a FIFO
        plan = WritePlan()
        for m in manifests:
            plan.read(m, f"the manifest {m}")
        plan.write(out, "--out")
        try:
            plan.check()
        except InputError as e:
            die(str(e))
    try:
        records = torchrun.merge_manifests(manifests)
    except ValueError as e:
        die(str(e))
    text = "".join(json.dumps(r) + "\n" for r in records)
    if out:
        try:
            write_bytes_atomic(out, text.encode())
        except InputError as e:
            die(str(e))
    else:
        sys.stdout.write(text)
    counts = {s: sum(1 for r in records if r.get("status") == s) for s in ("done", "failed", "skipped")}
    err.print(f"{len(records)} inputs: done {counts['done']}, failed {counts['failed']}, skipped {counts['skipped']}")
    if counts["failed"]:
        raise typer.Exit(1)


def main():
    app()


if __name__ == "__main__":
    main()
