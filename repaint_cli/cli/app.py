"""The ``repaint`` command: thin Typer commands over importable functions.

Logs and progress go to stderr; results (output paths, JSON lines) go to
stdout, so commands compose in shell pipelines.

Only Typer and Rich are imported here at start-up: PyTorch, OpenCV and the
rest load inside the commands that need them, so ``--help``, ``masks list``,
``schedule`` and usage errors answer at once.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import typer

from .. import __version__
from .output import die, err, error_line, print_line, rich_reporter
from .sheet import register as register_sheet
from .impute import register as register_impute
from .masks import masks_app
from ..choices import MASK_KINDS
from ..core.schedule import PRESETS

HELP = {"help_option_names": ["-h", "--help"]}

APP_HELP = ("Fill masked regions of images (repaint inpaint) and missing cells of tables (repaint impute) "
            "with RePaint, in batches.")
app = typer.Typer(help=APP_HELP, no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, context_settings=HELP)
app.add_typer(masks_app, name="masks", help="Generate, list and preview masks.")
models_app = typer.Typer(help="Known models and their checkpoints.", no_args_is_help=True, context_settings=HELP)
app.add_typer(models_app, name="models")

def version_text() -> str:
    """repaint-cli's version and the PyTorch (and CUDA) it runs on."""
    import torch

    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        cuda = f"CUDA {torch.version.cuda}, {gpus} GPU{'s' if gpus != 1 else ''} ({torch.cuda.get_device_name(0)})"
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


# Help panels of 'repaint inpaint', in the order a user thinks of them.
P_IN, P_MASK, P_MODEL, P_SAMPLE, P_OUT, P_SPEED = "Inputs", "Masks", "Model", "Sampling", "Outputs", "Speed"
FLAG = dict(metavar="")  # a flag takes no value: show none (Typer would print <bool>)


def _flags_show_no_type() -> None:
    """Typer's help lists every flag with a '<bool>' type, as if it took a value (--json true
    then fails as a missing input file); its own --help flag too, which takes no metavar.
    Show flags without one. Guarded: a Typer without this method keeps its own rendering."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_repaint_flags", False):
        return

    def display_type_rich(self, ctx):
        return "" if getattr(self, "is_flag", False) and self.metavar is None else original(self, ctx)

    display_type_rich._repaint_flags = True
    TyperOption.display_type_rich = display_type_rich


_flags_show_no_type()

# Typer's own type words, shown where an option has no metavar of ours, as ordinary CLI metavars.
PLAIN_METAVARS = {"<int>": "N", "<float>": "X", "<str>": "TEXT", "<text>": "TEXT", "<path>": "PATH",
                  "<int range>": "N", "<float range>": "X"}


def _help_reads_plainly() -> None:
    """Help in ordinary CLI words: 'sheet [OPTIONS] OUTDIR' (not '{outdir}'), arguments without a type
    beside their name ('INPUTS <list[str]>'), 'N' for '<int>', defaults '[default: thick]' rather than
    '[default: (thick)]'. Guarded per method: a Typer without one keeps its own rendering there."""
    from typer.core import TyperArgument, TyperOption

    if getattr(TyperArgument, "_repaint_plain", False):
        return
    TyperArgument._repaint_plain = True
    if hasattr(TyperArgument, "display_type_rich"):
        TyperArgument.display_type_rich = lambda self, ctx: ""  # the name column already names it
    usage = getattr(TyperArgument, "_usage_display_name", None)
    if usage is not None:
        def usage_name(self):
            name = usage(self)
            return name.replace("{", "", 1).replace("}", "", 1) if self.required else name
        TyperArgument._usage_display_name = usage_name
    option_type = getattr(TyperOption, "display_type_rich", None)
    if option_type is not None:
        def display_type_rich(self, ctx):
            shown = option_type(self, ctx)
            return PLAIN_METAVARS.get(shown, shown) if isinstance(shown, str) else shown
        TyperOption.display_type_rich = display_type_rich
    for cls in (TyperArgument, TyperOption):
        default_string = getattr(cls, "_get_default_string", None)
        if default_string is not None:
            def plain_default(self, *a, _original=default_string, **k):
                return self.show_default if isinstance(self.show_default, str) else _original(self, *a, **k)
            cls._get_default_string = plain_default


_help_reads_plainly()

INPAINT_EXAMPLES = """[bold]Examples[/bold]

Masks from a folder, paired by file stem (cat.jpg takes cat.png or cat_mask001.png):
  [cyan]repaint inpaint photos/ --mask masks/ --out filled/[/cyan]

Generated masks over a quoted glob, with before/after strips:
  [cyan]repaint inpaint 'shots/*.jpg' --mask thick --preset fast --concat[/cyan]

Paths on stdin, one LaMa-style mask (white = hole) for all, JSON lines out:
  [cyan]ls *.png | repaint inpaint - --mask hole.png --mask-convention hole --json[/cyan]
"""


@app.command("inpaint", epilog=INPAINT_EXAMPLES)
def inpaint_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUTS", show_default=False, help="Image files, folders, globs or - (paths on stdin). [bold]Quote globs[/bold] ('shots/*.jpg') so that repaint, not the shell, expands them."),
    recursive: bool = typer.Option(False, "--recursive", "-r", **FLAG, help="Look into sub-folders of input folders.", rich_help_panel=P_IN),
    null: bool = typer.Option(False, "--null", "-0", **FLAG, help="Paths on stdin (-) are separated by NUL characters (find -print0), not by lines.", rich_help_panel=P_IN),
    shard: Optional[str] = typer.Option(None, metavar="I/N", help="Process part I of N of the sorted inputs (I from 0). Automatic under torchrun.", rich_help_panel=P_IN),
    mask: str = typer.Option("thick", "--mask", "-m", metavar="MASK", help=f"A mask file for all images, a folder or glob of masks paired by stem (quote it: --mask 'masks/*.png', else the shell expands it), a preset YAML, or a kind to generate: {', '.join(MASK_KINDS)}.", rich_help_panel=P_MASK),
    mask_convention: str = typer.Option("keep", metavar="keep|hole", help="keep: white = keep (RePaint); hole: white = hole (LaMa, IOPaint).", rich_help_panel=P_MASK),
    allow_empty: bool = typer.Option(False, "--allow-empty", **FLAG, help="Warn instead of failing on masks with no hole or no known pixel.", rich_help_panel=P_MASK),
    model: Optional[str] = typer.Option(None, metavar="NAME|PATH", show_default="emoji32", help="Model name ('repaint models list') or checkpoint path.", rich_help_panel=P_MODEL),
    config: Optional[Path] = typer.Option(None, metavar="YAML", help="A RePaint conf file (model hyper-parameters, timestep_respacing, schedule_jump_params, model_path).", rich_help_panel=P_MODEL),
    class_label: Optional[str] = typer.Option(None, "--class", metavar="CLASS", show_default="random", help="Class-conditional models: an ImageNet class index or name, or random (per image, from the seed).", rich_help_panel=P_MODEL),
    classifier: Optional[str] = typer.Option(None, metavar="PATH", show_default="the card's", help="Noisy-image classifier checkpoint for guidance.", rich_help_panel=P_MODEL),
    classifier_scale: Optional[float] = typer.Option(None, metavar="S", show_default="1.0", help="Classifier guidance scale (0 = no guidance).", rich_help_panel=P_MODEL),
    preset: Optional[str] = typer.Option(None, metavar="NAME", show_default="the model's", help=f"Sampling preset: {', '.join(PRESETS)} (emoji32: fast; the paper's models: paper).", rich_help_panel=P_SAMPLE),
    method: str = typer.Option("repaint", metavar="M", help="The reverse step: repaint (the paper's), ddnm (known pixels put into the predicted x0) or ddim (RePaint's blending, DDIM's step).", rich_help_panel=P_SAMPLE),
    eta: float = typer.Option(0.0, metavar="F", help="--method ddim: noise scale, 0 (deterministic between resamplings) to 1.", rich_help_panel=P_SAMPLE),
    guidance: Optional[float] = typer.Option(None, metavar="S", show_default="the preset's; 0 for paper", help="Reconstruction guidance scale: pulls each step's predicted image towards the known pixels (MCG); 0 = the paper's algorithm. Adds a backward pass per UNet call.", rich_help_panel=P_SAMPLE),
    t_T: Optional[int] = typer.Option(None, "--t-T", metavar="N", help="Respaced steps (t_T), overriding the preset.", rich_help_panel=P_SAMPLE),
    jump_length: Optional[int] = typer.Option(None, metavar="N", help="Steps per jump back.", rich_help_panel=P_SAMPLE),
    jump_n_sample: Optional[int] = typer.Option(None, metavar="N", help="Times each jump is resampled (1 = no resampling).", rich_help_panel=P_SAMPLE),
    n_sample: Optional[int] = typer.Option(None, hidden=True),
    seed: int = typer.Option(0, metavar="N", help="Run seed; an image's noise comes from (seed, file stem).", rich_help_panel=P_SAMPLE),
    fit: str = typer.Option("crop", metavar="crop|resize|pad", help="crop: a square around the hole; resize: the whole image; pad: small images.", rich_help_panel=P_SAMPLE),
    context: float = typer.Option(0.5, metavar="F", help="Context around the hole for --fit crop, as a fraction of its box.", rich_help_panel=P_SAMPLE),
    paste: bool = typer.Option(True, "--paste/--no-paste", **FLAG, help="Paste the known pixels back exactly (--no-paste: the raw sample, as the paper's code).", rich_help_panel=P_SAMPLE),
    out: Path = typer.Option(Path("out"), "--out", "-o", metavar="DIR", help="Output folder; writes DIR/<stem>.png.", rich_help_panel=P_OUT),
    overwrite: bool = typer.Option(False, "--overwrite", **FLAG, help="Redo images whose outputs exist (a rerun skips them otherwise).", rich_help_panel=P_OUT),
    save_mask: bool = typer.Option(False, "--save-mask", **FLAG, help="Write the mask used beside each output (<stem>_mask.png).", rich_help_panel=P_OUT),
    concat: bool = typer.Option(False, "--concat", **FLAG, help="Also write <stem>_concat.png: input with the hole, mask, output.", rich_help_panel=P_OUT),
    frames: int = typer.Option(0, metavar="N", help="Save N frames per image (x_t and predicted x0) under DIR/frames/<stem>/.", rich_help_panel=P_OUT),
    animate: Optional[str] = typer.Option(None, metavar="gif|mp4", help="One animation per image (24 frames unless --frames).", rich_help_panel=P_OUT),
    sheet: bool = typer.Option(False, "--sheet", **FLAG, help="Write DIR/sheet.png, a contact sheet of the results.", rich_help_panel=P_OUT),
    manifest: Optional[str] = typer.Option(None, metavar="FILE", help="Append a JSON line per image; '{rank}' is filled in under torchrun.", rich_help_panel=P_OUT),
    json_lines: bool = typer.Option(False, "--json", **FLAG, help="Print one JSON line per image on stdout (else its output path).", rich_help_panel=P_OUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", **FLAG, help="No progress bar.", rich_help_panel=P_OUT),
    batch_size: str = typer.Option("auto", metavar="N|auto", help="Images per batch; auto sizes it from memory and resolution.", rich_help_panel=P_SPEED),
    device: str = typer.Option("auto", metavar="DEV", help="auto, cpu, cuda or cuda:N.", rich_help_panel=P_SPEED),
    precision: str = typer.Option("auto", metavar="P", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.", rich_help_panel=P_SPEED),
    cuda_graphs: bool = typer.Option(True, "--cuda-graphs/--no-cuda-graphs", **FLAG, help="Capture each step as a CUDA graph.", rich_help_panel=P_SPEED),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", **FLAG, show_default="CPU: on, CUDA: off", help="Memory layout of the UNet.", rich_help_panel=P_SPEED),
    compile_model: bool = typer.Option(False, "--compile", **FLAG, help="torch.compile the UNet (pays off only on long runs).", rich_help_panel=P_SPEED),
    threads: Optional[int] = typer.Option(None, metavar="N", show_default="the free cores", help="CPU threads for PyTorch. Default: the free cores (usable cores less the 1-minute load average). On a shared machine, set 1 or the cores you own; results do not change.", rich_help_panel=P_SPEED),
):
    """Inpaint images with RePaint: each output is DIR/<stem>.png, its path printed on stdout."""
    args = SimpleNamespace(**locals())  # every option by name, for the helpers below
    _check_inpaint_values(args)  # before anything heavy is imported: a typo answers at once
    _check_inputs_exist(inputs)
    raise typer.Exit(_inpaint_run(args))


def _check_inpaint_values(a) -> None:
    """Exit 2 with one line for an option value that cannot work (the declared table, ``constraints.INPAINT``,
    the same checks the Python API's option classes make); sets ``a.batch_size`` to its int or 'auto'."""
    from ..constraints import INPAINT, OptionError, check_eta, check_values

    try:
        check_values(INPAINT, vars(a))
        check_eta(a.eta, a.method)
    except OptionError as e:
        die(str(e))
    a.batch_size = a.batch_size if a.batch_size == "auto" else int(a.batch_size)


def _inpaint_options(a, rank):
    """The run's InpaintOptions from the command's options (and, under torchrun, this rank's shard and device)."""
    from ..constraints import OptionError
    from ..images.frames import hooks_from_options
    from ..images.options import RunError
    from ..runtime import torchrun

    shard, device = a.shard, a.device
    if rank.world > 1:
        if shard:
            die("--shard and torchrun together: torchrun already splits the inputs by rank")
        shard, device = rank.shard, torchrun.init(rank, device)
    try:
        extras = hooks_from_options(a.out, frames=a.frames, animate=a.animate, concat=a.concat)
    except ValueError as e:
        die(str(e))
    manifest = str(torchrun.manifest_path(a.manifest, rank)) if a.manifest else None
    try:
        return _options_from(a, shard, device, extras, manifest)
    except (RunError, OptionError) as e:  # a value the parts refuse (each checked once, constraints.py)
        die(str(e))


def _options_from(a, shard, device, extras, manifest):
    from ..images.options import InpaintOptions, ReadOptions, SampleOptions, WriteOptions
    from ..runtime.device import EngineOptions

    return InpaintOptions(
        read=ReadOptions(mask=a.mask, mask_convention=a.mask_convention, recursive=a.recursive, shard=shard,
                         fit=a.fit, context=a.context, allow_empty=a.allow_empty, null=a.null),
        sample=SampleOptions(model=a.model, config=str(a.config) if a.config else None, preset=a.preset,
                             method=a.method, eta=a.eta, t_T=a.t_T, jump_length=a.jump_length,
                             jump_n_sample=a.jump_n_sample, n_sample=a.n_sample, seed=a.seed,
                             class_label=a.class_label, classifier=a.classifier,
                             classifier_scale=a.classifier_scale, guidance=a.guidance),
        engine=EngineOptions(device=device, precision=a.precision, cuda_graphs=a.cuda_graphs,
                             channels_last=a.channels_last, compile=a.compile_model, threads=a.threads,
                             batch_size=a.batch_size),
        write=WriteOptions(out_dir=a.out, paste=a.paste, overwrite=a.overwrite, save_mask=a.save_mask,
                           manifest=manifest, extras=extras))


def _inpaint_run(a) -> int:
    """Run ``inpaint()`` with a progress bar and the summary line; the exit code (0, 1 failed, 130 stopped)."""
    from ..images.inpaint import inpaint
    from ..images.options import RunError, StopFlag
    from ..runtime import torchrun

    rank = torchrun.from_env()
    quiet = a.quiet or rank.rank != 0
    opts = _inpaint_options(a, rank)
    if a.animate and a.animate.lower() == "mp4" and not quiet:
        _say_mp4_codec()
    reporter = rich_reporter(a.json_lines, quiet)
    stop = StopFlag()
    _install_sigint(stop)
    try:
        summary = _run_showing_warnings(lambda: inpaint(a.inputs, opts, reporter, stop=stop), reporter)
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
    return _inpaint_summary(parts, rank, a.out, a.sheet)


def _say_mp4_codec() -> None:
    from ..images.frames import mp4_codec

    codec = mp4_codec()
    err.print("mp4 animations: " + (f"{codec[1]} ({codec[0]})" if codec else "no MP4 encoder here, GIFs instead")
              + ("" if codec is None or codec[0] == "avc1" else "; this OpenCV build has no H.264 encoder"))


def _inpaint_summary(parts: list, rank, out: Path, sheet: bool) -> int:
    """The summary line over all ranks (rank 0 prints it), the contact sheet; the exit code."""
    from ..images.sheet import sheet_for_dir

    done, failed, skipped = (sum(p[i] for p in parts) for i in range(3))
    if rank.rank == 0:
        ranks = f" over {rank.world} ranks" if rank.world > 1 else ""
        err.print(f"done {done}, failed {failed}, skipped {skipped}{ranks} in {max(p[4] for p in parts):.1f} s -> {out}")
    if sheet and rank.rank == 0 and (done or skipped):
        err.print(f"contact sheet: {sheet_for_dir(out)}")
    return 130 if any(p[3] for p in parts) else 1 if failed else 0


def _check_inputs_exist(inputs: List[str]) -> None:
    """A missing input or a glob matching nothing: exit 2 before PyTorch is imported (seconds under load)."""
    from ..images.jobs import missing_inputs

    problems = missing_inputs(inputs)
    for message in problems[1:]:
        error_line(message)
    if problems:
        die(problems[0] + (f" (and {len(problems) - 1} more problem(s), above)" if len(problems) > 1 else ""))


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


@app.command("schedule")
def schedule_cmd(
    t_T: Optional[int] = typer.Option(None, "--t-T", metavar="N", help="Respaced steps."),
    jump_length: Optional[int] = typer.Option(None, metavar="N", help="Steps per jump back."),
    jump_n_sample: Optional[int] = typer.Option(None, metavar="N", help="Times each jump is resampled."),
    n_sample: Optional[int] = typer.Option(None, metavar="N", help="Reference's n_sample (default 1)."),
    start_resampling: Optional[int] = typer.Option(None, metavar="T", help="Resample only below this t."),
    preset: Optional[str] = typer.Option(None, metavar="NAME", show_default="paper", help=f"Start from a preset: {', '.join(PRESETS)}."),
    as_json: bool = typer.Option(False, "--json", **FLAG, help="Print the full list of times as JSON."),
    list_presets: bool = typer.Option(False, "--list", **FLAG, help="Print every preset with its costs: UNet calls, forward-equivalents, time relative to paper."),
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
    from ..core.schedule import jump_schedule, preset_guidance, schedule_summary
    from ..resources import preset_quality

    measured = preset_quality()
    for name, p in PRESETS.items():
        s = schedule_summary(jump_schedule(p))
        g = preset_guidance(name)
        line = (f"{name}\tt_T {p.t_T}, jump_length {p.jump_length}, jump_n_sample {p.jump_n_sample}"
                + (f", guidance {g:g}" if g else "") + f": {s['unet_calls']} UNet calls, {s['undo_steps']} undo steps"
                + _preset_costs(name, p, g))
        m = measured.get(name)
        if name == "paper":
            line += "; the reference the others are measured against"
        elif m and m.get("schedule") == p.as_dict() and m.get("guidance", 0.0) == g:
            masks = m["masks"]
            n = min(v["images"] for v in masks.values())
            line += (f"; minus paper, paired over {n} images per mask ({m['date']}): hole PSNR "
                     + ", ".join(f"{k} {v['psnr'][0]:+.2f} ± {v['psnr'][1]:.2f} dB" for k, v in masks.items())
                     + "; SSIM " + ", ".join(f"{k} {v['ssim'][0]:+.3f}" for k, v in masks.items()))
        else:
            line += "; not measured against paper yet"
        print(line)


def _preset_costs(name: str, p, guidance: float) -> str:
    """', N forward-equivalents (...), time X of paper's (...)': the schedule's calls counted in plain forward
    passes, and the measured time per image, where it was measured for this very schedule and scale."""
    from ..core.schedule import GUIDED_CALL_COST, forward_equivalents, measured_time_vs_paper

    fe = forward_equivalents(p, guidance)
    text = f", {fe:,.0f} forward-equivalents" + (f" (a guided call counts {GUIDED_CALL_COST:g})" if guidance else "")
    measured = measured_time_vs_paper(name, p, guidance)
    if name == "paper" and measured:
        return text + ", time per image 1 (the unit)"
    if measured is None:
        return text + ", time per image vs paper not measured"
    return text + f", time per image {measured:.3f} of paper's (1/{1 / measured:.1f}, measured)"


@models_app.command("list")
def models_list(verify: bool = typer.Option(False, "--verify", **FLAG, help="Hash present checkpoints and compare with their cards.")):
    """Known models and whether their checkpoints are present (one line each on stdout)."""
    from ..files import sha256_file
    from ..models.cards import list_cards
    from ..resources import bundled_weights_dir, user_weights_dirs

    looked = [f"{'' if d.is_absolute() else './'}{d}{'' if d.is_dir() else ' (absent)'}" for d in user_weights_dirs()]
    env = "" if os.environ.get("REPAINT_WEIGHTS") else "$REPAINT_WEIGHTS (unset), "
    err.print(f"looked for checkpoints in {env}{', '.join(looked)}, then the files shipped with repaint "
              f"({bundled_weights_dir()})", markup=False, highlight=False, soft_wrap=True)
    import warnings

    with warnings.catch_warnings(record=True) as skipped:  # cards skipped: one 'warning:' line each
        warnings.simplefilter("always")
        cards = list_cards()
    for w in skipped:
        print_line(err, str(w.message), "warning")
    for card in cards:
        path = card.find_file()
        if card.format == "diffusers":
            status = (f"present ({path})" if path else
                      f"not downloaded: huggingface-cli download {card.file} (diffusers format)")
            verify_this = False
        else:
            status = f"present ({path})" if path else f"missing: put {card.file} in ~/.cache/repaint/weights/"
            verify_this = verify
        if path and verify_this:
            digest = sha256_file(path)
            status += (" sha256 ok" if card.sha256 == digest else
                       f" sha256 {digest}" + (" MISMATCH" if card.sha256 else ""))
        print(f"{card.name}\t{card.hparams.get('image_size')}px\t{status}\t{card.description}")


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="A folder of images (any size; centre-cropped) or a prepared .npz (key 'train')."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Run folder: state.pt (resumable), best_ema.safetensors, sample grids."),
    size: int = typer.Option(32, help="Training resolution."),
    steps: int = typer.Option(100_000, help="Total optimiser steps (a rerun resumes up to this)."),
    batch_size: int = typer.Option(64, help="Images per step."),
    lr: float = typer.Option(3e-4, help="Learning rate (AdamW, linear warm-up)."),
    threads: int = typer.Option(1, help="CPU threads (one leaves a core free; more than the cores is much slower)."),
    channels: int = typer.Option(32, help="UNet base channels (num_channels)."),
    channel_mult: str = typer.Option("1,2,2", help="UNet channel multipliers per level."),
    sample_every: int = typer.Option(1000, help="Write a grid of unconditional samples every N steps."),
    export_to: Optional[Path] = typer.Option(None, "--export", metavar="FILE", help="After training, copy the best EMA weights here (+ a sidecar YAML)."),
):
    """Train an unconditional DDPM (our guided-diffusion UNet, Improved DDPM's hybrid loss, EMA)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..training.train import TrainConfig, export, train

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
register_impute(app)


@app.command("merge-manifests")
def merge_manifests_cmd(
    manifests: List[Path] = typer.Argument(..., metavar="MANIFEST", help="Manifest files (JSON lines) from shards or ranks."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default="stdout", help="Write the merged manifest here."),
):
    """Join shard manifests: one record per input, the best status winning (done > skipped > failed)."""
    from ..runtime import torchrun

    missing = [str(m) for m in manifests if not m.is_file()]
    if missing:
        die(f"{missing[0]}: manifest not found")
    try:
        records = torchrun.merge_manifests(manifests)
    except ValueError as e:
        die(str(e))
    text = "".join(json.dumps(r) + "\n" for r in records)
    if out:
        from ..files import write_bytes_atomic
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
