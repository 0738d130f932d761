"""files.py: the one atomic writer (both files or neither, no temporary left, the umask's mode, never renaming
over a file that is not a regular file) and the write plan that refuses collisions. From issues 22 and 32."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from repaint_cli import files
import numpy as np
from PIL import Image
from repaint_cli.files import atomic_path, is_atomic_temp, write_bytes_atomic
from repaint_cli.images.image_files import write_image_atomic
from repaint_cli.files import InputError

runner = CliRunner()


class Boom(RuntimeError):
    pass


def leftovers(folder: Path) -> list[str]:
    """Every file in ``folder`` (temporaries are hidden: listed too)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# ----------------------------------------------------------------------------- files.atomic_paths


def test_atomic_paths_are_both_or_neither(tmp_path):
    a, b = tmp_path / "m.safetensors", tmp_path / "m.yaml"
    with pytest.raises(Boom):
        with files.atomic_paths(a, b) as (ta, tb):
            ta.write_bytes(b"weights")
            raise Boom("the card's encoder failed")
    assert leftovers(tmp_path) == []
    with files.atomic_paths(a, b) as (ta, tb):
        ta.write_bytes(b"weights")
        tb.write_text("card")
    assert a.read_bytes() == b"weights" and b.read_text() == "card" and leftovers(tmp_path) == ["m.safetensors", "m.yaml"]
    assert stat.S_IMODE(a.stat().st_mode) == umask_mode()


# ----------------------------------------------------------------------------- every writer


# ----------------------------------------------------------------------------- fit.py


# ----------------------------------------------------------------------------- choices.py


# ----------------------------------------------------------------------------- cli/output.py


RNG = np.random.default_rng(1234)


def noise(h, w, c=3):
    return RNG.integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)


def _leftovers(folder):
    return [n for n in os.listdir(folder) if is_atomic_temp(n) or ".tmp" in n]


def test_atomic_path_and_bytes(tmp_path):
    out = tmp_path / "deep" / "a.json"
    write_bytes_atomic(out, b'{"a": 1}')
    assert out.read_bytes() == b'{"a": 1}'

    target = tmp_path / "anim.gif"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.suffix == ".gif"
        assert is_atomic_temp(tmp) and not target.exists()
        Image.new("RGB", (3, 3)).save(tmp)  # format picked from the extension
    assert Image.open(target).format == "GIF"

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.mp4") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert not (tmp_path / "b.mp4").exists() and _leftovers(tmp_path) == []
    assert not is_atomic_temp("photo.png") and not is_atomic_temp(".hidden.png")


def test_written_file_mode_respects_umask(tmp_path):
    out = tmp_path / "perm.png"
    write_image_atomic(out, noise(3, 3))
    old = os.umask(0)
    os.umask(old)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~old)


def test_write_plan_refuses_collisions_inputs_and_non_regular_files(tmp_path):
    from repaint_cli.files import WritePlan

    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    plan = WritePlan()
    plan.read(a, "the input a.png")
    plan.write(tmp_path / "out" / "a.png", "the output of a.png")
    plan.write(tmp_path / "out" / "a_mask.png", "--save-mask of a.png")
    assert plan.problems() == []
    plan.write(tmp_path / "out" / "a_mask.png", "the output of a_mask.png")
    plan.write(a, "--manifest")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plan.write(fifo, "--out")
    problems = plan.problems()
    assert len(problems) == 3, problems
    assert "--save-mask of a.png" in problems[0] and "the output of a_mask.png" in problems[0]
    assert "--manifest" in problems[1] and "the input a.png" in problems[1]
    assert "not a regular file" in problems[2] and "FIFO" in problems[2]
    with pytest.raises(InputError, match="and 2 more"):
        plan.check()


def test_a_file_and_a_folder_of_one_name_collide(tmp_path):
    from repaint_cli.files import WritePlan

    plan = WritePlan()
    plan.write(tmp_path / "frames", "the output of frames")
    plan.write(tmp_path / "frames" / "a", "--frames of a.png", folder=True)
    assert len(plan.problems()) == 1


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/null", "folder"])
def test_the_atomic_writer_never_renames_over_a_non_regular_file(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(os.devnull)
    with pytest.raises(InputError, match="not a regular file|a folder"):
        write_bytes_atomic(target, b"data")
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(target).st_mode)
    elif kind == "folder":
        assert target.is_dir()
    else:
        assert target.is_symlink() and os.readlink(target) == os.devnull
    assert [p.name for p in tmp_path.iterdir()] == ["target"]  # no temporary left behind


def test_the_atomic_writer_still_replaces_regular_files_and_links_to_them(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("old")
    write_bytes_atomic(f, b"new")
    assert f.read_text() == "new"
