"""Writing files atomically, and the one-line error for a bad input or output file.

Every file repaint writes (images, masks, tables, models, checkpoints, manifests) goes
through :func:`atomic_path` (or :func:`atomic_paths` for files that belong together):

* The temporary file lives in the destination folder and is named
  ``.<name>.<8 random chars>.tmp<ext>`` (e.g. ``.cat.png.k3f9a0qz.tmp.png``): hidden,
  recognisable by :func:`is_atomic_temp`, and still ending in the real extension for
  writers (OpenCV, imageio, pandas) that pick the format from it.  It is created with
  mode 0o666 less the umask, like any new file.
* When the writer is done it is fsynced and renamed over the final name with
  ``os.replace`` (then the folder is fsynced); on any exception it is removed and the
  exception goes on, so no temporary and no half-written final file is left behind.
* Missing parent folders are created.  Permission / read-only-filesystem errors become
  :class:`InputError`; other OS errors (disk full...) propagate unchanged, since
  continuing with the next file would not help.
* Only a regular file (or nothing) is ever replaced: a device (``/dev/null``), a FIFO, a
  socket or a link to one (``/dev/stdout``) is refused with :class:`InputError` before any
  temporary is made, and again just before the rename.

A run lists every path it will write in a :class:`WritePlan` before any work, and refuses
two that collide, one that is an input, or one that is not a regular file.

Standard library only: cheap to import anywhere.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["InputError", "WritePlan", "atomic_path", "atomic_paths", "write_bytes_atomic", "is_atomic_temp"]


class InputError(Exception):
    """A problem with one input (or output) file; the message is one line: file, problem, fix."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        message = " ".join(str(message).splitlines())
        super().__init__(message)
        self.path = None if path is None else str(path)


def display_path(path) -> str:
    """The path as shown in messages, kept on one line."""
    return str(path).replace("\r", "\\r").replace("\n", "\\n")


def input_error(path, problem: str, fix: str) -> InputError:
    """'PATH: problem; fix' as an InputError."""
    return InputError(f"{display_path(path)}: {problem}; {fix}", path)


_TEMP_RE = re.compile(r"^\..+\.[0-9a-z]{8}\.tmp(\.[^.]*)?$")
_ALPHABET = string.ascii_lowercase + string.digits
_READONLY_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


def is_atomic_temp(path) -> bool:
    """True for the names of this module's temporary files (to skip or clean them up)."""
    return bool(_TEMP_RE.match(Path(path).name))


def _temp_name(final: Path) -> Path:
    token = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return final.with_name(f".{final.name}.{token}.tmp{final.suffix}")


def _folder_error(folder: Path, e: OSError, option: str) -> InputError:
    return input_error(
        f"{folder}{os.sep}",
        f"cannot write in this folder ({e.strerror or e.__class__.__name__})",
        f"choose a writable {option} folder or fix its permissions",
    )


def _create_temp(final: Path) -> Path:
    """Create an empty, exclusive temp file next to ``final`` (umask-respecting mode)."""
    for _ in range(100):
        tmp = _temp_name(final)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "could not create a unique temporary file", str(final))


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(d: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _make_folder(folder: Path, option: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise input_error(folder, "exists but is not a folder", "remove it or choose another output folder") from None
    except NotADirectoryError:
        raise input_error(folder, "a parent of this output folder is a file", "choose another output folder") from None
    except OSError as e:
        if e.errno in _READONLY_ERRNOS:
            raise _folder_error(folder, e, option) from None
        raise


def _new_temp(final: Path, option: str) -> Path:
    _make_folder(final.parent, option)
    try:
        return _create_temp(final)
    except OSError as e:
        if e.errno in _READONLY_ERRNOS:
            raise _folder_error(final.parent, e, option) from None
        raise


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def not_regular(path, folder: bool = False) -> str | None:
    """What ``path`` is when it exists and is not a regular file (a folder where ``folder``), followed through
    links: 'a FIFO', 'a character device'...; None when it is absent or of the kind expected."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:  # a dangling loop of links, a name too long: say what it is
        return f"unreadable ({e.strerror})"
    if stat.S_ISDIR(mode):
        return None if folder else "a folder"
    if folder:
        return "a file"
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _refuse_non_regular(final: Path) -> None:
    what = not_regular(final)
    if what == "a folder":
        raise input_error(final, "a folder with this name exists", "remove it or choose another output name")
    if what is not None:
        raise input_error(final, f"not a regular file ({what}); repaint replaces only regular files",
                          "choose a file name")


def _replace(tmp: Path, final: Path, option: str) -> None:
    _refuse_non_regular(final)  # checked before the temporary was made; again here, where it counts
    try:
        os.replace(tmp, final)
    except IsADirectoryError:
        raise input_error(final, "a folder with this name exists", "remove it or choose another output name") from None
    except OSError as e:
        if e.errno in _READONLY_ERRNOS:
            raise input_error(final, f"cannot replace this file ({e.strerror})",
                              f"fix its permissions or choose another {option} folder") from None
        raise


@contextlib.contextmanager
def atomic_paths(*paths, option: str = "--out") -> Iterator[list[Path]]:
    """Yield one temporary path next to each of ``paths``.  On success all are fsynced, then
    renamed to their final names (so files that belong together are either all written or,
    on an error while writing, none is); on any exception every temp file is removed and the
    exception re-raised.

    The temp files already exist (empty) when yielded; writers may overwrite them.
    ``option`` names the output in error messages as the caller speaks: a command gives its flag
    (``--out``), a library its parameter (``save_model``).
    """
    finals = [Path(p) for p in paths]
    temps: list[Path] = []
    for final in finals:
        _refuse_non_regular(final)
    try:
        for final in finals:
            temps.append(_new_temp(final, option))
        yield list(temps)
        for tmp in temps:
            _fsync_path(tmp)
        for tmp, final in zip(temps, finals):
            _replace(tmp, final, option)
        for folder in dict.fromkeys(final.parent for final in finals):
            _fsync_dir(folder)
    except BaseException:
        for tmp in temps:  # a temp already renamed is gone: nothing to remove
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path, option: str = "--out") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed to
    ``path``, on any exception it is removed and the exception re-raised (see :func:`atomic_paths`)."""
    with atomic_paths(path, option=option) as (tmp,):
        yield tmp


def write_bytes_atomic(path, data: bytes, option: str = "--out") -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(path, option) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


@dataclass
class PlannedWrite:
    path: Path
    what: str  # who writes it, in the user's words: 'the output of photos/a.png', '--save-mask of photos/a.png'
    folder: bool = False  # a folder the run writes files into (frames/<stem>/)


def _key(path) -> str:
    """One name per place on disk: resolved (links, '..') and case-folded where the file system folds case."""
    return os.path.normcase(os.path.realpath(path))


def _file_id(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class WritePlan:
    """Every path a run will write, and every input it reads, listed before any work (:meth:`check`).

    Refused, each in one line naming the path, who writes it and the fix: two writes to one place (also a file
    where another write needs a folder), a write onto an input (by resolved name or, for hard links and
    case-insensitive names, by file identity), and a write onto something that is not a regular file (a device,
    a FIFO, a socket, a folder; a link is followed). A file appended to (a manifest) is planned like any other.
    """

    def __init__(self):
        self.entries: list[PlannedWrite] = []
        self.inputs: list[tuple[Path, str]] = []

    def write(self, path, what: str, *, folder: bool = False) -> None:
        self.entries.append(PlannedWrite(Path(path), what, folder))

    def read(self, path, what: str) -> None:
        self.inputs.append((Path(path), what))

    @property
    def paths(self) -> list[Path]:
        return [e.path for e in self.entries]

    def problems(self) -> list[str]:
        """One line per problem, in the order the writes were planned."""
        inputs_by_key = {_key(p): what for p, what in self.inputs}
        inputs_by_id = {i: what for i, what in ((_file_id(p), what) for p, what in self.inputs) if i is not None}
        problems: list[str] = []
        seen: dict[str, PlannedWrite] = {}
        files: dict[str, PlannedWrite] = {}
        for e in self.entries:
            k = _key(e.path)
            first = seen.get(k)
            if first is not None:
                if first.folder and e.folder:
                    continue  # two writers of one folder (frames/): fine, the files in it are planned apart
                problems.append(f"{display_path(e.path)}: {first.what} and {e.what} would both be written here, one "
                                f"over the other; rename one input, leave out the option, or choose another path")
                continue
            seen[k] = e
            if not e.folder:
                files[k] = e
            problems += self._alone(e, k, inputs_by_key, inputs_by_id)
        for e in self.entries:  # a file where another write needs a folder (OUT/frames the output of frames.png)
            for parent in Path(_key(e.path)).parents:
                clash = files.get(str(parent))
                if clash is not None:
                    problems.append(f"{display_path(clash.path)}: {clash.what} is a file where {e.what} needs a "
                                    f"folder; rename one input, leave out the option, or choose another path")
                    break
        return problems

    @staticmethod
    def _alone(e: PlannedWrite, k: str, inputs_by_key: dict, inputs_by_id: dict) -> list[str]:
        """The problems of one planned write on its own: onto an input, onto something not a regular file."""
        victim = inputs_by_key.get(k) or inputs_by_id.get(_file_id(e.path))
        if victim is not None:
            return [f"{display_path(e.path)}: {e.what} would overwrite {victim} (inputs are never overwritten); "
                    f"choose another path"]
        what = not_regular(e.path, e.folder)
        if what is not None:
            return [f"{display_path(e.path)}: {what}, not a {'folder' if e.folder else 'regular file'}, where "
                    f"{e.what} would be written; repaint writes only regular files: choose another path"]
        return []

    def check(self) -> None:
        """Raise InputError with the first problem (and how many more) when there is any."""
        problems = self.problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InputError(problems[0] + more)


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_model(path: Path) -> str:
    """sha256 of a checkpoint file; for a model folder (diffusers), of its files' names and contents."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(path)).encode() + b"\0" + bytes.fromhex(sha256_file(f)))
    return h.hexdigest()
