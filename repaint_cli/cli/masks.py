"""``repaint masks ...``: generate, list and preview inpainting masks.

Wired into the main app with ``app.add_typer(masks_app, name="masks")``.
Written files' paths go to stdout, one per line, so the command composes in
pipelines; progress, summaries and errors go to stderr.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..choices import CONVENTIONS, CONVENTIONS_HINT, MASK_KINDS
from .output import die, die_unless_choice, err
from .params import HELP, PlainCommand, PlainGroup

if TYPE_CHECKING:
    import numpy as np

# numpy, OpenCV and the generators (masks.py) are imported inside the commands that draw,
# so 'repaint masks list' and usage errors answer at once.

masks_app = typer.Typer(
    help="Generate, list and preview inpainting masks (LaMa-style thick/medium/thin, RePaint's extreme masks, boxes).",
    no_args_is_help=True,
    add_completion=False,
    context_settings=HELP,
    cls=PlainGroup,
)

# Show a progress bar from this many masks on (and only on a terminal).
_PROGRESS_FROM = 200

_SEP = 2  # separator width in preview sheets (px)
_SEP_BGR = (200, 110, 0)  # separator colour (blue), distinct from any mask pixel


def _resolve_params(kind: Optional[str], preset: Optional[Path]) -> dict[str, Any]:
    """Parameters from --kind and/or --preset (no --kind: thick); errors exit 2 with one line."""
    from ..images.masks import MaskError, UnknownKindError, unknown_kind_message, load_preset

    try:
        if preset is not None:
            params = load_preset(os.fspath(preset))
            if kind is not None and kind != params["kind"]:
                if kind not in MASK_KINDS:
                    raise UnknownKindError(unknown_kind_message(kind))
                raise MaskError(f"--kind {kind} disagrees with preset {str(preset)!r} (kind {params['kind']!r})")
            return params
        kind = "thick" if kind is None else kind
        if kind not in MASK_KINDS:
            raise UnknownKindError(unknown_kind_message(kind))
        return load_preset(kind)
    except MaskError as exc:
        die(str(exc))


def _at_least(low: int, **values: Optional[int]) -> None:
    """Whole-number options with a lower bound (checked here, for the one-line error style)."""
    for name, value in values.items():
        if value is not None and value < low:
            die(f"--{name} {value}: must be at least {low}")


def _check_out_folder(out: Path, names: list[str], overwrite: bool) -> None:
    """--out must be a folder, and (without --overwrite) hold none of the masks about to be written:
    replacing masks of another size or seed would leave a mixed folder."""
    if out.exists() and not out.is_dir():
        die(f"--out {out}: is a file, not a folder; choose a folder for the masks")
    if not out.is_dir():
        return
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        die(f"{out / existing[0]}: exists ({len(existing)} mask(s) of this run are already in {out}); "
            f"pass --overwrite to replace them, --start {_next_free_index(out, names[0])} to add after "
            f"them, or another --out")


def _next_free_index(out: Path, first_name: str) -> int:
    """One past the highest index of the masks of this kind in ``out``."""
    kind = first_name.rsplit("_", 1)[0]
    indices = [int(p.stem.rsplit("_", 1)[1]) for p in out.glob(f"{kind}_*.png") if p.stem.rsplit("_", 1)[1].isdigit()]
    return max(indices, default=-1) + 1


def _check_convention(convention: str) -> str:
    return die_unless_choice(convention, CONVENTIONS, "--convention", CONVENTIONS_HINT)


def _size(size: int, height: Optional[int], width: Optional[int]) -> tuple[int, int]:
    h = size if height is None else height
    w = size if width is None else width
    if h < 1 or w < 1:
        die(f"mask size must be positive, got {w}x{h} (WxH)")
    return h, w


def _write_png_atomic(path: Path, image: np.ndarray) -> None:
    """Encode to PNG and write it atomically (repaint_cli.files)."""
    import cv2

    from ..files import write_bytes_atomic

    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - cv2 failure
        raise OSError(f"could not encode PNG for {path}")
    write_bytes_atomic(path, buf.tobytes())


def _write_png_or_die(path: Path, image: np.ndarray) -> None:
    """Write one PNG (its folder made if missing); a failure is one line and exit 1."""
    from ..files import InputError

    try:
        _write_png_atomic(path, image)
    except InputError as exc:  # an unwritable folder, named with its fix
        die(str(exc), 1)
    except OSError as exc:
        die(f"cannot write {str(path)!r}: {exc.strerror or exc}", 1)


@masks_app.command("generate", cls=PlainCommand)
def generate_cmd(
    kind: Optional[str] = typer.Option(None, "--kind", "-k", metavar="KIND", show_default="thick, or the preset's kind",
                                       help=f"Mask kind: {', '.join(MASK_KINDS)}."),
    count: Optional[int] = typer.Option(None, "--count", "-n", metavar="N", show_default="100",
                                        help="Number of masks to write (1 or more)."),
    size: Optional[int] = typer.Option(None, "--size", "-s", metavar="PX", show_default="256",
                                       help="Side of square masks (pixels)."),
    height: Optional[int] = typer.Option(None, "--height", metavar="PX", help="Mask height; overrides --size."),
    width: Optional[int] = typer.Option(None, "--width", metavar="PX", help="Mask width; overrides --size."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Run seed (0 or more); mask i depends only on kind, size, "
                             "seed, i and parameters."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Output folder (created if missing)."),
    convention: str = typer.Option("keep", "--convention", metavar="keep|hole",
                                   help="keep: white = known pixel (RePaint); hole: white = hole (LaMa/IOPaint)."),
    preset: Optional[Path] = typer.Option(None, "--preset", metavar="YAML",
                                          help="YAML preset (kind + parameters), e.g. a copy of masks/thick.yaml."),
    start: int = typer.Option(0, "--start", metavar="N", help="Index of the first mask (to extend or split a run)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace masks of the same names already in DIR (refused otherwise)."),
    for_images: Optional[str] = typer.Option(
        None, "--for", metavar="IMAGES", help="One mask per image of this folder, file or quoted glob, at its size, "
        "named <stem>_mask.png so that 'repaint inpaint IMAGES --mask DIR' pairs them; the same masks 'repaint "
        "inpaint --mask KIND --seed N' draws."),
) -> None:
    """Write COUNT masks as PNGs named <kind>_<index:05d>.png (with --for: one per image, <stem>_mask.png); print
    their paths."""
    import numpy as np

    _at_least(1, count=count, size=size, height=height, width=width)
    _at_least(0, seed=seed, start=start)
    params = _resolve_params(kind, preset)
    convention = _check_convention(convention)
    if for_images is not None:
        _only_for(count=count, size=size, height=height, width=width, start=start or None)
        _generate_for(for_images, params, seed, out, convention, overwrite, kind is None and preset is None)
        return
    count = 100 if count is None else count
    h, w = _size(256 if size is None else size, height, width)
    name = params["kind"]
    _check_out_folder(out, [f"{name}_{i:05d}.png" for i in range(start, start + count)], overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        die(f"--out {out}: cannot create the folder ({exc.strerror or exc}); choose another --out")
    if kind is None and preset is None:  # said once nothing else can go wrong
        err.print("no --kind given: drawing thick masks", markup=False)

    fractions = _write_masks(params, h, w, seed, range(start, start + count), out, convention)
    mean = float(np.mean(fractions)) if fractions else 0.0
    err.print(
        f"Wrote {count} {name} mask(s) {w}x{h} (indices {start}..{start + count - 1}, seed {seed}, "
        f"{convention} convention, mean hole {mean:.3f}) to {out}",
        markup=False,
        soft_wrap=True,
    )


def _write_masks(params: dict, h: int, w: int, seed: int, indices: range, out: Path, convention: str) -> list[float]:
    """Masks ``indices`` of the run written to ``out`` (a bar on a terminal for many), each path on stdout as it is
    written; their hole fractions."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..images.masks import MaskError, generate_mask, hole_fraction, to_convention

    name, count = params["kind"], len(indices)
    show_progress = count >= _PROGRESS_FROM and err.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show_progress,
    )
    fractions: list[float] = []
    with progress:
        task = progress.add_task(f"{name} masks", total=count)
        for index in indices:
            try:
                keep = generate_mask(params, h, w, seed, index)
            except MaskError as exc:
                die(str(exc))
            fractions.append(hole_fraction(keep))
            path = out / f"{name}_{index:05d}.png"
            _write_png_or_die(path, to_convention(keep, convention))
            sys.stdout.write(f"{path}\n")
            sys.stdout.flush()
            progress.advance(task)

    return fractions


def _only_for(**values: Optional[int]) -> None:
    """--for sizes each mask as its image and names it after it: the options that say otherwise are refused."""
    given = [f"--{name}" for name, value in values.items() if value is not None]
    if given:
        die(f"{given[0]}: --for draws one mask per image, at the image's size; leave {', '.join(given)} out")


def _generate_for(images: str, params: dict, seed: int, out: Path, convention: str, overwrite: bool,
                  default_kind: bool) -> None:
    """--for IMAGES: a mask per image, at its size, named <stem>_mask.png, drawn from the image's mask key (the
    seed and its stem), so that it is the mask 'repaint inpaint IMAGES --mask KIND --seed SEED' draws."""
    from ..core.keys import ImageKeys
    from ..images.jobs import expand_inputs, missing_inputs
    from ..images.masks import MaskError, hole_fraction, mask_for_image, to_convention

    problems = missing_inputs([images])
    found, _, errors = expand_inputs([images]) if not problems else ([], [], problems)
    if errors or not found:
        die(f"--for {images}: {(errors or ['no images found'])[0]}")
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems:
            die(f"--for {images}: {stems[path.stem]} and {path} have the same stem, so one mask name; "
                f"give them separately")
        stems[path.stem] = path
    names = [f"{stem}_mask.png" for stem in stems]
    _check_out_folder(out, names, overwrite)
    if default_kind:
        err.print("no --kind given: drawing thick masks", markup=False)
    fractions = []
    for (stem, path), name in zip(stems.items(), names):
        w, h = _oriented_size(path)
        try:
            keep = mask_for_image(params, h, w, ImageKeys.of(seed, stem).mask)
        except MaskError as exc:
            die(f"{path}: {exc}")
        fractions.append(hole_fraction(keep))
        _write_png_or_die(out / name, to_convention(keep, convention))
        sys.stdout.write(f"{out / name}\n")
    err.print(f"Wrote {len(names)} {params['kind']} mask(s), one per image of {images} at its size (seed {seed}, "
              f"{convention} convention, mean hole {sum(fractions) / len(fractions):.3f}) to {out}: "
              f"repaint inpaint {images} --mask {out}"
              + (" --mask-convention hole" if convention == "hole" else ""), markup=False, soft_wrap=True)


def _oriented_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as repaint reads it (EXIF orientation applied), from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception as exc:  # Pillow raises many types on broken files
        die(f"{path}: not a readable image ({type(exc).__name__}); remove it or fix it")
    return (h, w) if turned else (w, h)


@masks_app.command("list", cls=PlainCommand)
def list_cmd() -> None:
    """List every mask kind with a one-line description."""
    width = max(len(k) for k in MASK_KINDS)
    for kind, text in MASK_KINDS.items():
        sys.stdout.write(f"{kind:<{width}}  {text}\n")


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Tiles (same shape) in a BGR grid with _SEP-pixel coloured separators and border."""
    import numpy as np

    th, tw = tiles[0].shape
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = np.empty((rows * (th + _SEP) + _SEP, columns * (tw + _SEP) + _SEP, 3), np.uint8)
    sheet[:] = _SEP_BGR
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = _SEP + r * (th + _SEP), _SEP + c * (tw + _SEP)
        sheet[y:y + th, x:x + tw] = tile[:, :, None]
    return sheet


def _label(text: str, height: int, width: int, scale: float) -> np.ndarray:
    """White BGR panel with ``text`` in black, centred."""
    import cv2
    import numpy as np

    panel = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    x = max(4, (width - tw) // 2)
    y = (height + th) // 2
    cv2.putText(panel, text, (x, y), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return panel


def _preview_sheet(kinds: list[str], params_for: dict[str, dict[str, Any]], count: int, h: int, w: int,
                   seed: int, convention: str, labelled: bool) -> np.ndarray:
    import cv2
    import numpy as np

    from ..images.masks import generate_mask, to_convention

    scale = max(0.4, min(h, w) / 256 * 0.8)
    if not labelled:
        kind = kinds[0]
        tiles = [to_convention(generate_mask(params_for[kind], h, w, seed, i), convention) for i in range(count)]
        columns = max(1, math.ceil(math.sqrt(count)))
        grid = _grid(tiles, columns)
        title = _label(f"{kind} ({convention} convention, seed {seed})", max(24, int(40 * scale)), grid.shape[1],
                       scale * 0.9)
        return np.vstack([title, grid])
    # One row per kind, a label panel on the left of each row.
    thickness = max(1, int(round(scale * 2)))
    label_w = max(cv2.getTextSize(k, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for k in kinds) + 24
    rows = []
    for kind in kinds:
        tiles = [to_convention(generate_mask(params_for[kind], h, w, seed, i), convention) for i in range(count)]
        row = _grid(tiles, count)
        rows.append(np.hstack([_label(kind, row.shape[0], label_w, scale), row]))
    sheet = np.vstack([rows[0]] + [r[_SEP:] for r in rows[1:]])  # share separators between rows
    return sheet


@masks_app.command("preview", cls=PlainCommand)
def preview_cmd(
    kind: str = typer.Option("all", "--kind", "-k", metavar="KIND",
                             help=f"Mask kind ({', '.join(MASK_KINDS)}), or 'all' for one labelled row per kind."),
    count: Optional[int] = typer.Option(None, "--count", "-n", metavar="N", show_default="16, or 6 per row for all",
                                        help="Masks per sheet (per row with --kind all)."),
    size: int = typer.Option(256, "--size", "-s", metavar="PX", help="Side of each mask tile (pixels)."),
    height: Optional[int] = typer.Option(None, "--height", metavar="PX", help="Tile height; overrides --size."),
    width: Optional[int] = typer.Option(None, "--width", metavar="PX", help="Tile width; overrides --size."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Run seed (tiles are masks 0..count-1 of that run)."),
    convention: str = typer.Option("keep", "--convention", metavar="keep|hole",
                                   help="keep: white = known pixel; hole: white = hole."),
    preset: Optional[Path] = typer.Option(None, "--preset", metavar="YAML",
                                          help="YAML preset to preview instead of a kind's defaults."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", show_default="masks_preview_<kind>.png",
                                       help="Output PNG."),
) -> None:
    """Write a contact sheet PNG of masks; print its path."""
    from ..images.masks import MaskError, load_preset

    _at_least(1, count=count, size=size, height=height, width=width)
    _at_least(0, seed=seed)
    convention = _check_convention(convention)
    h, w = _size(size, height, width)
    if kind == "all" and preset is None:
        kinds = list(MASK_KINDS)
        params_for = {k: load_preset(k) for k in kinds}
        labelled = True
        n = 6 if count is None else count
    else:
        params = _resolve_params(None if kind == "all" else kind, preset)
        kinds = [params["kind"]]
        params_for = {params["kind"]: params}
        labelled = False
        n = 16 if count is None else count
    name = "all" if labelled else kinds[0]
    path = out if out is not None else Path(f"masks_preview_{name}.png")
    if path.suffix.lower() != ".png":
        die(f"--out must end in .png, got {str(path)!r}")
    try:
        sheet = _preview_sheet(kinds, params_for, n, h, w, seed, convention, labelled)
    except MaskError as exc:
        die(str(exc))
    _write_png_or_die(path, sheet)
    sys.stdout.write(f"{path}\n")
    err.print(
        f"Wrote {name} preview ({n} mask(s) {'per kind' if labelled else ''} {w}x{h}, seed {seed}, "
        f"{convention} convention, sheet {sheet.shape[1]}x{sheet.shape[0]}) to {path}".replace("  ", " "),
        markup=False,
        soft_wrap=True,
    )
