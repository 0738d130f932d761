"""``repaint inpaint INPUTS``: fill the masked regions of images, in batches.

Wired into the main app with ``register(app)``. Option values are checked (``constraints.INPAINT``) and the
inputs looked for before PyTorch is imported, so a typo answers at once; each output's path (or its JSON line)
goes to stdout as it is written, progress and the summary line to stderr.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..choices import MASK_KINDS
from ..core.schedule import PRESETS
from . import params as shared
from .fetch import fetch_before_run
from .output import die, err, error_line, rich_reporter
from .params import INPUTS, MASKS, MODEL, OUTPUTS, SAMPLING, SPEED, PlainCommand

INPAINT_EXAMPLES = """[bold]Examples[/bold]

Masks from a folder, paired by file stem (cat.jpg takes cat.png or cat_mask001.png):
  [cyan]repaint inpaint photos/ --mask masks/ --out filled/[/cyan]

Generated masks over a quoted glob, with before/after strips:
  [cyan]repaint inpaint 'shots/*.jpg' --mask thick --preset fast --concat[/cyan]

Paths on stdin, one LaMa-style mask (white = hole) for all, JSON lines out:
  [cyan]ls *.png | repaint inpaint - --mask hole.png --mask-convention hole --json[/cyan]
"""

# ----------------------------------------------------------------------------- the options of inpaint alone

Inputs = Annotated[List[str], typer.Argument(
    metavar="INPUTS", show_default=False, help="Image files, folders, globs or - (paths on stdin). [bold]Quote "
    "globs[/bold] ('shots/*.jpg') so that repaint, not the shell, expands them.")]
Recursive = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Look into sub-folders of input folders.", rich_help_panel=INPUTS)]
Null = Annotated[bool, typer.Option(
    "--null", "-0", help="Paths on stdin (-) are separated by NUL characters (find -print0), not by lines.",
    rich_help_panel=INPUTS)]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", metavar="I/N", help="Process part I of N of the sorted inputs (I from 0). Automatic under torchrun.",
    rich_help_panel=INPUTS)]
Mask = Annotated[str, typer.Option(
    "--mask", "-m", metavar="MASK", help="A mask file for all images, a folder or glob of masks paired by stem "
    "(quote it: --mask 'masks/*.png', else the shell expands it), a preset YAML, or a kind to generate: "
    f"{', '.join(MASK_KINDS)}.", rich_help_panel=MASKS)]
MaskConvention = Annotated[str, typer.Option(
    "--mask-convention", metavar="keep|hole", help="keep: white = keep (RePaint); hole: white = hole (LaMa, IOPaint).",
    rich_help_panel=MASKS)]
AllowEmpty = Annotated[bool, typer.Option(
    "--allow-empty", help="Warn instead of failing on masks with no hole or no known pixel.", rich_help_panel=MASKS)]
Model = Annotated[Optional[str], typer.Option(
    "--model", metavar="NAME|PATH", show_default="emoji32", help="Model name ('repaint models list') or checkpoint "
    "path.", rich_help_panel=MODEL)]
Fetch = Annotated[bool, typer.Option(
    "--fetch", help="Download the model's checkpoint first if it is missing (scripts; a terminal asks).",
    rich_help_panel=MODEL)]
Config = Annotated[Optional[Path], typer.Option(
    "--config", metavar="YAML", help="A RePaint conf file (model hyper-parameters, timestep_respacing, "
    "schedule_jump_params, model_path).", rich_help_panel=MODEL)]
ClassLabel = Annotated[Optional[str], typer.Option(
    "--class", metavar="CLASS", show_default="random", help="Class-conditional models: an ImageNet class index or "
    "name, or random (per image, from the seed).", rich_help_panel=MODEL)]
Classifier = Annotated[Optional[str], typer.Option(
    "--classifier", metavar="PATH", show_default="the card's", help="Noisy-image classifier checkpoint for guidance.",
    rich_help_panel=MODEL)]
ClassifierScale = Annotated[Optional[float], typer.Option(
    "--classifier-scale", metavar="S", show_default="1.0", help="Classifier guidance scale (0 = no guidance).",
    rich_help_panel=MODEL)]
Preset = Annotated[Optional[str], shared.preset(
    f"Sampling preset: {', '.join(PRESETS)} (emoji32: fast; the paper's models: paper).", "the model's")]
Method = Annotated[str, shared.method(
    "The reverse step: repaint (the paper's), ddnm (known pixels put into the predicted x0) or ddim (RePaint's "
    "blending, DDIM's step).")]
Guidance = Annotated[Optional[float], shared.guidance(
    "Reconstruction guidance scale: pulls each step's predicted image towards the known pixels (MCG); 0 = the "
    "paper's algorithm. Adds a backward pass per UNet call.", "the preset's; 0 for paper")]
GuidanceCalls = Annotated[Optional[str], typer.Option(
    "--guidance-calls", metavar="all|last", show_default="the preset's; all", help="Which UNet calls take the "
    "reconstruction guidance: all, or last (only the last call at each time of the schedule; the earlier passes of "
    "a jump skip the backward pass).", rich_help_panel=SAMPLING)]
NSample = Annotated[Optional[int], typer.Option("--n-sample", hidden=True)]
Seed = Annotated[int, shared.seed("Run seed; an image's noise comes from (seed, file stem).")]
Fit = Annotated[str, typer.Option(
    "--fit", metavar="crop|resize|pad", help="crop: a square around the hole; resize: the whole image; pad: small "
    "images.", rich_help_panel=SAMPLING)]
Context = Annotated[float, typer.Option(
    "--context", metavar="F", help="Context around the hole for --fit crop, as a fraction of its box.",
    rich_help_panel=SAMPLING)]
Paste = Annotated[bool, typer.Option(
    "--paste/--no-paste", help="Paste the known pixels back exactly (--no-paste: the raw sample, as the paper's "
    "code).", rich_help_panel=SAMPLING)]
Out = Annotated[Path, shared.out("DIR", "Output folder; writes DIR/<stem>.png.")]
Overwrite = Annotated[bool, shared.overwrite("Redo images whose outputs exist (a rerun skips them otherwise).")]
SaveMask = Annotated[bool, typer.Option(
    "--save-mask", help="Write the mask used beside each output (<stem>_mask.png).", rich_help_panel=OUTPUTS)]
Concat = Annotated[bool, typer.Option(
    "--concat", help="Also write <stem>_concat.png: input with the hole, mask, output.", rich_help_panel=OUTPUTS)]
Frames = Annotated[int, typer.Option(
    "--frames", metavar="N", help="Save N frames per image (x_t and predicted x0) under DIR/frames/<stem>/.",
    rich_help_panel=OUTPUTS)]
Animate = Annotated[Optional[str], typer.Option(
    "--animate", metavar="gif|mp4", help="One animation per image (24 frames unless --frames).",
    rich_help_panel=OUTPUTS)]
Sheet = Annotated[bool, typer.Option(
    "--sheet", help="Write DIR/sheet.png, a contact sheet of the results.", rich_help_panel=OUTPUTS)]
Manifest = Annotated[Optional[str], typer.Option(
    "--manifest", metavar="FILE", help="Append a JSON line per image; '{rank}' is filled in under torchrun.",
    rich_help_panel=OUTPUTS)]
JsonLines = Annotated[bool, shared.json_flag("Print one JSON line per image on stdout (else its output path).")]
Quiet = Annotated[bool, shared.quiet("No progress bar.")]
BatchSize = Annotated[str, typer.Option(
    "--batch-size", metavar="N|auto", help="Images per batch; auto sizes it from memory and resolution.",
    rich_help_panel=SPEED)]
Device = Annotated[str, typer.Option(
    "--device", metavar="DEV", help="auto (CUDA or ROCm, else Apple MPS, else the CPU), cpu, cuda, cuda:N or mps.",
    rich_help_panel=SPEED)]
Precision = Annotated[str, typer.Option(
    "--precision", metavar="P", help="auto (fp16 on CUDA; fp32 on MPS and the CPU), fp32, fp16 (CUDA, MPS) or bf16 "
    "(CUDA; CPUs with bf16 instructions).", rich_help_panel=SPEED)]
CudaGraphs = Annotated[bool, typer.Option(
    "--cuda-graphs/--no-cuda-graphs", help="Capture each step as a CUDA graph.", rich_help_panel=SPEED)]
ChannelsLast = Annotated[Optional[bool], typer.Option(
    "--channels-last/--no-channels-last", show_default="CPU: on, CUDA: off", help="Memory layout of the UNet.",
    rich_help_panel=SPEED)]
Compile = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the UNet (pays off only on long runs).", rich_help_panel=SPEED)]
Threads = Annotated[Optional[int], shared.threads(
    "CPU threads for PyTorch. Default: the cores free when the run starts (usable cores less those busy over "
    "0.2 s). On a shared machine, set 1 or the cores you own; results do not change.", SPEED)]


def register(app: typer.Typer) -> None:
    """Add the ``inpaint`` command to ``app``."""
    app.command("inpaint", cls=PlainCommand, epilog=INPAINT_EXAMPLES)(inpaint_cmd)


def inpaint_cmd(
    ctx: typer.Context, inputs: Inputs, recursive: Recursive = False, null: Null = False, shard: Shard = None,
    mask: Mask = "thick", mask_convention: MaskConvention = "keep", allow_empty: AllowEmpty = False,
    model: Model = None, fetch: Fetch = False, config: Config = None, class_label: ClassLabel = None,
    classifier: Classifier = None, classifier_scale: ClassifierScale = None,
    preset: Preset = None, method: Method = "repaint", eta: Annotated[float, shared.eta()] = 0.0,
    guidance: Guidance = None, guidance_calls: GuidanceCalls = None, t_T: shared.TT = None,
    jump_length: shared.JumpLength = None,
    jump_n_sample: shared.JumpNSample = None, n_sample: NSample = None, seed: Seed = 0, fit: Fit = "crop",
    context: Context = 0.5, paste: Paste = True,
    out: Out = Path("out"), overwrite: Overwrite = False, save_mask: SaveMask = False, concat: Concat = False,
    frames: Frames = 0, animate: Animate = None, sheet: Sheet = False, manifest: Manifest = None,
    json_lines: JsonLines = False, quiet: Quiet = False,
    batch_size: BatchSize = "auto", device: Device = "auto", precision: Precision = "auto",
    cuda_graphs: CudaGraphs = True, channels_last: ChannelsLast = None, compile_model: Compile = False,
    threads: Threads = None,
):
    """Inpaint images with RePaint: each output is DIR/<stem>.png, its path printed on stdout."""
    _check_values(ctx.params)  # before anything heavy is imported: a typo answers at once
    _check_inputs_exist(inputs)
    from ..constraints import OptionError
    from ..images.frames import hooks_from_options
    from ..images.options import InpaintOptions, RunError

    try:
        opts = InpaintOptions(
            mask=mask, mask_convention=mask_convention, recursive=recursive, shard=shard, fit=fit, context=context,
            allow_empty=allow_empty, null=null,
            model=model, config=str(config) if config else None, preset=preset, method=method, eta=eta, t_T=t_T,
            jump_length=jump_length, jump_n_sample=jump_n_sample, n_sample=n_sample, seed=seed,
            class_label=class_label, classifier=classifier, classifier_scale=classifier_scale, guidance=guidance,
            guidance_calls=guidance_calls, device=device, precision=precision, cuda_graphs=cuda_graphs,
            channels_last=channels_last,
            compile=compile_model, threads=threads, batch_size=batch_size if batch_size == "auto" else int(batch_size),
            out_dir=out, paste=paste, overwrite=overwrite, save_mask=save_mask, manifest=manifest, sheet=sheet,
            extras=hooks_from_options(out, frames=frames, animate=animate, concat=concat,
                                      mask_convention=mask_convention))
    except (RunError, OptionError, ValueError) as e:  # a value the parts refuse (each checked once, constraints.py)
        die(str(e))
    mp4 = bool(animate) and animate.lower() == "mp4"
    raise typer.Exit(_inpaint_run(inputs, opts, fetch=fetch, quiet=quiet, json_lines=json_lines, mp4=mp4))


def _check_values(given: dict) -> None:
    """Exit 2 with one line for an option value that cannot work (the declared table, ``constraints.INPAINT``,
    the same checks the Python API's option classes make)."""
    from ..constraints import INPAINT, OptionError, check_eta, check_values

    try:
        check_values(INPAINT, given)
        check_eta(given["eta"], given["method"])
    except OptionError as e:
        die(str(e))


def _check_inputs_exist(inputs: List[str]) -> None:
    """A missing input or a glob matching nothing: exit 2 before PyTorch is imported (seconds under load)."""
    from ..images.jobs import missing_inputs

    problems = missing_inputs(inputs)
    for message in problems[1:]:
        error_line(message)
    if problems:
        die(problems[0] + (f" (and {len(problems) - 1} more problem(s), above)" if len(problems) > 1 else ""))


def _for_rank(opts, rank):
    """Under torchrun, this rank's part of the inputs, its device and its manifest; the options as given
    otherwise. Called after the model is fetched: the other ranks wait for rank 0 in ``torchrun.init``."""
    from ..images.options import InpaintOptions
    from ..runtime import torchrun

    shard, device = opts.read.shard, opts.engine.device
    if rank.world > 1:
        if shard:
            die("--shard and torchrun together: torchrun already splits the inputs by rank")
        shard, device = rank.shard, torchrun.init(rank, device)
    manifest = str(torchrun.manifest_path(opts.write.manifest, rank)) if opts.write.manifest else None
    return InpaintOptions(opts.read, opts.sample, opts.engine, opts.write, shard=shard, device=device,
                          manifest=manifest)


def _inpaint_run(inputs: List[str], opts, fetch: bool, quiet: bool, json_lines: bool, mp4: bool) -> int:
    """Run ``inpaint()`` with a progress bar and the summary line; the exit code (0, 1 failed, 130 stopped)."""
    from ..images.inpaint import inpaint
    from ..images.options import RunError, StopFlag
    from ..runtime import torchrun

    rank = torchrun.from_env()
    quiet = quiet or rank.rank != 0
    sample = opts.sample
    if rank.rank == 0:  # a known model whose checkpoint is missing: --fetch, a yes on a terminal, or a clear no
        fetch_before_run(sample.model, fetch, classifier=sample.classifier is None and sample.classifier_scale != 0)
    opts = _for_rank(opts, rank)
    if mp4 and not quiet:
        _say_mp4_codec()
    reporter = rich_reporter(json_lines, quiet)
    stop = StopFlag()
    _install_sigint(stop)
    try:
        summary = _run_showing_warnings(lambda: inpaint(inputs, opts, reporter, stop=stop), reporter)
    except RunError as e:
        reporter.stop()
        die(str(e))
    except KeyboardInterrupt:
        reporter.stop()
        err.print("interrupted; rerun the same command to finish the rest (done images are skipped)")
        return 130
    reporter.stop()
    parts = torchrun.gather((summary.done, summary.failed, summary.skipped, summary.interrupted, summary.seconds), rank)
    torchrun.finish(rank)
    return _inpaint_summary(parts, rank, opts.write.out_dir, summary.outputs if opts.write.sheet else None)


def _install_sigint(stop):
    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        err.print("stopping after the current batch (Ctrl-C again to stop at once)")
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not in the main thread (tests)
        pass


def _say_mp4_codec() -> None:
    from ..images.frames import mp4_codec

    codec = mp4_codec()
    err.print("mp4 animations: " + (f"{codec[1]} ({codec[0]})" if codec else "no MP4 encoder here, GIFs instead")
              + ("" if codec is None or codec[0] == "avc1" else "; this OpenCV build has no H.264 encoder"))


def _inpaint_summary(parts: list, rank, out: Path, sheet_of: Optional[list]) -> int:
    """The summary line over all ranks (rank 0 prints it), the contact sheet of the outputs ``sheet_of`` (every
    rank's: the run's write plan lists them all) that exist; the exit code."""
    from ..images.plan import SHEET_NAME
    from ..images.sheet import make_sheet

    done, failed, skipped = (sum(p[i] for p in parts) for i in range(3))
    if rank.rank == 0:
        ranks = f" over {rank.world} ranks" if rank.world > 1 else ""
        seconds = max(p[4] for p in parts)
        err.print(f"done {done}, failed {failed}, skipped {skipped}{ranks} in {seconds:.1f} s -> {out}")
    made = [p for p in sheet_of or [] if Path(p).is_file()]
    if made and rank.rank == 0:  # where the plan was checked: OUT/sheet.png is no image's output
        err.print(f"contact sheet: {make_sheet(made, out / SHEET_NAME)}")
    return 130 if any(p[3] for p in parts) else 1 if failed else 0


def _run_showing_warnings(run, reporter):
    """Our own fallbacks (precision, compile, CUDA graphs) become one-line warnings; other libraries'
    chatter is not shown. PyTorch's warnings during a CUDA graph capture are recorded by the engine
    itself (runtime.cuda_graphs._cuda_capture), so this filter cannot hide them."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.filterwarnings("always", module=r"repaint_cli\.")
        warnings.showwarning = lambda message, *a, **k: reporter.log(str(message), "warning")
        return run()
