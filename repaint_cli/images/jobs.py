"""Inputs to jobs: files, folders, globs or stdin; masks paired by stem; skips and shards.

Knows nothing of models or tensors. A job is one image with where its mask
comes from, its keys (noise, mask, class: computed here, once) and its output path.

Which files are images and which are masks (decided here, before any model loads):
- the ``--out`` folder is never scanned as input (a rerun must not read its own results back);
- a ``--mask`` file, and every file of a ``--mask`` folder or glob, is a mask, never an input;
  except when the mask source *is* an input source (the same folder, or the same glob): then
  the files named like masks (``<stem>_mask*``, ``.mask``, ``-mask``) are the masks and the
  others the images (LaMa's layout: ``a.png`` beside ``a_mask001.png``);
- an image is never its own mask. An input given by name stops the run (most likely a ``--mask``
  glob the shell expanded: ``--mask mk/*.png`` arrives as ``--mask mk/a.png`` plus inputs
  ``mk/b.png mk/c.png``) when it is the ``--mask`` file; when it lies in the single ``--mask``
  file's folder, sorts after it (as the expansion's names do: the first match became the --mask
  value) and another input does not lie there (a file named elsewhere, a folder, a glob or ``-``):
  if every input is a file named in that folder (``photo.png --mask hole.png``) nothing tells it
  from an expansion, so it is taken as meant; or when it is named like the mask of another input
  image beside it (``b_mask.png`` beside ``b.png``). A name alone (``gas-mask.png``) is no mask.
With ``-r``, outputs mirror sub-folders (``in/sub/a.png`` -> ``OUT/sub/a.png``); such an
image's stem (its noise key and generated-mask key) is its relative name ``sub/a``.
"""
from __future__ import annotations

import bisect
import difflib
import glob as globlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from ..core.keys import ImageKeys

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MASK_NAME = re.compile(r".[_.-]mask", re.IGNORECASE)  # cat_mask001, cat.mask, cat-mask
STDIN_LEFT_OUT = "path(s) read from stdin lie under"
QUOTE_HINT = "quote globs so that the shell does not expand them (--mask 'masks/*.png')"


@dataclass
class Job:
    image: Path
    stem: str  # the image's key: file stem, or 'sub/stem' for images in sub-folders of a -r scan
    output: Path
    mask_file: Optional[Path] = None  # a mask file on disk
    mask_kind: Optional[str] = None  # or a generated mask: a kind name or a preset path
    error: Optional[str] = None  # a problem found while pairing (reported, job not run)
    keys: Optional[ImageKeys] = None  # noise, mask and class keys (core.keys); make_jobs sets them for its seed
    mask_missing: bool = False  # the folder or glob of masks holds none for this image (``error`` says so)

    def __post_init__(self):
        if self.keys is None:
            self.keys = ImageKeys.of(0, self.stem)


@dataclass
class JobList:
    jobs: list[Job] = field(default_factory=list)
    skipped_done: list[Job] = field(default_factory=list)  # outputs already present
    ignored: list[str] = field(default_factory=list)  # one-line notes on inputs that are not images
    errors: list[str] = field(default_factory=list)  # run-wide problems: the run stops before the model loads
    notes: list[str] = field(default_factory=list)  # one-line information (e.g. mask files left out of the inputs)
    all_jobs: list[Job] = field(default_factory=list)  # every image's job over all shards (the run's write plan)
    inputs: list[tuple[Path, str]] = field(default_factory=list)  # (file, what it is): never written over


@dataclass
class Found:
    """An input image: how it was named (explicitly on the command line, or found in a folder, by a glob
    or in a stdin listing) and where."""
    path: Path
    explicit: bool
    rel: str = ""  # its sub-folder below the scanned folder (posix), '' at the top
    source: Optional[str] = None  # the folder or glob argument it was found by


def has_glob(s: str) -> bool:
    """Whether ``s`` holds a glob character (``*``, ``?`` or ``[``)."""
    return any(ch in s for ch in "*?[")


def _real(p) -> str:
    return os.path.realpath(p)


def _inside(path: str, folder: str) -> bool:
    """Both resolved: ``path`` is ``folder`` or below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def is_mask_name(path: Path) -> bool:
    return bool(MASK_NAME.search(Path(path).stem))


def _mask_of_another(path: Path, beside: set) -> Optional[Path]:
    """The input image that ``path`` is named as the mask of (``b_mask001.png`` of ``b.png``, in the same
    folder; ``beside``: the (resolved folder, stem) of every input), or None."""
    folder, stem = _real(path.parent), path.stem
    for m in MASK_NAME.finditer(stem):
        if (folder, stem[:m.start() + 1]) in beside:
            return path.with_name(stem[:m.start() + 1] + path.suffix)
    return None


def _sorts_before(name: str, other: str) -> bool:
    """``name`` before ``other`` in every order a shell may sort a glob's matches in (bytes, ignoring case,
    ignoring case and punctuation as en_US collation does at first): then ``name`` cannot be one of the
    matches that follow ``other`` when the shell expands ``--mask dir/*.png`` into ``--mask other name...``."""
    keys = (lambda t: t, str.casefold, lambda t: re.sub(r"[\W_]", "", t.casefold()))
    return all(k(name) < k(other) for k in keys)


def _glob_root(pattern: str) -> str:
    """The folder a glob starts from: its leading parts without wildcards."""
    parts = []
    for part in Path(pattern).parts:
        if globlib.has_magic(part):
            break
        parts.append(part)
    return str(Path(*parts)) if parts else "."


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _folder_has_images_below(folder: Path) -> bool:
    return any(_is_image(f) for f in folder.rglob("*") if f.parent != folder)


def _sub_folder_note(folder: Path, skipped) -> Optional[str]:
    """Without -r: a warning counting the images in ``folder``'s sub-folders that are left out (not those
    under a skipped folder such as --out), or None."""
    below = sum(1 for f in folder.rglob("*") if f.parent != folder and _is_image(f) and not skipped(f))
    if not below:
        return None
    return f"{folder}: {below} image(s) in its sub-folders are not included; pass -r to include them"


def _stdin_names(stream, null: bool) -> tuple[list[str], Optional[str]]:
    """The paths listed on stdin (one a line; with ``null``, separated by NUL as ``find -print0`` writes them), and
    a one-line problem: NUL characters without ``null`` would make one path of many names."""
    text = stream.read() if hasattr(stream, "read") else "".join(stream)  # a file, or lines (the Python API)
    if null:
        return [n for n in text.split("\0") if n], None
    if "\0" in text:
        return [], ("stdin holds NUL-separated names (find -print0, xargs -0): pass -0 (--null) to read them, or "
                    "list one path a line")
    return [line.strip() for line in text.splitlines() if line.strip()], None


def _scan_stdin(stream, null: bool, skipped, found: list, ignored: list, errors: list) -> None:
    """The images listed on stdin, into ``found``; those under a skipped folder (``find .`` listing --out) are left
    out and said."""
    names, problem = _stdin_names(stream, null)
    if problem:
        errors.append(problem)
    left_out = []
    for name in names:
        q = Path(name)
        if not q.is_file():
            errors.append(f"{q}: no such file (read from stdin); check the list of paths")
        elif skipped(q):
            left_out.append(q)
        else:
            found.append(Found(q, False, source="-"))  # a listing (find ...), not typed names: like a scan
    if left_out:  # said, not dropped silently
        ignored.append(f"{len(left_out)} {STDIN_LEFT_OUT} the --out or --mask folder (first: {left_out[0]}) "
                       f"and are left out: a run never reads its results or masks as inputs")


def _scan(inputs: Iterable[str], stdin, recursive: bool, skip_dirs: list[str],
          null: bool = False) -> tuple[list[Found], list[str], list[str]]:
    """(found images, ignored notes, errors); folders and globs skip anything under ``skip_dirs`` (resolved);
    ``null``: stdin's names are separated by NUL."""
    found, ignored, errors = [], [], []

    def skipped(f: Path, root: str) -> bool:
        """Under a skipped folder that lies below the scanned root ('' = anywhere), not above it."""
        below = [d for d in skip_dirs if not root or (_inside(d, root) and d != root)]
        if not below:  # (resolving every path of a large folder costs seconds)
            return False
        r = _real(f)
        return any(_inside(r, d) for d in below)

    for item in inputs:
        if item == "-":
            _scan_stdin(stdin if stdin is not None else sys.stdin, null, lambda q: skipped(q, ""), found, ignored,
                        errors)
            continue
        p = Path(item)
        if has_glob(item) and not p.exists():
            matches = sorted(globlib.glob(item, recursive=True))
            if not matches:
                errors.append(f"{item}: the pattern matches no file; check the glob")
            root = _real(_glob_root(item))
            for m in matches:
                mp = Path(m)
                if _is_image(mp) and not skipped(mp, root):
                    found.append(Found(mp, False, source=item))
            continue
        if p.is_dir():
            root = _real(p)
            if skip_dirs and root == skip_dirs[0]:
                errors.append(f"{p}: this input folder is the --out folder, so results would be read back as "
                              f"inputs on a rerun; choose another --out")
                continue
            listing = sorted(p.rglob("*") if recursive else p.iterdir())
            listing = [f for f in listing if not skipped(f, root)]
            images = [f for f in listing if _is_image(f)]
            image_set = set(images)  # a set: folders hold thousands of files
            others = [f for f in listing if f not in image_set and f.is_file() and not f.name.startswith(".")]
            for f in others:
                ignored.append(f"{f}: not an image file (extension {f.suffix or 'none'}); ignored")
            if not recursive:
                for f in listing:
                    if f.is_dir() and f.suffix.lower() in IMAGE_EXTS:
                        ignored.append(f"{f}: a folder, not an image; ignored (-r looks inside folders)")
            if not images:
                hint = ("; its sub-folders hold images: pass -r to look inside them"
                        if not recursive and _folder_has_images_below(p) else "")
                errors.append(f"{p}: no images in this folder (looked for {', '.join(sorted(IMAGE_EXTS))}){hint}")
            elif not recursive:
                note = _sub_folder_note(p, lambda f: skipped(f, root))
                if note:
                    ignored.append(note)
            for f in images:
                rel = f.parent.relative_to(p).as_posix()
                found.append(Found(f, False, "" if rel == "." else rel, source=item))
        elif p.is_file():
            found.append(Found(p, True))
        else:
            errors.append(f"{item}: no such file or folder")
    return found, ignored, errors


def missing_inputs(inputs: Iterable[str]) -> list[str]:
    """One line per input that names nothing (no such path, a glob matching no file), in the words of the
    scan; cheap, so the CLI answers such slips before anything heavy is imported."""
    problems = []
    for item in inputs:
        if item == "-" or os.path.exists(item):
            continue
        if not has_glob(item):
            problems.append(f"{item}: no such file or folder")
        elif next(globlib.iglob(item, recursive=True), None) is None:
            problems.append(f"{item}: the pattern matches no file; check the glob")
    return problems


def expand_inputs(inputs: Iterable[str], stdin=None, recursive: bool = False) -> tuple[list[Path], list[str], list[str]]:
    """(image paths sorted and unique, ignored notes, errors) from files, folders, globs and '-'."""
    found, ignored, errors = _scan(inputs, stdin, recursive, [])
    return sorted({f.path for f in found}, key=str), ignored, errors


def index_masks(mask: str, recursive: bool = False) -> Optional[dict[str, Path]]:
    """Mask files of a folder or glob ``--mask`` by key; None for a single file.

    Keys are file stems; with ``recursive`` a folder's sub-folders are indexed too, as
    'sub/stem' (their relative name), so images of a -r scan find their mirrored masks. A glob's
    files are keyed by their name below the glob's root the same way.
    """
    p = Path(mask)
    if p.is_dir():
        files = sorted(f for f in (p.rglob("*") if recursive else p.iterdir())
                       if _is_image(f))
        return {f.relative_to(p).with_suffix("").as_posix(): f for f in files}
    if has_glob(mask) and not p.exists():
        # keyed by the name below the glob's root, as a folder's: 'masks/**/*.png' gives 'x/a' and 'y/a', so that
        # in/x/a.png never takes masks/y/a.png
        root = Path(_glob_root(mask))
        files = [Path(m) for m in sorted(globlib.glob(mask, recursive=True)) if Path(m).is_file()]
        return {_key_below(f, root): f for f in files}
    return None


def _key_below(f: Path, root: Path) -> str:
    try:
        return f.relative_to(root).with_suffix("").as_posix()
    except ValueError:  # a pattern that climbs out of its root ('../m/*.png' resolves elsewhere)
        return f.stem


def mask_for_stem(stem: str, by_stem: dict[str, Path], sorted_keys: Optional[list[str]] = None) -> Optional[Path]:
    """The mask of an image of this stem: LaMa/IOPaint-style ``cat_mask*.png``, else the file named like the image
    (``cat.png``).

    ``sorted_keys``: ``sorted(by_stem)``, computed once for many look-ups (each is then a binary search).
    """
    keys = sorted_keys if sorted_keys is not None else sorted(by_stem)
    # a file named as the mask wins over one named like the image: an --out folder written with --save-mask
    # holds both a.png (the inpainted output) and a_mask.png (its mask)
    return _named_as_mask(stem, by_stem, keys) or by_stem.get(stem)


def _named_as_mask(stem: str, by_stem: dict[str, Path], keys: list[str]) -> Optional[Path]:
    for suffix in ("_mask", ".mask", "-mask"):
        prefix = stem + suffix
        i = bisect.bisect_left(keys, prefix)
        if i < len(keys) and keys[i].startswith(prefix):
            return by_stem[keys[i]]
    return None


def parse_shard(shard: Optional[str]) -> Optional[tuple[int, int]]:
    if not shard:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard {shard}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {shard}: I must be in 0..N-1 (with SLURM arrays starting at 1 use $((ID-1))/N)")
    return i, n


def take_shard(items: list, shard: Optional[tuple[int, int]]) -> list:
    """Round-robin part I of N of a sorted list: disjoint, covering, balanced."""
    if shard is None:
        return items
    i, n = shard
    return items[i::n]


def unknown_mask_message(mask: str, kinds: Iterable[str]) -> str:
    """One line for a --mask that is no file, folder, glob match or kind."""
    close = difflib.get_close_matches(mask, list(kinds), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (f"--mask {mask}: no such mask file, folder or kind; {hint}give a mask file, a folder or glob of masks "
            f"named like the images, or a kind ({', '.join(kinds)}; see 'repaint masks list')")


def _file_id(path) -> Optional[tuple[int, int]]:
    """(device, inode) of an existing file, None otherwise: equal for two names of one file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class MaskSource:
    """Where a run's masks come from, resolved once: a kind, one file, or a folder or glob paired by stem."""

    text: str  # the --mask value
    is_kind: bool
    single: Optional[Path] = None  # one mask file for every image
    by_stem: Optional[dict[str, Path]] = None  # a folder's or glob's masks, by stem
    shared: bool = False  # the mask source is an input source: only files named like masks are masks
    real_of: dict = field(default_factory=dict)  # mask file -> its resolved path
    reals: set = field(default_factory=set)  # every mask file's resolved path
    shadowed: list = field(default_factory=list)  # (file named like an image, the mask file taken instead)
    top_level: list = field(default_factory=list)  # (image in a sub-folder, the top-level mask it took)

    @property
    def sorted_keys(self) -> list[str]:
        return sorted(self.by_stem or {})

    @property
    def mirrors_folders(self) -> bool:
        """The masks lie in sub-folders (mirroring the images'): an image then takes only its mirrored mask."""
        return any("/" in k for k in self.by_stem or {})


def _mask_source(mask: str, input_list: list[str], is_kind: bool, recursive: bool, errors: list[str]) -> MaskSource:
    path = Path(mask)
    is_dir = not is_kind and path.is_dir()
    is_glob = not is_kind and not path.exists() and has_glob(mask)
    src = MaskSource(mask, is_kind, single=None if is_kind or is_dir or is_glob else path)
    src.shared = ((is_dir and any(Path(i).is_dir() and _real(i) == _real(mask) for i in input_list if i != "-"))
                  or (is_glob and mask in input_list))
    if src.single is not None and not src.single.is_file():
        errors.append(f"--mask {mask}: mask file not found; give a mask file, a folder of masks named like the "
                      f"images, a glob, or a mask kind (see 'repaint masks list')")
    if is_dir or is_glob:
        src.by_stem = index_masks(mask, recursive=recursive and is_dir)
        if src.shared:
            src.by_stem = {k: v for k, v in src.by_stem.items() if is_mask_name(v)}
        if not src.by_stem:
            what = ("no file named like a mask (<stem>_mask*.png) in it" if src.shared else
                    "the pattern matches no file" if is_glob else "no mask images in this folder")
            errors.append(f"--mask {mask}: {what}; give the masks' folder or glob; {QUOTE_HINT}")
    src.real_of = {f: _real(f) for f in (src.by_stem or {}).values()}  # resolved once: folders can be large
    src.reals = set(src.real_of.values())
    if src.single is not None and src.single.is_file():
        src.reals.add(_real(src.single))
    return src


def _skip_dirs(out_dir: Path, mask: str, src: MaskSource) -> list[str]:
    """Folders never scanned for inputs: --out, and a mask folder that is not also an input folder."""
    return [_real(out_dir)] + ([_real(mask)] if src.by_stem is not None and Path(mask).is_dir() and not src.shared
                               else [])


def _sort_out_images(found: list[Found], input_list: list[str], src: MaskSource, result: JobList) -> dict[str, Found]:
    """The inputs that are images (by resolved path); masks among them are left out, or stop the run when named
    on the command line (an expanded --mask glob, see the module's docstring)."""
    single = src.single if src.single is not None and src.single.is_file() else None
    mask_folder = _real(single.parent) if single is not None else None
    # `--mask dir/*.png` unquoted: the shell passes dir/b.png... as inputs beside the user's own inputs, which lie
    # elsewhere or are folders, globs or '-'. Inputs that are all files named in the mask's folder
    # (`repaint inpaint photo.png --mask hole.png`) are taken as meant.
    split_around_mask = mask_folder is not None and any(
        item == "-" or not Path(item).is_file() or _real(Path(item).parent) != mask_folder for item in input_list)
    beside = {(_real(f.path.parent), f.path.stem) for f in found}  # (folder, stem) of every input
    images: dict[str, Found] = {}
    expanded: dict[str, list[Path]] = {}  # why -> the inputs that look like an expanded --mask glob
    left_out = 0
    for f in found:
        r = _real(f.path)
        if r in images:
            continue
        if f.explicit and not src.is_kind:
            # named on the command line: an image, unless it is a mask the shell's expansion put there
            is_single_mask = single is not None and r in src.reals
            in_mask_folder = (split_around_mask and _real(f.path.parent) == mask_folder
                              and not _sorts_before(f.path.name, single.name))
            mask_of = _mask_of_another(f.path, beside)
            if is_single_mask or in_mask_folder or mask_of:
                why = ("that is the --mask file" if is_single_mask else
                       f"in the folder of the --mask file {single}" if in_mask_folder else
                       f"named like the mask of another input (first: {mask_of})")
                expanded.setdefault(why, []).append(f.path)
                continue
        elif r in src.reals or (src.shared and is_mask_name(f.path)):
            left_out += 1
            continue
        images[r] = f
    for why, paths in expanded.items():  # one line, however many names the shell's expansion passed
        result.errors.append(_expanded_glob_message(why, paths))
    if left_out:
        result.notes.append(f"{left_out} mask file(s) found among the inputs are used as masks, not inpainted")
    if not images and not result.errors:
        from_stdin = next((n for n in result.ignored if STDIN_LEFT_OUT in n), None)
        result.errors.append(f"no images to inpaint: every input is a mask of --mask {src.text}; put masks in their "
                             f"own folder, or name them <stem>_mask*.png beside their images and pass that folder as "
                             f"--mask" if left_out else f"no images to inpaint: {from_stdin}" if from_stdin else
                             "no images to inpaint: no input path given")
    return images


def _expanded_glob_message(why: str, paths: list[Path]) -> str:
    names = ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    what = "an input" if len(paths) == 1 else f"{len(paths)} inputs"
    return (f"{names}: {what} {why}: was a --mask glob expanded by the shell? {QUOTE_HINT}; or move the mask out "
            f"of the images' folder")


@dataclass
class _Outputs:
    """Where each image's output goes: ``OUT/<rel>/<stem><ext>``, and its resolved path for clash checks."""

    out_dir: Path
    out_real: str
    ext: str

    def of(self, f: Found) -> Path:
        return Path(self.out_dir) / f.rel / f"{f.path.stem}{self.ext}"

    def real(self, f: Found, suffix: Optional[str] = None) -> str:
        # the resolved --out joined with the name: an output that is itself a link is caught by _file_id
        return os.path.normpath(os.path.join(self.out_real, f.rel, f.path.stem + (suffix or self.ext)))


def _outputs_onto_inputs(ordered: list[Found], protected: set, outputs: _Outputs, side_suffixes) -> list[str]:
    """Errors for outputs or side files that would land on an input or mask (over all inputs, before sharding)."""
    protected_ids = {i for i in map(_file_id, protected) if i is not None}  # hard links, case-insensitive names
    errors = []
    for f in ordered:
        out = outputs.of(f)
        for suffix in [outputs.ext, *side_suffixes]:
            target = out.with_name(out.stem + suffix)
            if outputs.real(f, suffix) in protected or _file_id(target) in protected_ids:
                errors.append(f"{target}: an output that would overwrite an input or mask file; "
                              f"choose another --out (inputs are never overwritten)")
                break
    return errors


def _job_for(f: Found, src: MaskSource, outputs: _Outputs, twins: list[Path], image_real: str, seed: int) -> Job:
    """One image's job: its key name, output, keys and mask (or the one-line error that keeps it from running)."""
    img = f.path
    stem = f"{f.rel}/{img.stem}" if f.rel else img.stem
    job = Job(image=img, stem=stem, output=outputs.of(f), keys=ImageKeys.of(seed, stem))
    if len(twins) > 1:
        others = ", ".join(str(t) for t in twins if t != img)
        job.error = (f"{img}: another input has the same name stem ({others}) and would write the same output; "
                     f"rename one or run them separately")
    elif src.is_kind:
        job.mask_kind = src.text
    elif src.single is not None:
        job.mask_file = src.single
    else:
        _pair_mask(job, f, src, image_real)
    return job


def _pair_mask(job: Job, f: Found, src: MaskSource, image_real: str) -> None:
    """The job's mask file from a folder or glob of masks, by its key (``sub/a`` below the scanned folder); an
    image of a -r scan takes the top-level mask of its stem only where the masks have no sub-folders (noted)."""
    keys, img = src.sorted_keys, job.image
    mask = mask_for_stem(job.stem, src.by_stem, keys)
    if mask is None and f.rel and not src.mirrors_folders:
        mask = mask_for_stem(img.stem, src.by_stem, keys)
        if mask is not None:
            src.top_level.append((img, mask))
    if mask is not None and src.real_of.get(mask) == image_real:
        mask = None  # never its own mask
    if mask is not None:
        plain = src.by_stem.get(job.stem if job.stem in src.by_stem else img.stem)
        if plain is not None and plain != mask and src.real_of.get(plain) != image_real:
            src.shadowed.append((plain, mask))
        job.mask_file = mask
        return
    job.mask_missing = True
    mirrored = f" (its sub-folder: the masks mirror the images' folders)" if f.rel and src.mirrors_folders else ""
    job.error = (f"{img}: no mask named {job.stem}.* (or {job.stem}_mask*) in {src.text}{mirrored}; add one or "
                 f"pass --mask KIND to generate masks")


def make_jobs(inputs: Iterable[str], mask: str, out_dir: Path, *, mask_is_kind: bool, overwrite: bool = False,
              shard: Optional[tuple[int, int]] = None, stdin=None, recursive: bool = False,
              out_ext: str = ".png", side_suffixes: Iterable[str] = (), seed: int = 0, null: bool = False) -> JobList:
    """Resolve inputs and masks into jobs, each with its keys for ``seed``; every problem that concerns the whole
    run goes in ``errors``.

    ``side_suffixes``: the other files written per image (``_mask.png``, ``_concat.png``...),
    appended to the output's stem; no output or side file may land on an input or mask file.
    ``null``: names on stdin are separated by NUL (``find -print0``).
    """
    input_list = list(inputs)
    errors: list[str] = []
    src = _mask_source(mask, input_list, mask_is_kind, recursive, errors)
    found, ignored, scan_errors = _scan(input_list, stdin, recursive, _skip_dirs(out_dir, mask, src), null)
    result = JobList(ignored=ignored, errors=scan_errors + errors)
    images = _sort_out_images(found, input_list, src, result)
    if src.by_stem:  # an input is an image, so never a mask
        src.by_stem = {k: v for k, v in src.by_stem.items() if src.real_of[v] not in images}
    real_of = {id(f): r for r, f in images.items()}
    ordered = sorted(images.values(), key=lambda f: str(f.path))
    outputs = _Outputs(out_dir, _real(out_dir), out_ext)
    result.errors += _outputs_onto_inputs(ordered, set(images) | src.reals, outputs, list(side_suffixes))
    if result.errors:
        return result
    by_output: dict[str, list[Path]] = {}
    for f in ordered:  # over all inputs, before sharding: twins in two shards would overwrite each other
        by_output.setdefault(outputs.real(f), []).append(f.path)
    result.all_jobs = [_job_for(f, src, outputs, by_output[outputs.real(f)], real_of[id(f)], seed) for f in ordered]
    result.inputs = ([(f.path, f"the input image {f.path}") for f in ordered] +
                     [(m, f"the mask file {m}") for m in [*(src.by_stem or {}).values(), *([src.single] if src.single else [])]])
    for job in take_shard(result.all_jobs, shard):
        if job.error is None and job.output.exists() and not overwrite:
            result.skipped_done.append(job)
        else:
            result.jobs.append(job)
    _pairing_notes(src, result)
    return result


def _pairing_notes(src: MaskSource, result: JobList) -> None:
    """What pairing by name decided that a user would not guess, said once; and a run where no image found its
    mask stops now (exit 2, before the model loads), not after failing every image."""
    if src.shadowed:
        plain, taken = src.shadowed[0]
        result.notes.append(f"{len(src.shadowed)} image(s) have both a file named like them and one named as their "
                            f"mask in {src.text} (first: {plain.name} and {taken.name}): the one named as a mask is "
                            f"used (an --out folder written with --save-mask holds both)")
    if src.top_level:
        img, mask = src.top_level[0]
        result.notes.append(f"{len(src.top_level)} image(s) in sub-folders take the top-level mask of their stem, "
                            f"as {src.text} has no sub-folders (first: {img} <- {mask})")
    missing = [j for j in result.jobs if j.mask_missing]
    if missing and len(missing) == len(result.jobs) and not result.skipped_done:
        held = sorted(src.by_stem or {})
        shown = ", ".join(k + Path(src.by_stem[k]).suffix for k in held[:2]) + (", ..." if len(held) > 2 else "")
        first = missing[0]
        result.errors.append(
            f"--mask {src.text}: no image has a mask there (it holds {shown}); masks pair by name: {first.image} "
            f"takes {first.stem}.* or {first.stem}_mask*.* there; name the masks after the images "
            f"('repaint masks generate --for IMAGES'), or pass --mask KIND to generate them")


def check_out_dir(out_dir: Path, create: bool = True) -> Optional[str]:
    """A one-line problem with the output folder, or None (creates it when missing; with ``create=False``
    only checks that it could be: its nearest existing parent is a writable folder)."""
    if not create:
        p = Path(os.path.abspath(out_dir))
        while not p.exists() and p != p.parent:
            p = p.parent
        if not p.is_dir():
            return f"{out_dir}: cannot create the output folder ({p} is a file); choose another --out"
        if not os.access(p, os.W_OK | os.X_OK):
            what = "output folder is not writable" if p == Path(os.path.abspath(out_dir)) else \
                f"cannot create the output folder ({p} is not writable)"
            return f"{out_dir}: {what}; fix its permissions or choose another --out"
        return None
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"{out_dir}: cannot create the output folder ({e.strerror}); choose another --out"
    if not os.access(out_dir, os.W_OK | os.X_OK):
        return f"{out_dir}: output folder is not writable; fix its permissions or choose another --out"
    return None
