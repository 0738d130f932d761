"""The ``repaint`` command: thin Typer commands over importable functions.

Logs and progress go to stderr; results (output paths, JSON lines) go to
stdout, so commands compose in shell pipelines.
"""
from __future__ import annotations

import json
import signal
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import dist
from .cli_frames import register as register_sheet
from .cli_masks import masks_app
from .engine import PRECISIONS, EngineOptions
from .frames import hooks_from_options, sheet_for_dir
from .pipeline import ImageResult, InpaintOptions, Reporter, RunError, StopFlag, inpaint
from .models import list_cards, sha256_file
from .schedule import PRESETS, jump_schedule, resolve_jump_params, schedule_summary

app = typer.Typer(help="Fill masked regions of images in batches with RePaint.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
app.add_typer(masks_app, name="masks", help="Generate, list and preview masks.")
models_app = typer.Typer(help="Known models and their checkpoints.", no_args_is_help=True)
app.add_typer(models_app, name="models")

err = Console(stderr=True, highlight=False)


def die(message: str, code: int = 2):
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


class RichReporter(Reporter):
    """Progress bar and log lines on stderr; one line per finished image on stdout."""

    def __init__(self, json_lines: bool, quiet: bool = False):
        super().__init__()
        self.json_lines = json_lines
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
                                 disable=quiet)
        self.task = None
        self.images_done = 0
        self.n_images = 0

    def log(self, msg: str, level: str = "info") -> None:
        if level == "info" and self.quiet:
            return
        prefix = {"error": "[red]error:[/red] ", "warning": "[yellow]warning:[/yellow] "}.get(level, "")
        self.progress.console.print(prefix, end="", markup=True)
        self.progress.console.print(msg, markup=False, highlight=False, soft_wrap=True)

    def start(self, n_images: int, total_steps: int) -> None:
        self.n_images = n_images
        self.progress.start()
        self.task = self.progress.add_task(f"images 0/{n_images}", total=total_steps or None)

    def advance_steps(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def image_done(self, result: ImageResult) -> None:
        if result.status == "done":
            self.images_done += 1
        if self.task is not None:
            self.progress.update(self.task, description=f"images {self.images_done}/{self.n_images}")
        if self.json_lines:
            print(result.json(), flush=True)
        elif result.status in ("done", "skipped"):  # every finished output, so stdout lists all results
            print(result.output, flush=True)

    def stop(self):
        self.progress.stop()


def _install_sigint(stop: StopFlag):
    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        err.print("stopping after the current batch (Ctrl-C again to stop at once)")
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not in the main thread (tests)
        pass


@app.command("inpaint")
def inpaint_cmd(
    inputs: List[str] = typer.Argument(..., help="Image files, folders, globs (quote them: 'shots/*.jpg'), or - to read paths from stdin."),
    mask: str = typer.Option("thick", "--mask", "-m", help="Mask file, folder or glob of masks (paired by stem; quote globs: --mask 'masks/*.png', else the shell expands them), or a kind: thick, medium, thin, ex64, genhalf, nn2, ev2li, box, or a preset YAML."),
    mask_convention: str = typer.Option("keep", help="keep: white = keep (RePaint); hole: white = hole (LaMa, IOPaint)."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output folder; writes <stem>.png."),
    model: Optional[str] = typer.Option(None, help="Model name (see 'repaint models list') or checkpoint path. Default: the embedded emoji32 model."),
    config: Optional[Path] = typer.Option(None, help="A RePaint conf YAML (model hyper-parameters, timestep_respacing, schedule_jump_params, model_path)."),
    preset: Optional[str] = typer.Option(None, help=f"Sampling preset: {', '.join(PRESETS)}."),
    t_T: Optional[int] = typer.Option(None, "--t-T", help="Respaced steps (t_T)."),
    jump_length: Optional[int] = typer.Option(None, help="Steps per jump back."),
    jump_n_sample: Optional[int] = typer.Option(None, help="Times each jump is resampled (1 = no resampling)."),
    n_sample: Optional[int] = typer.Option(None, hidden=True),
    seed: int = typer.Option(0, help="Run seed; each image's noise comes from (seed, file stem)."),
    batch_size: str = typer.Option("auto", help="Images per batch, or auto."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
    cuda_graphs: bool = typer.Option(True, "--cuda-graphs/--no-cuda-graphs", help="Capture each step as a CUDA graph."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Memory layout of the UNet (default: on; measured faster on CUDA and CPU)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the UNet (pays off only on long runs)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for PyTorch."),
    fit: str = typer.Option("crop", help="crop (around the hole), resize (whole image) or pad (small images)."),
    context: float = typer.Option(0.5, help="Context around the hole for --fit crop, as a fraction of its box."),
    paste: bool = typer.Option(True, "--paste/--no-paste", help="Paste the known pixels back exactly (--no-paste: raw sample, as the paper's code)."),
    overwrite: bool = typer.Option(False, help="Redo images whose outputs exist."),
    save_mask: bool = typer.Option(False, help="Write the mask used beside each output (<stem>_mask.png)."),
    allow_empty: bool = typer.Option(False, help="Warn instead of failing on masks with no hole or no known pixel."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders of input folders."),
    shard: Optional[str] = typer.Option(None, help="Process part I of N of the sorted inputs (I/N, I from 0). Under torchrun: automatic."),
    manifest: Optional[str] = typer.Option(None, help="Append one JSON line per image (input, mask, seed, output, status, seconds); '{rank}' is filled in under torchrun."),
    class_label: Optional[str] = typer.Option(None, "--class", help="Class-conditional models: an ImageNet class index or name, or random (per image, from the seed; the default)."),
    classifier: Optional[str] = typer.Option(None, help="Noisy-image classifier checkpoint for guidance (default: the model card's)."),
    classifier_scale: Optional[float] = typer.Option(None, help="Classifier guidance scale (paper: 1.0; 0 = no guidance)."),
    frames: int = typer.Option(0, help="Save N intermediate frames per image (x_t and predicted x0) under OUT/frames/<stem>/."),
    animate: Optional[str] = typer.Option(None, help="gif or mp4: one animation per image (24 frames unless --frames)."),
    concat: bool = typer.Option(False, help="Also write <stem>_concat.png: input with the hole, mask, output."),
    sheet: bool = typer.Option(False, help="Write OUT/sheet.png, a contact sheet of this run's results."),
    json_lines: bool = typer.Option(False, "--json", help="Print one JSON line per image on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Inpaint images with RePaint."""
    rank = dist.from_env()
    if rank.world > 1:
        if shard:
            die("--shard and torchrun together: torchrun already splits the inputs by rank")
        shard = rank.shard
        device = dist.init(rank, device)
        quiet = quiet or rank.rank != 0
    manifest = str(dist.manifest_path(manifest, rank)) if manifest else None
    opts = InpaintOptions(
        mask=mask, mask_convention=mask_convention, out_dir=out, model=model, config=str(config) if config else None,
        preset=preset, t_T=t_T, jump_length=jump_length, jump_n_sample=jump_n_sample, n_sample=n_sample, seed=seed,
        batch_size=batch_size if batch_size == "auto" else _int_option(batch_size, "--batch-size"),
        fit=fit, context=context, paste=paste, overwrite=overwrite, save_mask=save_mask, allow_empty=allow_empty,
        recursive=recursive, shard=shard, manifest=manifest, class_label=class_label, classifier=classifier,
        classifier_scale=classifier_scale,
        engine=EngineOptions(device=device, precision=precision, cuda_graphs=cuda_graphs,
                             channels_last=channels_last, compile=compile_model, threads=threads),
    )
    try:
        opts.extras = hooks_from_options(out, frames=frames, animate=animate, concat=concat)
    except ValueError as e:
        die(str(e))
    if not (context >= 0 and context < float("inf")):
        die(f"--context {context}: must be a finite number >= 0 (a fraction of the hole's box)")
    if threads is not None and threads < 1:
        die(f"--threads {threads}: must be at least 1")
    if precision not in PRECISIONS:
        die(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if mask_convention not in ("keep", "hole"):
        die(f"--mask-convention {mask_convention}: use keep (white = keep) or hole (white = hole)")
    if fit not in ("crop", "resize", "pad"):
        die(f"--fit {fit}: use crop, resize or pad")
    reporter = RichReporter(json_lines, quiet)
    stop = StopFlag()
    _install_sigint(stop)
    try:
        with warnings.catch_warnings():
            # our own fallbacks (precision, compile) are shown as one-line warnings; library chatter is not
            warnings.simplefilter("ignore")
            warnings.filterwarnings("always", module=r"repaint_cli\.")
            warnings.showwarning = lambda message, *a, **k: reporter.log(str(message), "warning")
            summary = inpaint(inputs, opts, reporter, stop=stop)
    except RunError as e:
        reporter.stop()
        die(str(e))
    except KeyboardInterrupt:
        reporter.stop()
        err.print("interrupted; rerun the same command to finish the rest (done images are skipped)")
        raise typer.Exit(130)
    reporter.stop()
    parts = dist.gather((summary.done, summary.failed, summary.skipped, summary.interrupted, summary.seconds), rank)
    dist.finish(rank)
    done, failed, skipped = (sum(p[i] for p in parts) for i in range(3))
    interrupted = any(p[3] for p in parts)
    if rank.rank == 0:
        ranks = f" over {rank.world} ranks" if rank.world > 1 else ""
        err.print(f"done {done}, failed {failed}, skipped {skipped}{ranks} in {max(p[4] for p in parts):.1f} s -> {out}")
    if sheet and rank.rank == 0 and (done or skipped):
        err.print(f"contact sheet: {sheet_for_dir(out)}")
    if interrupted:
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


def _int_option(value: str, name: str) -> int:
    try:
        v = int(value)
    except ValueError:
        die(f"{name} {value}: expected a whole number or auto")
    if v < 1:
        die(f"{name} {value}: must be at least 1")
    return v


@app.command("schedule")
def schedule_cmd(
    t_T: Optional[int] = typer.Option(None, "--t-T", help="Respaced steps."),
    jump_length: Optional[int] = typer.Option(None, help="Steps per jump back."),
    jump_n_sample: Optional[int] = typer.Option(None, help="Times each jump is resampled."),
    n_sample: Optional[int] = typer.Option(None, help="Reference's n_sample (default 1)."),
    start_resampling: Optional[int] = typer.Option(None, help="Resample only below this t."),
    preset: Optional[str] = typer.Option(None, help=f"Start from a preset: {', '.join(PRESETS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print the full list of times as JSON."),
):
    """Print the jump schedule's summary (UNet calls, undo steps), or the full list with --json."""
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


@models_app.command("list")
def models_list(verify: bool = typer.Option(False, help="Hash present checkpoints and compare with their cards.")):
    """Known models and whether their checkpoints are present."""
    for card in list_cards():
        path = card.find_file()
        status = f"present ({path})" if path else f"missing: put {card.file} in weights/"
        if path and verify:
            digest = sha256_file(path)
            status += (" sha256 ok" if card.sha256 == digest else
                       f" sha256 {digest}" + (" MISMATCH" if card.sha256 else ""))
        print(f"{card.name}\t{card.hparams.get('image_size')}px\t{status}\t{card.description}")


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="A folder of images (any size; centre-cropped) or a prepared .npz (key 'train')."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: state.pt (resumable), best_ema.safetensors, sample grids."),
    size: int = typer.Option(32, help="Training resolution."),
    steps: int = typer.Option(100_000, help="Total optimiser steps (a rerun resumes up to this)."),
    batch_size: int = typer.Option(64, help="Images per step."),
    lr: float = typer.Option(3e-4, help="Learning rate (AdamW, linear warm-up)."),
    threads: int = typer.Option(1, help="CPU threads (one leaves a core free; more than the cores is much slower)."),
    channels: int = typer.Option(32, help="UNet base channels (num_channels)."),
    channel_mult: str = typer.Option("1,2,2", help="UNet channel multipliers per level."),
    sample_every: int = typer.Option(1000, help="Write a grid of unconditional samples every N steps."),
    export_to: Optional[Path] = typer.Option(None, "--export", help="After training, copy the best EMA weights here (+ a sidecar YAML)."),
):
    """Train an unconditional DDPM (our guided-diffusion UNet, Improved DDPM's hybrid loss, EMA)."""
    from .train import TrainConfig, export, train

    cfg = TrainConfig(size=size, steps=steps, batch_size=batch_size, lr=lr, threads=threads,
                      sample_every=sample_every)
    cfg.model.update(num_channels=channels, channel_mult=channel_mult)
    if not data.exists():
        die(f"{data}: not found; give a folder of images or a prepared .npz")
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
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


@app.command("merge-manifests")
def merge_manifests_cmd(
    manifests: List[Path] = typer.Argument(..., help="Manifest files (JSON lines) from shards or ranks."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the merged manifest here (default: stdout)."),
):
    """Join shard manifests: one record per input, the best status winning (done > skipped > failed)."""
    missing = [str(m) for m in manifests if not m.is_file()]
    if missing:
        die(f"{missing[0]}: manifest not found")
    try:
        records = dist.merge_manifests(manifests)
    except ValueError as e:
        die(str(e))
    text = "".join(json.dumps(r) + "\n" for r in records)
    if out:
        from .imageio import write_bytes_atomic
        write_bytes_atomic(out, text.encode())
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
